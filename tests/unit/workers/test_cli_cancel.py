"""``dockyard cancel`` and the cancel of ``dockyard build`` (``--print-task-id``, Ctrl-C), without a farm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dockyard.tasks import client
from dockyard.workers import cli


def test_cancel_asks_for_the_id_and_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[str] = []
    monkeypatch.setattr(client, "cancel", lambda task_id: asked.append(task_id) or task_id)
    assert cli.main(["cancel", "task-1"]) == 0
    assert asked == ["task-1"]
    assert capsys.readouterr().out.startswith("cancel requested for task task-1 (team ")
    assert cli.main(["cancel", "task-2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cancelled"] == "task-2"


def test_a_bad_task_id_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "redis_for", lambda _settings: None)  # refused before Redis is asked
    assert cli.main(["cancel", "a b"]) == 1
    assert capsys.readouterr().err.startswith("dockyard: InvalidInput: Not a task id")


def test_build_prints_its_task_id_when_asked_and_ctrl_c_cancels_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    cancelled: list[str] = []

    def interrupted_build(image_name: str, *, on_sent: Any, **_params: Any) -> Any:
        on_sent("task-9")
        raise KeyboardInterrupt

    monkeypatch.setattr(client, "build", interrupted_build)
    monkeypatch.setattr(client, "cancel", lambda task_id: cancelled.append(task_id) or task_id)
    code = cli.main(["build", "reg.io/team/app", str(tmp_path), "--print-task-id"])
    err = capsys.readouterr().err
    assert code == 130 and cancelled == ["task-9"]
    assert "build sent as task task-9 (stop it with 'dockyard cancel task-9')" in err
    assert err.strip().splitlines()[-1] == "dockyard: Interrupted: interrupted"
