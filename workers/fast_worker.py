"""A host's fast lane: a second Celery worker, beside the build worker, on the host's fast queue.

``dockyard worker`` (the build worker), once ready and reconciled with its
engine (``dockyard.workers.heartbeat``), starts it as a child process
(``dockyard worker --lane fast``: a threads pool of ``fast_concurrency``,
consuming only ``<host queue>.fast``), restarts it if it exits, and stops it
when it stops itself. So everything that starts a build worker (``dockyard
up``, the launcher, compose, the tests' fixtures) runs the fast lane too, in
the same process group: killing a host's worker kills its fast lane with it.
On Linux the child also gets SIGTERM if the build worker dies without
stopping it.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading
import time

from dockyard.config.settings import Settings

logger = logging.getLogger("dockyard.fast_lane")
PR_SET_PDEATHSIG = 1
RESTART_PAUSE_S = 1.0  # between a fast worker's exit and its restart
STOP_TIMEOUT_S = 30.0  # a warm shutdown before SIGKILL


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class FastLane:
    """The fast worker child process of this build worker, kept running until ``stop``."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> FastLane:
        self._spawn()
        threading.Thread(target=self._keep_running, name="fast-lane", daemon=True).start()
        return self

    def _spawn(self) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def serving(self) -> bool:
        """Whether the fast worker process runs now."""
        return self.process is not None and self.process.poll() is None

    def _keep_running(self) -> None:
        while not self._stopping.wait(RESTART_PAUSE_S):
            if self.process is not None and self.process.poll() is not None and not self._stopping.is_set():
                logger.warning("the fast lane worker exited (%s): starting it again", self.process.returncode)
                self._spawn()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """A warm shutdown of the fast worker (SIGTERM), SIGKILL after ``timeout_s``."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        deadline = time.monotonic() + timeout_s
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
            process.wait()


_current: list[FastLane] = []
_loglevel = ["INFO"]


def configure(loglevel: str) -> None:
    """The log level the fast worker is started with (the build worker's)."""
    _loglevel[0] = loglevel


def child_argv(loglevel: str) -> list[str]:
    """The command line of this host's fast worker (settings come from the environment it inherits)."""
    return [sys.executable, "-m", "dockyard.workers.cli", "worker", "--lane", "fast", "--loglevel", loglevel]


def start(settings: Settings, loglevel: str | None = None) -> FastLane | None:
    """Start this host's fast worker beside the build worker; None when the fast lane is off (0 threads)."""
    if settings.fast_concurrency == 0 or serving():
        return None
    lane = FastLane(child_argv(loglevel or _loglevel[0])).start()
    _current[:] = [lane]
    return lane


def serving() -> bool:
    """Whether this build worker's fast lane runs (the host record advertises its queue then)."""
    return bool(_current) and _current[0].serving()


def stop() -> None:
    """Stop the fast worker (a warm shutdown); idempotent."""
    for lane in _current:
        lane.stop()
