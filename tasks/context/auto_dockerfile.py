"""The generated Dockerfile of ``dockerfile="auto"``: written, used, always removed."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dockyard.tasks.errors import InvalidInput


def auto_dockerfile_lines(context: Path, *, base_image: str, install_command: str) -> list[str]:
    """The lines prefect-docker generates for ``context``."""
    dir_name = context.resolve().name
    lines = [f"FROM {base_image}"]
    if (context / "requirements.txt").exists():
        lines.append(f"COPY requirements.txt /opt/prefect/{dir_name}/requirements.txt")
        lines.append(f"RUN {install_command} /opt/prefect/{dir_name}/requirements.txt")
    lines.append(f"COPY . /opt/prefect/{dir_name}/")
    lines.append(f"WORKDIR /opt/prefect/{dir_name}/")
    return lines


@contextlib.contextmanager
def generated_dockerfile(context: Path, lines: list[str]) -> Iterator[str]:
    """Write ``lines`` to a new file inside ``context``; yield its name; remove it whatever happens.

    The name is unique and the file is created exclusively, so nothing of the
    caller's is overwritten and concurrent builds of one directory do not collide.
    """
    if (context / "Dockerfile").exists():
        raise InvalidInput("Dockerfile already exists.")
    name = generated_name()
    path = context / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.writelines(line + "\n" for line in lines)
        yield name
    finally:
        path.unlink(missing_ok=True)


def persist_dockerfile(lines: list[str], output_path: Path) -> None:
    """Keep a copy of the generated Dockerfile at ``output_path``."""
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text("".join(line + "\n" for line in lines))


def generated_name() -> str:
    """A fresh name for a generated Dockerfile, unlikely to clash with the caller's files."""
    return f".dockyard-{secrets.token_hex(6)}.Dockerfile"


def append_generated_dockerfile(archive: BinaryIO, lines: list[str]) -> str:
    """Add the generated Dockerfile to the context tar ``archive`` (a seekable file); return its name."""
    name = generated_name()
    content = "".join(line + "\n" for line in lines).encode()
    archive.seek(0)
    with tarfile.open(fileobj=archive, mode="a") as tar:
        if "Dockerfile" in tar.getnames():
            raise InvalidInput("Dockerfile already exists.")
        member = tarfile.TarInfo(name)
        member.size, member.mode = len(content), 0o644
        tar.addfile(member, io.BytesIO(content))
    archive.seek(0)
    return name
