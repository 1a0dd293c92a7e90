"""Worker-side preparation of a stored context: streamed as it is, against unpacking and re-tarring it.

    python -m benchmarks.context_prep [--tree-mb 200] [--tree-files 5000] [--repeats 3] [--json PATH]

A generated tree (random bytes, ``benchmarks.context_packing.make_tree``) is
packed once as a caller packs it. From that stored tar, a worker can:

- **stream** it to the engine as it is (``dockyard.tasks.engine.build.build_from_archive``, the
  docker-py backend since 335447d): the engine reads the tar itself;
- **unpack and re-tar** it (what the buildx path still does to reach a
  directory, and what a docker-py build from a path does): unpack with
  dockyard's checks (``dockyard.tasks.context.unpack.safe_unpack``), then docker-py's
  ``docker.utils.tar`` of the directory.

"Preparation" is everything from the stored tar to the bytes the engine
receives, read to the end (into nothing, as the HTTP body would be sent).
Each way is also built on the farm's first engine end to end (``FROM
scratch``, one ``COPY``), so the engine's own share is visible. Best of
``--repeats``, interleaved.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from benchmarks import harness
from benchmarks.context_packing import MB, make_tree

BLOCK = 1 << 20


def drain(stream: IO[bytes]) -> int:
    """Read ``stream`` to its end, as an HTTP body is sent; the bytes read."""
    total = 0
    while block := stream.read(BLOCK):
        total += len(block)
    return total


def streamed(archive: IO[bytes]) -> IO[bytes]:
    archive.seek(0)
    return archive


def unpacked_and_retarred(archive: IO[bytes], scratch: Path) -> IO[bytes]:
    import docker.utils

    from dockyard.tasks.context.unpack import safe_unpack

    directory = Path(tempfile.mkdtemp(dir=scratch))
    archive.seek(0)
    safe_unpack(archive, directory, max_bytes=10**11)
    retarred: IO[bytes] = docker.utils.tar(str(directory), dockerfile=("Dockerfile", None))
    shutil.rmtree(directory)  # docker-py's tar is a finished temporary file by now
    return retarred


def run(*, tree_mb: int, tree_files: int, repeats: int) -> dict[str, Any]:
    harness.setup_environment()
    from dockyard.tasks.context.pack import pack_context

    client = harness.engine(harness.docker_hosts()[0], logged_in=False)
    image = f"dockyard-bench/context-prep-{uuid.uuid4().hex[:8]}"
    with harness.temp_dir("dockyard-bench-prep-") as scratch:
        tree = scratch / "tree"
        size = make_tree(tree, total_bytes=tree_mb * MB, files=tree_files)
        (tree / "Dockerfile").write_text("FROM scratch\nCOPY d000/f00000.bin /first.bin\n")
        packed = pack_context(tree, dockerfile="Dockerfile", max_bytes=10**11)
        shutil.rmtree(tree)
        try:
            def prepare_streamed() -> float:
                started = time.perf_counter()
                drain(streamed(packed.file))
                return time.perf_counter() - started

            def prepare_retarred() -> float:
                started = time.perf_counter()
                retarred = unpacked_and_retarred(packed.file, scratch)
                drain(retarred)
                elapsed = time.perf_counter() - started
                retarred.close()
                return elapsed

            def build(make: Callable[[], IO[bytes]]) -> Callable[[], float]:
                def one() -> float:
                    started = time.perf_counter()
                    body = make()
                    for _ in client.api.build(fileobj=body, custom_context=True, tag=image, rm=True, decode=True):
                        pass
                    elapsed = time.perf_counter() - started
                    if body is not packed.file:
                        body.close()
                    return elapsed
                return one

            prep_stream: list[float] = []
            prep_retar: list[float] = []
            build_stream: list[float] = []
            build_retar: list[float] = []
            for _ in range(repeats):  # interleaved, so both read from a warm page cache
                prep_stream.append(prepare_streamed())
                prep_retar.append(prepare_retarred())
                build_stream.append(build(lambda: streamed(packed.file))())
                build_retar.append(build(lambda: unpacked_and_retarred(packed.file, scratch))())
        finally:
            packed.close()
            try:
                client.images.remove(image, force=True)
            except Exception:  # noqa: BLE001 - nothing built, nothing to remove
                pass
    return {
        "context_bytes": size,
        "files": tree_files,
        "prepare_streamed_s": round(min(prep_stream), 3),
        "prepare_unpack_retar_s": round(min(prep_retar), 3),
        "prepare_ratio": round(min(prep_stream) / min(prep_retar), 3),
        "build_streamed_s": round(min(build_stream), 3),
        "build_unpack_retar_s": round(min(build_retar), 3),
        "build_ratio": round(min(build_stream) / min(build_retar), 3),
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tree-mb", type=int, default=200)
    parser.add_argument("--tree-files", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    figures = run(tree_mb=args.tree_mb, tree_files=args.tree_files, repeats=args.repeats)
    for name, value in figures.items():
        print(f"{name:28} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
