"""One prefect-docker build, run by the bench venv's python (not dockyard's): no project imports.

Protocol on stdin/stdout, one JSON line each:
  child  -> {"ready": true, "import_s": ...}     after ``import prefect_docker`` (untimed by the parent)
  parent -> {"image_name": ..., "tag": ..., "path": ..., "pull": true}   the "go" line
  child  -> {"ok": true, "result": {...}, "build_s": ...} or {"ok": false, "error": "..."}
The step's own build output (it writes to stdout) goes to /dev/null; logs go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def main() -> int:
    started = time.monotonic()
    from prefect_docker.deployments.steps import build_docker_image  # type: ignore[import-not-found]

    import_s = time.monotonic() - started
    answer = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the step writes build output to sys.stdout
    answer.write(json.dumps({"ready": True, "import_s": import_s}) + "\n")
    answer.flush()
    line = sys.stdin.readline()
    if not line:
        return 1
    kwargs = json.loads(line)
    began = time.monotonic()
    try:
        result = build_docker_image(**kwargs)
        reply = {"ok": True, "result": dict(result), "build_s": time.monotonic() - began}
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        traceback.print_exc()
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "build_s": time.monotonic() - began}
    answer.write(json.dumps(reply) + "\n")
    answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
