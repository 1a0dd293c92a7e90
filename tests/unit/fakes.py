"""A fake Docker engine client for the unit tests (moved here from tests/unit/tasks/test_execute.py).

``FakeEngine`` answers what execute and the build and push operations under
it ask of docker-py: ``images.get``, ``Image.tag``, ``api.build`` and
``api.push`` event streams, ``api.networks`` and ``login``. Its pushes land in
``registry``, a ``FakeRegistry`` (the ``fake_registry`` fixture answers
``dockyard.tasks.registry.manifests.served_digest`` from it).

Opt-in hooks (their defaults keep the plain behaviour): ``bridge`` (whether
``api.networks`` finds a ``bridge`` network), ``failing_tags`` (tags whose
``Image.tag`` raises ``APIError``), ``push_missing`` (``api.push`` raises
``ImageNotFound``), ``push_error_on`` (only that tag's push yields the error
event). ``sources`` records what each build was given as its context.

For the disk budget: ``layers`` (each image's layers, oldest first, as
(diff id, bytes); a build gets one layer of ``BUILT_LAYER_BYTES`` of its own),
``api.images``/``inspect_image``/``history``/``remove_image``, ``refuse_removal``
(image ids whose removal the engine refuses with 409) and ``on_remove`` (called
with the image id before a removal).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import docker.errors
import requests

from dockyard.tasks.engine import step_cgroups

BUILT_LAYER_BYTES = 100


class FakeRegistry:
    """A registry: the digest each ``name:tag`` serves, and (``readers``) which users may read it."""

    def __init__(self) -> None:
        self.served: dict[str, str] = {}
        self.heads: list[str] = []
        self.readers: set[str] | None = None  # None: anyone

    def served_digest(self, image_name: str, tag: str, credentials: Any) -> str | None:
        """``dockyard.tasks.registry.manifests.served_digest``, answered from memory."""
        self.heads.append(f"{image_name}:{tag}")
        if self.readers is not None and (credentials is None or credentials.username not in self.readers):
            return None
        return self.served.get(f"{image_name}:{tag}")


class FakeImage:
    def __init__(self, engine: FakeEngine, image_id: str) -> None:
        self.engine, self.id = engine, image_id

    @property
    def tags(self) -> list[str]:
        return sorted(ref for ref, image_id in self.engine.refs.items() if image_id == self.id)

    def tag(self, repository: str, tag: str) -> bool:
        if tag in self.engine.failing_tags:
            raise docker.errors.APIError(f"cannot tag {repository}:{tag}")
        self.engine.refs[f"{repository}:{tag}"] = self.id
        return True


class FakeImages:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def get(self, name: str) -> FakeImage:
        image_id = self.engine.refs.get(name, name)
        if image_id not in self.engine.image_ids:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return FakeImage(self.engine, image_id)

    def remove(self, reference: str, noprune: bool = False) -> None:
        self.engine.removed.append(reference)
        self.engine.refs.pop(reference, None)


class FakeAPI:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def networks(self, names: list[str]) -> list[dict[str, str]]:
        self.engine.network_queries.append(list(names))
        return [{"Name": "bridge"}] if self.engine.bridge else [{"Name": "bridge-like"}]

    def build(
        self, *, dockerfile: str, decode: bool, labels: dict[str, str], path: str | None = None,
        fileobj: BinaryIO | None = None, custom_context: bool = False, **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        """docker-py's build of a directory (``path``) or of a context tar (``fileobj``, ``custom_context``)."""
        if fileobj is not None:
            assert custom_context, "a tar is only a context with custom_context=True"
            with tarfile.open(fileobj=fileobj, mode="r:") as tar:
                member = tar.extractfile(dockerfile)
                assert member is not None
                content = member.read().decode()
                self.engine.sources.append({"custom_context": custom_context, "members": tar.getnames()})
        else:
            content = (Path(str(path)) / dockerfile).read_text()
            self.engine.sources.append({"path": path})
        self.engine.builds.append({"dockerfile": content, "labels": labels, **kwargs})
        self.engine.build_queries.append(dict(step_cgroups.current_query() or {}))  # the limits a real engine gets as parameters
        if self.engine.build_error:
            error = self.engine.build_error
            if self.engine.build_error_once:
                self.engine.build_error = None
            yield {"stream": "Step 1/1 : FROM private/base\n"}
            yield {"error": error}
            return
        image_id = f"sha256:{len(self.engine.builds):064x}"
        yield {"stream": "Step 1/1 : FROM scratch\n"}
        yield {"aux": {"ID": image_id}}
        self.engine.image_ids.add(image_id)
        self.engine.layers.setdefault(image_id, [(f"sha256:layer-of-{image_id[7:]}", BUILT_LAYER_BYTES)])
        self.engine.refs[kwargs["tag"]] = image_id
        yield {"stream": f"Successfully built {image_id[7:19]}\n"}

    def images(self) -> list[dict[str, Any]]:
        """The top-level images: id and tags."""
        return [{"Id": image_id, "RepoTags": FakeImage(self.engine, image_id).tags} for image_id in sorted(self.engine.image_ids)]

    def _known(self, image_id: str) -> str:
        found = self.engine.refs.get(image_id, image_id)
        if found not in self.engine.image_ids:
            raise docker.errors.ImageNotFound(f"No such image: {image_id}")
        return found

    def inspect_image(self, image_id: str) -> dict[str, Any]:
        found = self._known(image_id)
        return {"Id": found, "RootFS": {"Type": "layers", "Layers": [diff for diff, _ in self.engine.layers.get(found, [])]}}

    def history(self, image_id: str) -> list[dict[str, Any]]:
        """Newest first, a 0-byte entry without a layer on top, as the engine gives it."""
        found = self._known(image_id)
        return [{"Size": 0, "CreatedBy": "LABEL"}] + [{"Size": size} for _, size in reversed(self.engine.layers.get(found, []))]

    def remove_image(self, image: str, force: bool = False, noprune: bool = False) -> list[dict[str, str]]:
        found = self._known(image)
        if self.engine.on_remove is not None:
            self.engine.on_remove(found)
        if found in self.engine.refuse_removal:
            response = requests.Response()
            response.status_code = 409
            raise docker.errors.APIError("conflict: image has dependent child images", response=response)
        self.engine.delete(found)
        self.engine.removed.append(found)
        return [{"Deleted": found}]

    def push(self, repository: str, tag: str | None, stream: bool, decode: bool) -> Iterator[dict[str, Any]]:
        self.engine.pushes.append(f"{repository}:{tag}")
        if self.engine.push_missing:
            raise docker.errors.ImageNotFound(f"No such image: {repository}:{tag}")
        yield {"status": f"The push refers to repository [{repository}]"}
        if self.engine.push_error and self.engine.push_error_on in (None, tag):
            yield {"error": self.engine.push_error}
            return
        image_id = self.engine.refs.get(f"{repository}:{tag}", "")
        digest = self.engine.digests.setdefault(image_id, f"sha256:digest-of-{tag}")  # one manifest per image
        self.engine.registry.served[f"{repository}:{tag}"] = digest
        yield {"status": f"{tag}: digest: {digest} size: 528"}
        yield {"progress": "", "aux": {"Tag": tag, "Digest": digest, "Size": 528}}


class FakeEngine:
    """One Docker engine; ``share`` gives another client of the same engine (images shared, logins not)."""

    def __init__(self, share: FakeEngine | None = None) -> None:
        self.image_ids: set[str] = share.image_ids if share else set()
        self.refs: dict[str, str] = share.refs if share else {}
        self.builds: list[dict[str, Any]] = share.builds if share else []
        self.pushes: list[str] = share.pushes if share else []
        self.sources: list[dict[str, Any]] = share.sources if share else []
        self.removed: list[str] = share.removed if share else []
        self.digests: dict[str, str] = share.digests if share else {}
        self.layers: dict[str, list[tuple[str, int]]] = share.layers if share else {}
        self.refuse_removal: set[str] = share.refuse_removal if share else set()
        self.on_remove: Callable[[str], None] | None = None
        self.registry: FakeRegistry = share.registry if share else FakeRegistry()
        self.build_error: str | None = None
        self.build_error_once = False
        self.push_error: str | None = None
        self.push_error_on: str | None = None
        self.push_missing = False
        self.failing_tags: set[str] = set()
        self.bridge = True
        self.network_queries: list[list[str]] = []
        self.build_queries: list[dict[str, str]] = share.build_queries if share else []
        self.info_answer: dict[str, Any] = {"MemTotal": 8 * 1024**3, "NCPU": 4, "CgroupDriver": "none", "CgroupVersion": "2"}
        self.login_error: str | None = None
        self.logins: list[dict[str, Any]] = []
        self.images = FakeImages(self)
        self.api = FakeAPI(self)

    def info(self) -> dict[str, Any]:
        """``docker info``: the host's memory, CPUs and cgroups (none a worker writes to, unless a test says so)."""
        return dict(self.info_answer)

    def login(self, **kwargs: Any) -> dict[str, str]:
        if self.login_error:
            raise docker.errors.APIError(self.login_error)
        self.logins.append(kwargs)
        return {"Status": "Login Succeeded"}

    def add_image(self, image_id: str, layers: list[tuple[str, int]], tags: tuple[str, ...] = ()) -> str:
        """An image made outside the fakes' builds (a base image, another tool's image)."""
        self.image_ids.add(image_id)
        self.layers[image_id] = list(layers)
        for reference in tags:
            self.refs[reference] = image_id
        return image_id

    def delete(self, image_id: str) -> None:
        """The image is removed behind dockyard's back."""
        self.image_ids.discard(image_id)
        for ref in [ref for ref, found in self.refs.items() if found == image_id]:
            del self.refs[ref]


class Output(list[str]):
    """An output sink that keeps what it is given."""

    def __call__(self, text: str) -> None:
        self.append(text)


def context_tar(**files: bytes) -> io.BytesIO:
    """A context tar in memory with these files, read from the start."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    buffer.seek(0)
    return buffer
