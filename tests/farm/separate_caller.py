"""A caller on a host of its own (``tests.farm.separate_hosts``): requests in on stdin, answers out on stdout, one JSON line each.

Run on the caller host with a team's caller settings in its environment. Each request is
``{"id": ..., "op": ..., ...}`` and runs in a thread of its own; its answer is ``{"id": ..., "ok": true,
"result": ...}`` or ``{"id": ..., "ok": false, "error": "Type: message"}``, printed when it ends.

- ``write``: ``files`` ({path: text}) written on the caller's own disk;
- ``build``: ``client.build(image_name, **kwargs)``; with ``queue``, sent to that queue and waited for;
- ``chain``: build then push in one chain (``build_and_push``), answering ``{"built", "pushed"}``;
- ``push``: ``client.push(image_name, **kwargs)``.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

TIMEOUT_S = 240.0
_print_lock = threading.Lock()


def answer(document: dict[str, Any]) -> None:
    with _print_lock:
        sys.stdout.write(json.dumps(document, default=str) + "\n")
        sys.stdout.flush()


def perform(request: dict[str, Any]) -> Any:
    from dockyard.tasks import client

    op, kwargs = request["op"], dict(request.get("kwargs", {}))
    if op == "write":
        for path, text in request["files"].items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return None
    if op == "build" and request.get("queue"):
        return client.build_signature(request["image_name"], **kwargs).set(queue=request["queue"]).apply_async().get(timeout=TIMEOUT_S)
    if op == "build":
        return client.build(request["image_name"], timeout_s=TIMEOUT_S, **kwargs)
    if op == "chain":
        job = client.build_and_push(request["image_name"], **kwargs).apply_async()
        pushed = job.get(timeout=TIMEOUT_S)
        return {"built": job.parent.get(timeout=10), "pushed": pushed}
    if op == "push":
        return client.push(request["image_name"], timeout_s=TIMEOUT_S, **kwargs)
    raise ValueError(f"unknown op {op!r}")


def serve(request: dict[str, Any]) -> None:
    try:
        answer({"id": request["id"], "ok": True, "result": perform(request)})
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the test
        answer({"id": request["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"})


def main() -> None:
    import dockyard.tasks.client  # noqa: F401 - imported once, before the threads

    answer({"id": "ready", "ok": True, "result": None})
    for line in sys.stdin:
        if line.strip():
            threading.Thread(target=serve, args=(json.loads(line),), daemon=True).start()


if __name__ == "__main__":
    main()
