"""Build steps' cgroups (v1, cgroupfs): a cgroup parent per classic build, and limits written into BuildKit's step cgroups.

What each backend enforces, and how (checked on Docker 20.10 with cgroup v1):

- Classic builder (docker-py): the engine's build parameters ``memory`` and
  ``memswap`` (no swap) and ``cpuperiod``/``cpuquota`` apply to each step's
  container; the pids limit has no build parameter, so the worker makes a
  cgroup for the build under ``<root>/pids/dockyard/`` with ``pids.max`` and
  passes it as the build's ``cgroupparent`` (every step container is its
  child). docker-py knows none of ``cgroupparent``, ``cpuperiod`` and
  ``cpuquota``: ``classic_parameters`` adds them to this thread's ``/build``
  request.
- buildx (the engine's own BuildKit, docker driver): ``--cgroup-parent`` and
  ``--ulimit`` are ignored by that BuildKit, and it takes no memory or CPU
  option. Each step runs in a cgroup of its own under
  ``<root>/<controller>/docker/buildkit/<id>``; while a build runs, a thread
  watches those directories (inotify) and writes the limits into each new
  one before its process starts (runc makes the cgroup, then starts the
  step). Several builds on one engine share that directory: a step gets the
  largest of the limits of the builds watching at once (never more than the
  farm's), so a request's smaller limits hold on buildx only while no other
  buildx build runs on the engine.

Both need the worker on its engine's machine, allowed to write the cgroup
tree (root); with ``build_cgroup_root`` empty, or no v1 tree there, the
classic builder keeps memory and CPU limits only, and buildx none.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import select
import signal
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dockyard.tasks.request.spec import BuildLimits

logger = logging.getLogger(__name__)

CFS_PERIOD_US = 100_000  # the CFS period of a step's CPU quota (the kernel's default)
BUILD_PARENT = "dockyard"  # under <root>/<controller>/: the cgroup parents of classic builds
BUILDKIT_STEPS = "docker/buildkit"  # under <root>/<controller>/: where the engine's BuildKit makes its steps' cgroups
UNLIMITED_FROM = 2**62  # a memory limit at or above this is the kernel's "no limit"
WATCH_POLL_S = 0.2  # the watcher looks at its stop flag this often
REMOVE_ATTEMPTS = 20  # a build parent's directory is removed once the engine removed its last step (retried this often)
IN_CREATE = 0x100
IN_MOVED_TO = 0x80  # a directory moved in (a tree on a plain filesystem, as the unit tests make one)
IN_ONLYDIR = 0x01000000

_query: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("dockyard_build_query", default=None)


def classic_query(limits: BuildLimits, parent: str | None) -> dict[str, str]:
    """The engine's build parameters that limit each classic-builder step."""
    query: dict[str, str] = {}
    if limits.memory_bytes:
        query["memory"] = query["memswap"] = str(limits.memory_bytes)  # memswap = memory: no swap on top
    if limits.cpus:
        query["cpuperiod"], query["cpuquota"] = str(CFS_PERIOD_US), str(max(1000, int(limits.cpus * CFS_PERIOD_US)))
    if parent:
        query["cgroupparent"] = parent
    return query


def merged_query(params: Mapping[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    """A ``/build`` request's parameters with ``query``: the smaller memory where the caller gave one."""
    merged = dict(params)
    for name, value in query.items():
        given = merged.get(name)
        if name in ("memory", "memswap") and isinstance(given, int) and 0 < given < int(value):
            continue  # the caller's container_limits asked for less
        merged[name] = value
    return merged


def _install(api: Any) -> bool:
    """Wrap ``api._post`` (docker-py's ``APIClient``) once so a ``/build`` request carries this thread's query."""
    if getattr(api, "_dockyard_build_query", False):
        return True
    original = getattr(api, "_post", None)
    if original is None:
        return False  # not docker-py's client (a test's fake engine)

    def _post(url: str, *args: Any, **kwargs: Any) -> Any:
        query = _query.get()
        if query and str(url).split("?", 1)[0].endswith("/build"):
            kwargs["params"] = merged_query(kwargs.get("params") or {}, query)
        return original(url, *args, **kwargs)

    api._post = _post
    api._dockyard_build_query = True
    return True


@contextlib.contextmanager
def classic_parameters(api: Any, query: Mapping[str, str]) -> Iterator[None]:
    """Inside the block, this thread's classic builds through ``api`` carry ``query`` (see ``classic_query``)."""
    _install(api)
    token = _query.set(dict(query))
    try:
        yield
    finally:
        _query.reset(token)


def current_query() -> Mapping[str, str] | None:
    """The query this thread's builds carry now (for fakes of the engine)."""
    return _query.get()


def _tree(root: str, controller: str) -> Path | None:
    path = Path(root) / controller if root else None
    return path if path is not None and (path / "cgroup.procs").exists() and os.access(path, os.W_OK) else None


@contextlib.contextmanager
def build_parent(root: str, limits: BuildLimits, *, stale_after_s: float) -> Iterator[str | None]:
    """A cgroup of this build under ``<root>/pids/dockyard/`` with its pids limit; yield its name for the
    engine's ``cgroupparent`` (None when there is no writable v1 pids tree). Removed after the build;
    those of builds whose process was killed are removed by a later build once ``stale_after_s`` old."""
    pids = _tree(root, "pids")
    if pids is None:
        yield None
        return
    sweep_parents(pids / BUILD_PARENT, stale_after_s)
    name = f"{BUILD_PARENT}/build-{uuid.uuid4().hex[:16]}"
    directory = pids / name
    try:
        directory.mkdir(parents=True)
        (directory / "pids.max").write_text(str(limits.pids) if limits.pids else "max")
    except OSError as exc:
        logger.warning("no pids limit for this build: its cgroup %s could not be made: %s", directory, exc)
        _remove(directory)
        yield None
        return
    try:
        yield "/" + name
    finally:
        _remove(directory)


def sweep_parents(directory: Path, stale_after_s: float) -> list[Path]:
    """Remove the build cgroups under ``directory`` older than ``stale_after_s`` (their build's process was
    killed before it removed them; a live build's is younger, or busy with its steps and not removed)."""
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        try:
            stale = entry.name.startswith("build-") and entry.is_dir() and now - entry.stat().st_mtime > stale_after_s
            if stale:
                entry.rmdir()
                removed.append(entry)
        except OSError:
            continue  # still busy, or gone meanwhile
    return removed


def _remove(directory: Path) -> None:
    """Remove a build's cgroup (the engine removes its step cgroups first; retried a little while it does)."""
    for _attempt in range(REMOVE_ATTEMPTS):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                break
            time.sleep(0.05)
    logger.warning("the build cgroup %s could not be removed yet (its steps are still there)", directory)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _larger(current: str | None, wanted: int, unlimited: int | None) -> bool:
    """Write ``wanted`` over ``current``? Yes over the kernel's "no limit" and over a smaller limit (several
    builds' watchers: the largest wins, so no build's step gets another's smaller limit)."""
    if current is None:
        return True
    if current in ("max", "-1"):
        return True
    try:
        value = int(current)
    except ValueError:
        return True
    return (unlimited is not None and value >= unlimited) or value < wanted


def limit_step(controller: str, step: Path, limits: BuildLimits) -> None:
    """Write ``limits`` into one BuildKit step's cgroup of ``controller`` (under a lock on it, largest wins)."""
    try:
        fd = os.open(step, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # the step ended already
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if controller == "memory" and limits.memory_bytes:
            _limit_memory(step, limits.memory_bytes)
        elif controller == "pids" and limits.pids:
            if _larger(_read(step / "pids.max"), limits.pids, None):
                _write(step / "pids.max", str(limits.pids))
        elif controller == "cpu" and limits.cpus:
            quota = max(1000, int(limits.cpus * CFS_PERIOD_US))
            if _larger(_read(step / "cpu.cfs_quota_us"), quota, None):
                _write(step / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                _write(step / "cpu.cfs_quota_us", str(quota))
    finally:
        os.close(fd)


def _limit_memory(step: Path, memory: int) -> None:
    if not _larger(_read(step / "memory.limit_in_bytes"), memory, UNLIMITED_FROM):
        return
    swap = step / "memory.memsw.limit_in_bytes"
    try:
        _write(step / "memory.limit_in_bytes", str(memory))
    except OSError as exc:
        if exc.errno == errno.EBUSY:  # the step already uses more (the watcher was late): it is killed, as the OOM killer would
            _kill(step)
            return
        raise
    if swap.exists():
        _write(swap, str(memory))  # no swap on top (memsw >= memory: written after it)


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except FileNotFoundError:
        pass  # the step ended meanwhile


def _kill(step: Path) -> None:
    for line in (_read(step / "cgroup.procs") or "").split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line), signal.SIGKILL)


class _Inotify:
    """IN_CREATE events of directories (libc's inotify through ctypes)."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.watches: dict[int, tuple[str, Path]] = {}

    def watch(self, controller: str, directory: Path) -> None:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_CREATE | IN_MOVED_TO | IN_ONLYDIR)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")
        self.watches[wd] = (controller, directory)

    def created(self, timeout_s: float) -> list[tuple[str, Path]]:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        found, offset = [], 0
        while offset + 16 <= len(data):
            wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16:offset + 16 + length].rstrip(b"\0")
            offset += 16 + length
            if wd in self.watches and name:
                controller, directory = self.watches[wd]
                found.append((controller, directory / os.fsdecode(name)))
        return found

    def close(self) -> None:
        os.close(self.fd)


@contextlib.contextmanager
def buildkit_steps(root: str, limits: BuildLimits) -> Iterator[bool]:
    """While the block runs, every BuildKit step cgroup made under ``<root>/<controller>/docker/buildkit``
    gets ``limits``; yield whether the watch runs (False: no writable v1 tree under ``root``)."""
    trees = {controller: _tree(root, controller) for controller in ("memory", "pids", "cpu")}
    if not root or any(tree is None for tree in trees.values()):
        yield False
        return
    inotify = _Inotify()
    try:
        for controller, tree in trees.items():
            assert tree is not None
            directory = tree / BUILDKIT_STEPS
            directory.mkdir(parents=True, exist_ok=True)  # the engine's BuildKit makes it on its first step otherwise
            inotify.watch(controller, directory)
    except OSError:
        inotify.close()
        raise
    stop = threading.Event()

    def run() -> None:
        try:
            while not stop.is_set():
                for controller, step in inotify.created(WATCH_POLL_S):
                    try:
                        limit_step(controller, step, limits)
                    except OSError as exc:
                        logger.warning("could not limit the build step cgroup %s: %s", step, exc)
        finally:
            inotify.close()

    thread = threading.Thread(target=run, name="dockyard-buildkit-limits", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join(timeout=5)
