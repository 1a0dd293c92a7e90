"""Live build output: a worker appends lines to a Redis stream per build key; callers read it.

Every caller waiting on a key (the one whose task builds it and those that
joined it) reads the same stream ``out:<key>``. Streams are capped in length
and expire an hour after their last line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.teams.keys import team_key
from dockyard.tasks.output import OutputSink

STREAM_MAX_LINES = 5000  # older lines of one build's live output are trimmed
STREAM_TTL_S = 3600  # a build's output stream expires this long after its last line
PROGRESS_EVERY_S = 1.0  # a running task's PROGRESS state is updated at most this often




def stream_key(settings: Settings, build_key: str) -> str:
    """The live output of a build key, in the team's own namespace (another team joining sees none of it)."""
    return team_key(settings, "out", build_key)


class StreamOutput:
    """Output sink that appends whole lines to a build's stream."""

    def __init__(self, connection: redis.Redis, settings: Settings, build_key: str) -> None:
        self.connection = connection
        self.name = stream_key(settings, build_key)
        self._partial = ""

    def __call__(self, text: str) -> None:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        if not lines:
            return
        pipe = self.connection.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(self.name, {"line": line}, maxlen=STREAM_MAX_LINES, approximate=True)
        pipe.expire(self.name, STREAM_TTL_S)
        try:
            pipe.execute()
        except redis.RedisError:
            pass  # live output is best effort: a Redis blip must not fail the build


class ProgressState:
    """Output sink that sets the task's state to PROGRESS (throttled) with its line count."""

    def __init__(self, update_state: Callable[..., Any], host: str) -> None:
        self.update_state = update_state
        self.host = host
        self.lines = 0
        self._last = time.monotonic()  # STARTED stays visible for the first interval

    def __call__(self, text: str) -> None:
        self.lines += text.count("\n")
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            try:
                self.update_state(state="PROGRESS", meta={"host": self.host, "lines": self.lines})
            except Exception:  # noqa: BLE001 - progress is best effort, the build goes on
                pass


def tee(*sinks: OutputSink) -> OutputSink:
    """One sink that writes to each of ``sinks``."""

    def write(text: str) -> None:
        for sink in sinks:
            sink(text)

    return write


class StreamReader:
    """Reads a build's stream from where it stood when the reader was made."""

    def __init__(self, connection: redis.Redis, settings: Settings, build_key: str) -> None:
        self.connection = connection
        self.name = stream_key(settings, build_key)
        last = connection.xrevrange(self.name, count=1)
        self.last_id: Any = last[0][0] if last else "0-0"

    def read(self, *, block_s: float) -> list[str]:
        """New lines, waiting up to ``block_s`` for the first one."""
        answer: Any = self.connection.xread({self.name: self.last_id}, block=max(1, int(block_s * 1000)), count=500)
        return [line for _stream, entries in answer or [] for line in self.take(entries)]

    def take(self, entries: list[tuple[Any, Any]]) -> list[str]:
        """The lines of entries read from this stream elsewhere (by a ``dockyard.tasks.cache.notify.Waiter``); moves on past them."""
        lines: list[str] = []
        for entry_id, fields in entries:
            self.last_id = entry_id
            raw = fields.get(b"line", b"")
            lines.append(raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))
        return lines
