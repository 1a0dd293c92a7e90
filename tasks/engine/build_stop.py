"""Stopping a build while it runs on the engine, from another thread: the classic builder's stream shut, buildx interrupted.

The classic builder (docker-py) streams the build's output over the HTTP
response of ``POST /build``: when that connection closes, the daemon cancels
the build (it kills the step's container, which ``forcerm`` removes).
``captured_response`` keeps that response as docker-py opens it, and
``shut_stream`` shuts its socket, which also wakes the thread blocked reading it.

buildx runs as a ``docker buildx build`` process (python-on-whales), with the
docker CLI's plugin beneath it: ``interrupt_processes`` sends SIGINT (as
Ctrl-C would) to that process tree, found by its private config directory
on its command line, so buildx cancels the solve on the engine's BuildKit;
what is still alive after ``INTERRUPT_GRACE_S`` is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

INTERRUPT_GRACE_S = 2.0  # after SIGINT, how long buildx has to cancel and exit before it is killed

logger = logging.getLogger("dockyard.engine")


class BuildStop:
    """The stop of one build: ``stop`` from any thread; the backend ``attach``es what stops it once it runs."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._lock = threading.Lock()
        self._action: Callable[[], None] | None = None

    def attach(self, action: Callable[[], None]) -> None:
        """What stops the running build; run at once if a stop was already asked for."""
        with self._lock:
            self._action = action
            now = self.requested.is_set()
        if now:
            action()

    def detach(self) -> None:
        with self._lock:
            self._action = None

    def stop(self) -> None:
        """Stop the build (once it runs on the engine: at once if it does)."""
        with self._lock:
            self.requested.set()
            action = self._action
        if action is not None:
            action()


class _Captured:
    def __init__(self) -> None:
        self.response: Any = None


@contextlib.contextmanager
def captured_response(api: Any, path_suffix: str = "/build") -> Iterator[_Captured]:
    """The response of the request to ``path_suffix`` this thread sends through ``api`` (docker-py's
    ``APIClient``, a requests session) inside the block, kept by a response hook of this thread only."""
    captured = _Captured()
    hooks = getattr(api, "hooks", None)
    if not isinstance(hooks, dict):  # not a requests session (a test's fake engine)
        yield captured
        return
    thread = threading.get_ident()

    def keep(response: Any, *args: Any, **kwargs: Any) -> Any:
        path = str(getattr(getattr(response, "request", None), "path_url", "")).split("?", 1)[0]
        if threading.get_ident() == thread and path.endswith(path_suffix):
            captured.response = response
        return response

    listeners = hooks.setdefault("response", [])
    listeners.append(keep)
    try:
        yield captured
    finally:
        with contextlib.suppress(ValueError):
            listeners.remove(keep)


def shut_stream(response: Any) -> None:
    """Shut the socket a streamed response reads from (the engine sees the client go), then close it."""
    candidates = [
        getattr(getattr(response, "raw", None), "_connection", None),
        getattr(getattr(getattr(getattr(response, "raw", None), "_fp", None), "fp", None), "raw", None),
    ]
    for each in candidates:
        sock = getattr(each, "sock", None) or getattr(each, "_sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            break
    with contextlib.suppress(Exception):
        response.close()


def _children() -> dict[int, list[int]]:
    """Every process's children, from ``/proc`` (Linux)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_of(marker: str, *, root: int | None = None) -> list[int]:
    """The descendants of ``root`` (this process) whose command line holds ``marker``, and all beneath them."""
    tree = _children()
    found: list[int] = []
    pending = list(tree.get(root or os.getpid(), []))
    while pending:
        pid = pending.pop()
        if marker in _command_line(pid):
            beneath = [pid]
            while beneath:
                each = beneath.pop()
                found.append(each)
                beneath.extend(tree.get(each, []))
        else:
            pending.extend(tree.get(pid, []))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def interrupt_processes(marker: str, *, grace_s: float = INTERRUPT_GRACE_S) -> list[int]:
    """SIGINT to the processes of ``processes_of(marker)`` (deepest first), SIGKILL to those still alive
    after ``grace_s``; the pids signalled."""
    pids = list(reversed(processes_of(marker)))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            logger.warning("buildx process %s did not stop on SIGINT; killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return pids
