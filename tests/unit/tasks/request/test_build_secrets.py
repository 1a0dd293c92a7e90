"""dockyard.tasks.request.build_secrets: read on the caller, sealed for the message, files on the worker, then gone."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from dockyard.tasks.request.build_secrets import materialized_secrets, read_secrets, seal_secrets
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.sealing import generate_keypair
from tests.unit.support import make_settings

PUBLIC_KEY, PRIVATE_KEY = generate_keypair()  # the farm's: callers seal with the public key, workers open with the private one
CALLER = make_settings(seal_public_key=PUBLIC_KEY)  # of team default
KEY = SecretStr(PRIVATE_KEY)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_secrets_are_read_from_files_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_bytes(b"file-secret\n")
    monkeypatch.setenv("UNIT_SECRET", "env-secret")
    found = read_secrets([f"id=file,src={tmp_path / 'token'}", f"id=alias,source={tmp_path / 'token'}", "id=env,env=UNIT_SECRET"])
    assert found == {"file": b64(b"file-secret\n"), "alias": b64(b"file-secret\n"), "env": b64(b"env-secret")}


def test_a_single_entry_may_be_a_string(tmp_path: Path) -> None:
    (tmp_path / "t").write_bytes(b"x")
    assert read_secrets(f"id=t,src={tmp_path / 't'}") == {"t": b64(b"x")}


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ("src=/etc/hostname", "has no id="),
        ("id=x", "needs src=PATH or env=VAR"),
        ("id=x,src=/nonexistent/dockyard-unit", "cannot read"),
        ("id=x,env=DOCKYARD_UNIT_SURELY_UNSET", "is not set"),
        ({"id": "x"}, "must be a string or a list"),
        (["id=x,env=A", 5], "must be a string or a list"),
    ],
    ids=["no id", "no source", "missing file", "unset variable", "mapping", "not all strings"],
)
def test_bad_entries_are_refused(secrets: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        read_secrets(secrets)


def test_sealed_secrets_hide_their_values_and_give_sorted_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_B", "value-of-b")
    monkeypatch.setenv("UNIT_A", "value-of-a")
    sealed, ids = seal_secrets(["id=b,env=UNIT_B", "id=a,env=UNIT_A"], CALLER)
    assert ids == ["a", "b"]
    text = json.dumps(sealed)
    for hidden in ("value-of", b64(b"value-of-a"), b64(b"value-of-b")):
        assert hidden not in text


def test_sealing_needs_the_farms_public_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_A", "a")
    with pytest.raises(InvalidInput, match="DOCKYARD_SEAL_PUBLIC_KEY"):
        seal_secrets("id=a,env=UNIT_A", make_settings())


def test_materialized_secrets_are_private_files_removed_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_A", "value-of-a")
    sealed, _ids = seal_secrets("id=a,env=UNIT_A", CALLER)
    with materialized_secrets(sealed, KEY, team="default") as entries:
        (entry,) = entries
        assert entry.startswith("id=a,src=")
        path = Path(entry.removeprefix("id=a,src="))
        assert path.read_bytes() == b"value-of-a"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not path.exists() and not path.parent.exists()


def test_materialized_secrets_are_removed_when_the_build_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_A", "a")
    sealed, _ids = seal_secrets("id=a,env=UNIT_A", CALLER)
    with pytest.raises(RuntimeError), materialized_secrets(sealed, KEY, team="default") as entries:
        directory = Path(entries[0].split("src=", 1)[1]).parent
        raise RuntimeError("build failed")
    assert not directory.exists()


def test_another_farms_key_cannot_open_the_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_A", "a")
    sealed, _ids = seal_secrets("id=a,env=UNIT_A", CALLER)
    with pytest.raises(InvalidInput, match="could not be opened"):
        with materialized_secrets(sealed, SecretStr(generate_keypair()[1]), team="default"):
            pass


def test_secrets_sealed_by_one_team_do_not_open_for_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seal lifted from team default's message and put in team-b's opens nothing on the worker."""
    monkeypatch.setenv("UNIT_A", "value-of-a")
    sealed, _ids = seal_secrets("id=a,env=UNIT_A", CALLER)
    with pytest.raises(InvalidInput, match="could not be opened"):
        with materialized_secrets(sealed, KEY, team="team-b"):
            pass
    theirs, _ids = seal_secrets("id=a,env=UNIT_A", make_settings(seal_public_key=PUBLIC_KEY, team="team-b"))
    with materialized_secrets(theirs, KEY, team="team-b") as entries:
        assert Path(entries[0].split("src=", 1)[1]).read_bytes() == b"value-of-a"
