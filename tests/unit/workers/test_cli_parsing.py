"""dockyard.workers.cli without a farm: its help, its arguments and what they become, its one-line failures."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis

from dockyard.tasks.errors import BuildError
from dockyard.workers import cli

ONE_LINE = re.compile(r"dockyard: \w+: .+")


def every_parser(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser under it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.extend(every_parser(child))
    return found


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_is_plain_text_and_every_argument_has_help() -> None:
    parsers = every_parser(cli.parser())
    assert {p.prog for p in parsers} >= {"dockyard", "dockyard build", "dockyard push", "dockyard cache clear"}
    for each in parsers:
        text = each.format_help()
        assert "``" not in text, (each.prog, text)
        assert not re.search(r":[a-z]+:`", text), (each.prog, text)  # reST roles such as :func:`x`
        assert "`" not in text, (each.prog, text)
        assert each.description, f"{each.prog} has no description"
        for action in each._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), f"{each.prog}: {action.option_strings or action.dest} has no help"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert re.fullmatch(r"dockyard \d+\.\d+\S*\n", capsys.readouterr().out)


def build_args(*argv: str) -> tuple[str, dict[str, Any]]:
    return cli.build_request(cli.parser().parse_args(["build", *argv]))


def test_build_takes_docker_builds_options(tmp_path: Path) -> None:
    image, params = build_args(
        "reg:5000/team/app", str(tmp_path), "-f", "Other.Dockerfile", "-t", "a", "-t", "b", "--tag", "c",
        "--build-arg", "X=1", "--build-arg", "EMPTY=", "--build-arg", "EQ=a=b", "--target", "t",
        "--platform", "linux/amd64", "--no-cache", "--label", "team=x", "--label", "k=v",
    )
    assert image == "reg:5000/team/app"
    assert params == {
        "path": str(tmp_path.resolve()), "dockerfile": "Other.Dockerfile", "tag": "a", "additional_tags": ["b", "c"],
        "buildargs": {"X": "1", "EMPTY": "", "EQ": "a=b"}, "target": "t", "platform": "linux/amd64",
        "nocache": True, "labels": {"team": "x", "k": "v"},
    }


def test_build_options_take_buildx_names_with_the_buildx_backend(tmp_path: Path) -> None:
    _, params = build_args(
        "app", str(tmp_path), "--backend", "buildx", "--build-arg", "X=1", "--platform", "linux/amd64,linux/arm64",
        "--no-cache", "--target", "t",
    )
    assert params["build_backend"] == "buildx"
    assert params["build_args"] == {"X": "1"} and "buildargs" not in params
    assert params["platforms"] == ["linux/amd64", "linux/arm64"] and "platform" not in params
    assert params["cache"] is False and "nocache" not in params
    assert params["target"] == "t"


def test_build_keeps_the_old_spellings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, old = build_args("app", "--path", str(tmp_path), "--dockerfile", "auto", "--tag", "v1", "--additional-tag", "v2")
    assert old == {"path": str(tmp_path.resolve()), "dockerfile": "auto", "tag": "v1", "additional_tags": ["v2"]}
    monkeypatch.chdir(tmp_path)
    _, defaults = build_args("app")
    assert defaults == {"path": str(tmp_path.resolve()), "dockerfile": "Dockerfile"}, "no tag: the timestamp default"
    _, only_additional = build_args("app", "--additional-tag", "x")
    assert "tag" not in only_additional and only_additional["additional_tags"] == ["x"]


@pytest.mark.parametrize("value", ["X", "=x", ""])
@pytest.mark.parametrize("option", ["--build-arg", "--label"])
def test_a_key_value_option_without_key_and_value_is_a_usage_error(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["build", "app", ".", option, "A=1", option, value], capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and ONE_LINE.fullmatch(err.strip()), err
    assert err.startswith(f"dockyard: UsageError: argument {option}: expected KEY=VALUE, got {value!r}")


def test_the_context_given_twice_or_a_path_for_the_image_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(["build", "app", str(tmp_path), "--path", str(tmp_path)], capsys)
    assert code == 2 and err.startswith("dockyard: UsageError: the build context is given twice")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ctx").mkdir()
    code, _, err = run(["build", "./ctx", "-t", "a"], capsys)
    assert code == 2 and "'./ctx' is a path, not an image name" in err and len(err.splitlines()) == 1


def test_push_tags_and_password_from_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[dict[str, Any]] = []
    from dockyard.tasks import client

    monkeypatch.setattr(client, "push", lambda image_name, **kwargs: calls.append(kwargs) or {"image": image_name})
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    code, out, err = run(["push", "reg:5000/team/app", "-t", "v1", "-t", "v2", "--username", "u", "--password-stdin"], capsys)
    assert (code, err) == (0, "")
    assert json.loads(out) == {"image": "reg:5000/team/app"}
    assert calls[0]["tag"] == "v1" and calls[0]["additional_tags"] == ["v2"]
    assert calls[0]["credentials"] == {"username": "u", "password": "s3cret", "registry_url": "reg:5000"}
    assert "s3cret" not in out

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(["push", "reg:5000/team/app", "--username", "u", "--password-stdin"], capsys)
    assert code == 2 and err.strip() == "dockyard: UsageError: --password-stdin: no password on stdin"
    code, out, err = run(["push", "reg:5000/team/app", "--password-stdin"], capsys)
    assert code == 2 and err.strip() == "dockyard: UsageError: --password-stdin given without --username"
    code, out, err = run(["push", "x/y", "--username", "u", "--password-stdin", "--password-env", "V"], capsys)
    assert code == 2 and "not allowed with argument" in err and len(err.splitlines()) == 1


def test_the_push_password_variable_is_said_to_be_an_options_default_not_a_setting() -> None:
    push = next(p for p in every_parser(cli.parser()) if p.prog == "dockyard push")
    text = " ".join(push.format_help().split())
    assert f"default {cli.PUSH_PASSWORD_ENV}, a variable this command reads for its own option, not a dockyard setting" in text


def test_hosts_count_the_fast_lane_apart() -> None:
    records = [
        {"host": "h1", "concurrency": 2, "queue": "dockyard.host.h1", "fast_queue": "dockyard.host.h1.fast", "docker_host": "d1"},
        {"host": "h2", "concurrency": 4, "queue": "dockyard.host.h2", "fast_queue": None, "docker_host": "d2"},
    ]
    active = {
        "h1@machine": [{"id": "b1"}], "h1.fast@machine": [{"id": "f1"}, {"id": "f2"}],
        "h2@machine": [], "h2.fast@machine": [{"id": "ignored"}],
    }
    rows = {row["host"]: row for row in cli.host_rows(records, active, {"h1": ["app (Dockerfile)"]})}
    assert (rows["h1"]["running"], rows["h1"]["running_fast"]) == (1, 2)
    assert (rows["h2"]["running"], rows["h2"]["running_fast"]) == (0, None), "no fast lane advertised: no count"
    assert rows["h1"]["lineages"] == ["app (Dockerfile)"] and rows["h2"]["lineages"] == []


@pytest.mark.parametrize(
    ("error", "pattern"),
    [
        (redis.exceptions.NoPermissionError("User dockyard-caller has no permissions to run the 'del' command"),
         r"dockyard: NoPermissionError: User dockyard-caller has no permissions .* worker Redis user"),
        (redis.exceptions.ResponseError("NOPERM No permissions to access a key"),
         r"dockyard: NoPermissionError: NOPERM No permissions to access a key .*worker Redis user"),
        (redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1.\nConnection refused."),
         r"dockyard: ConnectionError: Error 111 connecting to 127\.0\.0\.1:1\. Connection refused\.$"),
        (BuildError("step 2 failed\nreturned a non-zero code: 1"), r"dockyard: BuildError: step 2 failed returned"),
        (RuntimeError("anything else"), r"dockyard: RuntimeError: anything else$"),
    ],
)
def test_failures_are_one_line_and_exit_1(
    error: Exception, pattern: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def raising(_args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(cli, "cmd_cache_list", raising)
    code, out, err = run(["cache", "list"], capsys)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and ONE_LINE.fullmatch(err.strip()), err
    assert re.match(pattern, err.strip()), err


def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dockyard.config.settings import get_settings

    monkeypatch.setenv("DOCKYARD_WORKER_CONCURRENCY", "abc")
    get_settings.cache_clear()
    try:
        code, out, err = run(["cache", "list"], capsys)
    finally:
        get_settings.cache_clear()
    assert code == 1 and out == ""
    assert err.startswith("dockyard: InvalidSettings: DOCKYARD_WORKER_CONCURRENCY: Input should be a valid integer")
    assert "(got 'abc')" in err and len(err.splitlines()) == 1


def test_a_worker_without_an_explicit_host_id_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Never the hostname by default: a second machine or container may carry another host's name."""
    from dockyard.config.settings import get_settings
    from dockyard.workers import worker

    monkeypatch.setenv("DOCKYARD_HOST_ID", "restored-after-the-test")  # `--host-id` exports it: restored at teardown
    monkeypatch.delenv("DOCKYARD_HOST_ID")
    started: list[object] = []
    monkeypatch.setattr(worker, "run_worker", lambda *args, **kwargs: started.append(args))
    try:
        code, out, err = run(["worker"], capsys)
        assert code == 2 and out == "" and started == []
        assert err.startswith("dockyard: MissingHostId: a worker needs this host's own id: set DOCKYARD_HOST_ID")
        assert len(err.splitlines()) == 1

        code, _, err = run(["worker", "--host-id", "builder-7"], capsys)
        assert code == 0 and len(started) == 1, err
        assert get_settings().host_id == "builder-7"
    finally:
        get_settings.cache_clear()
