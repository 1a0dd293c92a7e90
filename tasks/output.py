"""Where build and push output goes: a sink of text, by default the reference's stdout."""

from __future__ import annotations

import sys
from collections.abc import Callable

OutputSink = Callable[[str], None]


def write_stdout(text: str) -> None:
    """Default output sink: the reference writes build output to stdout."""
    sys.stdout.write(text)
    sys.stdout.flush()
