"""dockyard.tasks.prepare with dockyard.tasks.context.scan: the context is digested by a stat walk and packed only when uploaded."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dockyard.config.settings import Settings

from dockyard.tasks.errors import ContextChanged
from dockyard.tasks.prepare import prepare_build
from tests.probes import archive_digest


def project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (root / "app.py").write_text("print('hello')\n")
    return root


def test_preparing_packs_nothing_until_the_tar_is_asked_for(tmp_path: Path, unit_settings: Settings) -> None:
    spec, packed = prepare_build({"image_name": "app", "path": str(project(tmp_path / "ctx"))}, unit_settings)
    with packed:
        assert not packed.is_packed, "digest and size come from the stat walk"
        data = packed.file.read()
        assert packed.is_packed
    assert len(data) == spec.context_size == packed.size, "the size announced is the tar's"
    assert archive_digest(io.BytesIO(data)) == spec.context_digest == packed.digest


def test_a_context_changed_between_digest_and_pack_is_refused(tmp_path: Path, unit_settings: Settings) -> None:
    context = project(tmp_path / "ctx")
    spec, packed = prepare_build({"image_name": "app", "path": str(context)}, unit_settings)
    (context / "app.py").write_text("print('HELLO')\n")  # after the key was computed, before the upload
    with packed, pytest.raises(ContextChanged, match="changed while the build was prepared"):
        packed.file


def test_a_dockerfile_persisted_into_the_context_is_not_part_of_the_build_that_wrote_it(
    tmp_path: Path, unit_settings: Settings
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "app.py").write_text("print('hello')\n")
    params = {"image_name": "app", "path": str(context), "dockerfile": "auto", "persist_dockerfile": True,
              "dockerfile_output_path": "Dockerfile.generated"}
    spec, packed = prepare_build(params, unit_settings)
    with packed:
        assert (context / "Dockerfile.generated").exists()
        assert archive_digest(packed.file) == spec.context_digest, "the upload is the context digested"
