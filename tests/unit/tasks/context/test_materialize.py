"""dockyard.tasks.context.materialize: the Dockerfile of a context tar checked against the spec, shared paths kept under their root."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.request import build_secrets
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.context.materialize import check_archive_dockerfile, shared_directory, under_shared_root
from dockyard.tasks.worker import sent_arguments
from dockyard.tasks.worker.sent_arguments import prepare_sent_arguments
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec, dockerfile_digest
from tests.unit.support import make_settings

DOCKERFILE = b"FROM scratch\nCOPY app.py /\n"


def worker(**overrides: Any) -> Settings:
    """Settings with no shared root and the redis transport unless given (tests/farm/conftest.py exports a root)."""
    return make_settings(**{"shared_context_root": None, "context_transport": "redis", **overrides})


def project(root: Path, dockerfile: bytes | None = DOCKERFILE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text("print('hi')\n")
    if dockerfile is not None:
        (root / "Dockerfile").write_bytes(dockerfile)
    return root


def spec_of(context: Path, settings: Settings | None = None, **params: Any) -> BuildSpec:
    spec, packed = prepare_build({"image_name": "app", "tag": "v1", "path": str(context), **params}, settings or worker())
    packed.close()
    return spec


def tar_of(**files: bytes | str) -> io.BytesIO:
    """A context tar in memory: bytes are regular files, a str is a symlink to that target."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in files.items():
            member = tarfile.TarInfo(name)
            if isinstance(content, str):
                member.type, member.linkname = tarfile.SYMTYPE, content
                tar.addfile(member)
            else:
                member.size = len(content)
                tar.addfile(member, io.BytesIO(content))
    buffer.seek(7)  # anywhere: the check rewinds
    return buffer


@pytest.fixture
def spec(tmp_path: Path) -> BuildSpec:
    built = spec_of(project(tmp_path / "ctx"))
    assert built.dockerfile_digest == dockerfile_digest(DOCKERFILE)
    return built


# check_archive_dockerfile


def test_the_dockerfile_with_the_specs_digest_passes_and_the_archive_is_rewound(spec: BuildSpec) -> None:
    archive = tar_of(**{"app.py": b"x", "Dockerfile": DOCKERFILE})
    check_archive_dockerfile(archive, spec)
    assert archive.tell() == 0, "rewound for the engine to read from the start"


def test_other_dockerfile_bytes_are_refused(spec: BuildSpec) -> None:
    archive = tar_of(Dockerfile=DOCKERFILE + b"RUN rm -rf /\n")
    with pytest.raises(InvalidInput, match="does not match the spec's dockerfile_digest"):
        check_archive_dockerfile(archive, spec)


def test_a_missing_dockerfile_is_refused(spec: BuildSpec) -> None:
    with pytest.raises(InvalidInput, match="'Dockerfile' is not in the build context"):
        check_archive_dockerfile(tar_of(**{"app.py": b"x"}), spec)


def test_a_dockerfile_that_is_not_a_regular_file_is_refused(spec: BuildSpec) -> None:
    archive = tar_of(**{"real": DOCKERFILE, "Dockerfile": "real"})  # a symlink to the right bytes
    with pytest.raises(InvalidInput, match="does not match"):
        check_archive_dockerfile(archive, spec)
    directory = io.BytesIO()
    with tarfile.open(fileobj=directory, mode="w") as tar:
        member = tarfile.TarInfo("Dockerfile")
        member.type = tarfile.DIRTYPE
        tar.addfile(member)
    with pytest.raises(InvalidInput, match="does not match"):
        check_archive_dockerfile(directory, spec)


def test_a_dockerfile_in_a_subdirectory_is_looked_up_by_its_path(tmp_path: Path) -> None:
    context = project(tmp_path / "ctx", dockerfile=None)
    (context / "docker").mkdir()
    (context / "docker" / "app.Dockerfile").write_bytes(b"FROM alpine\n")
    spec = spec_of(context, dockerfile="docker/app.Dockerfile")
    check_archive_dockerfile(tar_of(**{"docker/app.Dockerfile": b"FROM alpine\n"}), spec)
    with pytest.raises(InvalidInput, match="not in the build context"):
        check_archive_dockerfile(tar_of(Dockerfile=b"FROM alpine\n"), spec)


class _Watched(io.BytesIO):
    """An archive that records every call that reads it or moves in it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls: list[str] = []

    def read(self, *args: Any) -> bytes:
        self.calls.append("read")
        return super().read(*args)

    def readinto(self, *args: Any) -> int:
        self.calls.append("readinto")
        return super().readinto(*args)

    def seek(self, *args: Any) -> int:
        self.calls.append("seek")
        return super().seek(*args)


def test_auto_has_no_dockerfile_to_check(tmp_path: Path) -> None:
    spec = spec_of(project(tmp_path / "ctx", dockerfile=None), dockerfile="auto")
    archive = _Watched(b"not even a tar")
    check_archive_dockerfile(archive, spec)
    assert archive.calls == [], "the archive is neither read nor rewound: there is no Dockerfile in it to look for"
    named = spec_of(project(tmp_path / "named"))  # the same archive against a spec that names a Dockerfile
    with pytest.raises(tarfile.ReadError):
        check_archive_dockerfile(_Watched(b"not even a tar"), named)


# under_shared_root and shared_directory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shared = tmp_path / "shared"
    shared.mkdir()
    return shared


def test_without_a_shared_root_no_path_is_read(root: Path) -> None:
    with pytest.raises(InvalidInput, match="DOCKYARD_SHARED_CONTEXT_ROOT"):
        under_shared_root(str(project(root / "ctx")), worker(shared_context_root=None))


def test_a_directory_under_the_root_is_accepted_resolved(root: Path) -> None:
    context = project(root / "team" / "ctx")
    settings = worker(shared_context_root=str(root))
    assert under_shared_root(str(root / "team" / ".." / "team" / "ctx"), settings) == context.resolve()


@pytest.mark.parametrize("where", ["outside", "dotdot", "root_sibling"])
def test_a_directory_outside_the_root_is_refused(tmp_path: Path, root: Path, where: str) -> None:
    settings = worker(shared_context_root=str(root))
    paths = {
        "outside": str(project(tmp_path / "elsewhere")),
        "dotdot": str(root / ".." / "elsewhere2"),
        "root_sibling": str(project(tmp_path / "shared-evil")),  # shares the root's name as a prefix
    }
    project(tmp_path / "elsewhere2")
    with pytest.raises(InvalidInput, match="not a directory under DOCKYARD_SHARED_CONTEXT_ROOT"):
        under_shared_root(paths[where], settings)


def test_a_symlink_under_the_root_that_escapes_it_is_refused(tmp_path: Path, root: Path) -> None:
    (root / "link").symlink_to(project(tmp_path / "outside"))
    with pytest.raises(InvalidInput, match="not a directory under"):
        under_shared_root(str(root / "link"), worker(shared_context_root=str(root)))


def test_a_file_or_a_missing_path_under_the_root_is_refused(root: Path) -> None:
    (root / "file").write_text("x")
    settings = worker(shared_context_root=str(root))
    for path in (root / "file", root / "missing"):
        with pytest.raises(InvalidInput, match="not a directory under"):
            under_shared_root(str(path), settings)


def shared_spec(context: Path, root: Path, **params: Any) -> BuildSpec:
    return spec_of(context, worker(context_transport="path", shared_context_root=str(root)), **params)


def test_shared_directory_returns_the_checked_directory(root: Path) -> None:
    context = project(root / "ctx")
    spec = shared_spec(context, root)
    assert spec.context_path == str(context.resolve())
    assert shared_directory(spec, worker(shared_context_root=str(root))) == context.resolve()


def test_shared_directory_refuses_a_dockerfile_changed_since_the_spec(root: Path) -> None:
    context = project(root / "ctx")
    spec = shared_spec(context, root)
    (context / "Dockerfile").write_bytes(DOCKERFILE + b"RUN evil\n")
    with pytest.raises(InvalidInput, match="does not match the spec's dockerfile_digest"):
        shared_directory(spec, worker(shared_context_root=str(root)))


def test_shared_directory_refuses_a_dockerfile_symlinked_out_of_the_context(tmp_path: Path, root: Path) -> None:
    context = project(root / "ctx")
    spec = shared_spec(context, root)
    outside = tmp_path / "outside.Dockerfile"
    outside.write_bytes(DOCKERFILE)  # the very bytes of the spec: only where it lies is wrong
    (context / "Dockerfile").unlink()
    (context / "Dockerfile").symlink_to(outside)
    with pytest.raises(InvalidInput, match="not found inside"):
        shared_directory(spec, worker(shared_context_root=str(root)))


def test_shared_directory_refuses_a_missing_dockerfile(root: Path) -> None:
    context = project(root / "ctx")
    spec = shared_spec(context, root)
    (context / "Dockerfile").unlink()
    with pytest.raises(InvalidInput, match="not found inside"):
        shared_directory(spec, worker(shared_context_root=str(root)))


def test_shared_directory_refuses_a_spec_path_outside_this_workers_root(tmp_path: Path, root: Path) -> None:
    elsewhere = tmp_path / "other-root"
    context = project(elsewhere / "ctx")
    spec = shared_spec(context, elsewhere)  # fine for the caller's root, not for this worker's
    with pytest.raises(InvalidInput, match="not a directory under"):
        shared_directory(spec, worker(shared_context_root=str(root)))


# prepare_sent_arguments (dockyard.tasks.worker.sent_arguments: raw arguments checked against the shared root above)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every attempt to read the context or a secret (they still happen)."""
    seen: list[str] = []
    real_prepare, real_secrets = sent_arguments.prepare_build, build_secrets.read_secrets

    def prepare(params: dict[str, Any], settings: Settings) -> Any:
        seen.append(f"prepare {params.get('path')}")
        return real_prepare(params, settings)

    def read_secrets(secrets: Any) -> Any:
        seen.append("secrets")
        return real_secrets(secrets)

    monkeypatch.setattr(sent_arguments, "prepare_build", prepare)
    monkeypatch.setattr(build_secrets, "read_secrets", read_secrets)
    return seen


def test_sent_arguments_under_the_root_give_a_path_spec(root: Path, reads: list[str]) -> None:
    context = project(root / "ctx")
    spec = prepare_sent_arguments(
        {"image_name": "app", "tag": "v1", "path": str(context)}, worker(shared_context_root=str(root))
    )
    assert spec.context_path == str(context.resolve()), "the worker's settings are switched to the path transport"
    assert spec.dockerfile_digest == dockerfile_digest(DOCKERFILE) and spec.image_name == "app"
    assert reads == [f"prepare {context}"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"secrets": ["id=token,src=/etc/shadow"]}, "Build secrets are read on the caller"),
        ({"persist_dockerfile": True, "dockerfile": "auto"}, "persist_dockerfile writes on the caller's disk"),
    ],
)
def test_sent_arguments_that_would_read_or_write_the_workers_files_are_refused_first(
    root: Path, reads: list[str], extra: dict[str, Any], message: str
) -> None:
    context = project(root / "ctx", dockerfile=None)
    params = {"image_name": "app", "tag": "v1", "path": str(context), "build_backend": "buildx", **extra}
    with pytest.raises(InvalidInput, match=message):
        prepare_sent_arguments(params, worker(shared_context_root=str(root)))
    assert reads == []
    assert not (context / "Dockerfile.generated").exists()


@pytest.mark.parametrize("path", [None, 42, ["/srv"]])
def test_sent_arguments_without_a_path_string_are_refused(root: Path, reads: list[str], path: Any) -> None:
    params: dict[str, Any] = {"image_name": "app", "tag": "v1"}
    if path is not None:
        params["path"] = path
    with pytest.raises(InvalidInput, match="needs path"):
        prepare_sent_arguments(params, worker(shared_context_root=str(root)))
    assert reads == []


def test_sent_arguments_with_a_path_outside_the_root_are_refused_before_reading_it(
    tmp_path: Path, root: Path, reads: list[str]
) -> None:
    outside = project(tmp_path / "outside")
    with pytest.raises(InvalidInput, match="not a directory under"):
        prepare_sent_arguments(
            {"image_name": "app", "tag": "v1", "path": str(outside)}, worker(shared_context_root=str(root))
        )
    with pytest.raises(InvalidInput, match="DOCKYARD_SHARED_CONTEXT_ROOT"):
        prepare_sent_arguments({"image_name": "app", "tag": "v1", "path": str(outside)}, worker())
    assert reads == []
