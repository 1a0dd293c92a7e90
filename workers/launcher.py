"""Launching ``dockyard worker`` processes: start one, wait for its ping, kill or stop it.

The one place that starts a worker as a child process; the tests' fixtures,
the benchmarks and ``dockyard up`` (``dockyard.workers.farm``) all go through it. A
worker runs ``python -m dockyard.workers.cli worker`` in its own session (so its pool
processes can be killed with it as one process group), with
``DOCKYARD_HOST_ID`` and, when given, ``DOCKYARD_DOCKER_HOST`` set.

Failures are plain exceptions carrying the tail of the worker's log:
``WorkerExited`` (a ``RuntimeError``) when the process ended, ``TimeoutError``
when it did not answer in time. Callers in tests turn them into test failures.
"""

from __future__ import annotations

import contextlib

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

LOG_TAIL_LINES = 40  # lines of a worker's log quoted in an error
PING_TIMEOUT_S = 1.0  # one round of Celery's ping
STOP_TIMEOUT_S = 30.0  # a warm shutdown before SIGKILL


class WorkerExited(RuntimeError):
    """A worker process ended while it was expected to run."""


class WorkerProcess:
    """A real ``dockyard worker`` process for one host and its engine."""

    def __init__(
        self,
        host_id: str,
        docker_host: str | None,
        log_path: Path,
        extra_env: Mapping[str, str] | None = None,
        concurrency: int | None = None,
        *,
        cwd: Path | None = None,
    ) -> None:
        self.host_id = host_id
        self.docker_host = docker_host
        self.log_path = log_path
        self.extra_env = dict(extra_env or {})
        self.concurrency = concurrency
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        """The command line of the worker."""
        argv = [sys.executable, "-m", "dockyard.workers.cli", "worker"]
        if self.concurrency is not None:
            argv += ["--concurrency", str(self.concurrency)]
        return argv

    def environment(self) -> dict[str, str]:
        """This process's environment with the worker's host id, engine and extra settings."""
        env = {**os.environ, "DOCKYARD_HOST_ID": self.host_id}
        if self.docker_host:
            env["DOCKYARD_DOCKER_HOST"] = self.docker_host
        return {**env, **self.extra_env}

    def start(self) -> WorkerProcess:
        """Start the worker in a new session, its output appended to ``log_path``."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(), cwd=self.cwd, env=self.environment(),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """The worker's main process id (also its process group id)."""
        if self.process is None:
            raise RuntimeError(f"worker {self.host_id} was not started")
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check(self) -> None:
        """Raise ``WorkerExited`` unless the worker is running."""
        if not self.running():
            code = None if self.process is None else self.process.returncode
            raise WorkerExited(f"worker {self.host_id} exited ({code}):\n{self.log_tail()}")

    def wait_ready(self, app: Any, timeout_s: float = 60.0, *, ready: Callable[[str], bool] | None = None) -> None:
        """Until the worker answers a ping (and ``ready(host_id)``, if given, is true)."""
        wait_all_ready(app, [self], timeout_s=timeout_s, ready=ready)

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once (its whole process group)."""
        os.killpg(self.pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a warm shutdown); SIGKILL the process group if it takes longer than ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        """Everything the worker wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(no log)"



@contextlib.contextmanager
def running(workers: Sequence[WorkerProcess], app: Any) -> Iterator[list[WorkerProcess]]:
    """Start every worker, wait until each answers a ping, yield them; stop them all on the way out."""
    try:
        for each in workers:
            each.start()
        for each in workers:
            each.wait_ready(app)
        yield list(workers)
    finally:
        for each in workers:
            each.stop()


def answering_hosts(app: Any, timeout_s: float = PING_TIMEOUT_S) -> set[str]:
    """Host ids of the workers answering one round of Celery's ping."""
    replies = app.control.ping(timeout=timeout_s) or []
    return {str(name).split("@", 1)[0] for reply in replies for name in reply}


def wait_for_hosts(
    app: Any,
    host_ids: Iterable[str],
    *,
    timeout_s: float = 60.0,
    workers: Sequence[WorkerProcess] = (),
    ready: Callable[[str], bool] | None = None,
) -> None:
    """Until every host answers a ping (and ``ready(host_id)``); ``workers`` must keep running meanwhile."""
    pending = set(host_ids)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for worker in workers:
            worker.check()
        answered = answering_hosts(app)
        pending -= {host for host in pending & answered if ready is None or ready(host)}
    if pending:
        tails = "".join(f"\n--- {w.host_id}\n{w.log_tail()}" for w in workers if w.host_id in pending)
        raise TimeoutError(f"workers {sorted(pending)} did not answer within {timeout_s:g} s{tails}")


def wait_all_ready(
    app: Any, workers: Sequence[WorkerProcess], *, timeout_s: float = 60.0, ready: Callable[[str], bool] | None = None
) -> None:
    """Until every one of ``workers`` answers a ping; ``WorkerExited`` if one ends first."""
    wait_for_hosts(app, [w.host_id for w in workers], timeout_s=timeout_s, workers=workers, ready=ready)


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group ``pid`` leads; SIGKILL it if ``pid`` outlives ``timeout_s``.

    For a worker this process did not start (``dockyard down`` reads its pid from a file).
    """
    if not alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
