"""Stopping a running build (``dockyard.tasks.engine.build_stop``): the stop itself, the classic builder's
response stream kept and shut, buildx's process tree interrupted, and the build's ``Cancelled``."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from dockyard.tasks.engine.build import _read_build_events
from dockyard.tasks.engine.build_stop import BuildStop, captured_response, interrupt_processes, processes_of, shut_stream
from dockyard.tasks.errors import Cancelled


def test_a_stop_asked_before_the_build_runs_stops_it_once_attached() -> None:
    stop = BuildStop()
    ran: list[str] = []
    stop.stop()
    stop.attach(lambda: ran.append("stopped"))
    assert ran == ["stopped"]


def test_a_stop_while_attached_runs_the_action_and_none_after_detach() -> None:
    stop = BuildStop()
    ran: list[str] = []
    stop.attach(lambda: ran.append("stopped"))
    stop.stop()
    stop.detach()
    stop.stop()
    assert ran == ["stopped"] and stop.requested.is_set()


class Answering(BaseAdapter):
    """A transport that answers every request with an empty 200, its request attached (as requests does)."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response.request, response.url = 200, request, request.url or ""
        return response

    def close(self) -> None:
        pass


def test_the_build_response_of_this_thread_only_is_kept() -> None:
    session = requests.Session()
    session.mount("http://", Answering())
    with captured_response(session) as captured:
        other = threading.Thread(target=lambda: session.post("http://engine/v1.41/build?t=x"))
        other.start()
        other.join()
        assert captured.response is None, "another thread's build is not this one's"
        session.get("http://engine/v1.41/images/json")
        assert captured.response is None, "another request is not the build"
        session.post("http://engine/v1.41/build?t=x")
    assert captured.response is not None and captured.response.request.path_url.startswith("/v1.41/build")
    assert session.hooks["response"] == [], "the hook is gone after the block"


def test_shutting_the_stream_wakes_the_reader_blocked_on_it() -> None:
    ours, engine = socket.socketpair()
    raw = type("Raw", (), {"_connection": type("Connection", (), {"sock": ours})()})()
    response = type("Response", (), {"raw": raw, "close": lambda self: None})()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(ours.recv(10)))
    reader.start()
    shut_stream(response)
    reader.join(5)
    assert not reader.is_alive() and got == [b""], "the blocked read ended"
    assert engine.recv(10) == b"", "the engine's end sees the client go"
    ours.close()
    engine.close()


def events(*items: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from items


def test_a_stopped_build_raises_cancelled_whatever_its_stream_said() -> None:
    stop = BuildStop()
    stop.stop()
    with pytest.raises(Cancelled, match="stopped on the engine"):
        _read_build_events(events({"stream": "Step 1/2\n"}), lambda _text: None, stop)
    with pytest.raises(Cancelled):  # the stream ended early, with no image id: still the stop's doing
        _read_build_events(events(), lambda _text: None, stop)


def test_the_process_tree_named_by_its_marker_is_interrupted() -> None:
    marker = f"dockyard-docker-config-unit-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(60)", marker])
    try:
        found = processes_of(marker)
        assert found == [child.pid]
        assert interrupt_processes(marker, grace_s=5) == [child.pid]
        assert child.wait(timeout=5) != 0, "it stopped on SIGINT"
        assert processes_of(marker) == []
    finally:
        child.kill()
        child.wait()
