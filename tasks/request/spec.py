"""The requests dockyard runs, each with its one validator: ``BuildOptions``, ``BuildSpec``, ``PushRequest``.

The caller validates its arguments with these models before anything is
sent; the worker validates the message as received with the same models
(``parse``), so a hand-made message gets exactly the caller's checks.

- ``BuildOptions``: prefect-docker's build arguments, checked (name, tags,
  never an empty one, backend, Dockerfile path, build options, build
  arguments a mapping of strings).
- ``BuildLimits``: the resource limits a build asks for, less than the
  farm's (``dockyard.tasks.engine.limits``); not part of the build key.
- ``BuildSpec``: the options plus the context's identity and the build key;
  the key is recomputed from the fields, so a message cannot claim another.
- ``PushRequest``: prefect-docker's push arguments, checked; credentials
  sealed (``{"sealed": ...}``) or, on the worker after opening, in clear.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from dockyard.config.settings import Settings
from dockyard.tasks.request.build_networks import NetworkPolicy
from dockyard.tasks.request.build_options import refused_option, unknown_options
from dockyard.config.teams import TEAM_NAME
from dockyard.tasks.request.cache_key import build_key, canonical
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.naming import validate_image_name, validate_tag

BACKENDS = ("docker-py", "buildx")
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
BUILD_ARGS_OPTIONS = ("buildargs", "build_args")  # docker-py's name and buildx's: the engine takes strings only
EMPTY_TAG = "tag must not be empty: give a tag, or tag=None for a timestamp tag."
MULTI_PLATFORM_NEEDS_PUSH = (
    "Multi-platform builds require push=True because buildx cannot "
    "load multi-platform results into the local Docker daemon. "
    "Either set push=True or build for a single platform."
)


def _image_name(value: str) -> str:
    validate_image_name(value)
    return value


def _tag(value: str) -> str:
    validate_tag(value)
    return value


def _relative_path(value: str) -> str:
    """A path inside the build context: relative, without ``..``."""
    path = PurePosixPath(value)
    if value == "" or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError(f"Path {value!r} must be inside the build context (relative, without '..').")
    return value


def _backend(value: object) -> object:
    if value not in BACKENDS:
        raise ValueError(f"Invalid build_backend {value!r}. Expected 'docker-py' or 'buildx'.")
    return value


def _credentials(value: object) -> object:
    """Credentials are sealed, or a mapping of the reference's keys."""
    if value is None or (isinstance(value, dict) and "sealed" in value and set(value) <= {"sealed", "repository"}):
        return value
    if not isinstance(value, dict):
        raise ValueError("credentials must be a mapping with username, password and registry_url.")
    unknown = set(value) - set(Credentials.model_fields)
    if unknown:
        raise ValueError(f"Unknown credentials keys: {sorted(unknown)}.")
    return value


Backend = Annotated[Literal["docker-py", "buildx"], BeforeValidator(_backend)]
ImageName = Annotated[str, AfterValidator(_image_name)]
Tag = Annotated[str, AfterValidator(_tag)]
RelativePath = Annotated[str, AfterValidator(_relative_path)]
ImageId = Annotated[str, Field(pattern=DIGEST_PATTERN)]
Model = TypeVar("Model", bound="Request")


class Request(BaseModel):
    """A request model: no unknown fields, no type coercion, one ``parse`` for both ends."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @classmethod
    def parse(cls: type[Model], data: object) -> Model:
        """Validate ``data`` (a message or the caller's arguments); ``InvalidInput`` if it is wrong."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors in one line: dockyard's own messages as they are, others as ``field: message``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "request"
        if error["type"] == "value_error":
            parts.append(str(error["msg"]).removeprefix("Value error, "))
        else:
            parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def platforms_of(build_kwargs: dict[str, Any]) -> list[str] | None:
    """``platforms`` (a list) or ``platform`` (a string or list), as prefect-docker accepts them."""
    platforms = build_kwargs.get("platforms")
    platform = build_kwargs.get("platform")
    if platform and not platforms:
        platforms = [platform] if isinstance(platform, str) else platform
    if platforms is not None and not (isinstance(platforms, list) and all(isinstance(p, str) for p in platforms)):
        raise ValueError("platforms must be a list of strings such as ['linux/amd64']")
    return platforms


def check_build_args(option: str, given: object) -> None:
    """``buildargs``/``build_args`` is None or a mapping of strings to strings (values unnamed: they may be secret)."""
    if given is None:
        return
    if not isinstance(given, dict):
        raise ValueError(f"{option} must be a mapping of strings to strings such as {{'NAME': 'value'}}, not a {type(given).__name__}")
    for name, value in given.items():
        if not isinstance(name, str):
            raise ValueError(f"{option} must be a mapping of strings to strings: the name {name!r} is a {type(name).__name__}")
        if not isinstance(value, str):
            raise ValueError(f"{option} must be a mapping of strings to strings: {name!r} is given a {type(value).__name__}")


def check_build_kwargs(build_kwargs: dict[str, Any], backend: str) -> None:
    """Build options must be known to the backend, JSON, labels a mapping of strings; several platforms need push."""
    unknown = unknown_options(build_kwargs, backend)
    if unknown:
        raise ValueError(f"Unknown or wrong build argument(s) {unknown} for the {backend} backend.")
    canonical(build_kwargs)  # refuses values that JSON cannot carry
    labels = build_kwargs.get("labels")
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
    ):
        raise ValueError(f"labels must be a mapping of strings, not {type(labels).__name__}")
    if "path" in build_kwargs and not isinstance(build_kwargs["path"], str):
        raise ValueError("path must be a string")
    for option in BUILD_ARGS_OPTIONS:
        check_build_args(option, build_kwargs.get(option))
    if backend == "buildx":
        platforms = platforms_of(build_kwargs)
        if platforms and len(platforms) > 1 and not build_kwargs.get("push", False):
            raise ValueError(MULTI_PLATFORM_NEEDS_PUSH)


# a request's limit -> the farm's setting of it (DOCKYARD_<SETTING>)
LIMIT_SETTINGS = {"memory_bytes": "build_memory_bytes", "cpus": "build_cpus", "pids": "build_pids"}
MIN_LIMIT_MEMORY_BYTES = 6 * 1024**2  # the engine refuses a memory limit below 6 MiB
MIN_LIMIT_PIDS = 8  # a step's shell, its command and a pipe or two


class BuildLimits(Request):
    """Resource limits of each step of a build: what a request asks for (any left out: the farm's),
    or the farm's own. A request may ask for less than the farm allows, never more."""

    memory_bytes: Annotated[int, Field(ge=MIN_LIMIT_MEMORY_BYTES)] | None = None
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = None
    pids: Annotated[int, Field(ge=MIN_LIMIT_PIDS)] | None = None


def limits_refusal(requested: BuildLimits | None, container_limits: object, allowed: BuildLimits) -> str | None:
    """Why ``requested`` (and docker-py's ``container_limits.memory``) is more than ``allowed``; None if it is not."""
    asked = [(f"limits.{name}", name, value) for name, value in (requested.model_dump() if requested else {}).items()]
    if isinstance(container_limits, dict) and isinstance(container_limits.get("memory"), int) and container_limits["memory"] > 0:
        asked.append(("container_limits.memory", "memory_bytes", container_limits["memory"]))
    for name, field, value in asked:
        limit = getattr(allowed, field)
        if value is not None and limit is not None and value > limit:
            setting = LIMIT_SETTINGS[field]
            return (
                f"This build asks for {name}={value}, more than the farm allows ({limit}, "
                f"DOCKYARD_{setting.upper()}): a build may ask for smaller limits, never larger."
            )
    return None


def configured_limits(settings: Settings) -> BuildLimits:
    """The limits ``settings`` name explicitly (the caller knows no host's computed defaults)."""
    return BuildLimits(
        memory_bytes=settings.build_memory_bytes or None, cpus=settings.build_cpus or None, pids=settings.build_pids or None,
    )


class BuildOptions(Request):
    """prefect-docker's build arguments, validated; ``image_name`` already qualified."""

    image_name: ImageName
    tag: Tag
    additional_tags: list[Tag] = Field(default_factory=list)
    dockerfile: RelativePath = "Dockerfile"
    build_backend: Backend = "docker-py"
    build_kwargs: dict[str, Any] = Field(default_factory=dict)
    ignore_cache: bool = False
    limits: BuildLimits | None = None  # smaller limits than the farm's; never in the build key (they cannot change the image)

    @field_validator("tag", mode="before")
    @classmethod
    def _tag_given(cls, value: object) -> object:
        if value == "":  # None means a timestamp tag (filled in by the caller); "" is a mistake
            raise ValueError(EMPTY_TAG)
        return value

    @model_validator(mode="after")
    def _options_fit_backend(self) -> BuildOptions:
        check_build_kwargs(self.build_kwargs, self.build_backend)
        return self

    @property
    def tags(self) -> list[str]:
        return [self.tag, *self.additional_tags]

    def check_allowed(self, settings: Settings, *, networks: NetworkPolicy | None = None) -> None:
        """Refuse options that reach the build host unless ``settings`` allow them, and networks the farm's
        policy does not (caller and worker; ``networks``: the worker's engine's policy)."""
        reason = refused_option(self.build_kwargs, self.build_backend, settings, networks=networks)
        if reason is None:
            reason = limits_refusal(self.limits, self.build_kwargs.get("container_limits"), configured_limits(settings))
        if reason is not None:
            raise InvalidInput(reason)

    @property
    def references(self) -> list[str]:
        return [f"{self.image_name}:{tag}" for tag in self.tags]


def dockerfile_digest(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def auto_dockerfile_bytes(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


class BuildSpec(BuildOptions):
    """Everything a worker needs to run a build, as JSON; its key is checked against its content."""

    dockerfile_lines: list[str] | None = None
    dockerfile_digest: Annotated[str, Field(pattern=DIGEST_PATTERN)]
    context_digest: Annotated[str, Field(pattern=DIGEST_PATTERN)]
    context_size: Annotated[int, Field(ge=0)]
    context_path: str | None = None
    sealed_secrets: dict[str, str] | None = None
    secret_ids: list[str] = Field(default_factory=list)
    secrets_owner: Annotated[str, Field(pattern=TEAM_NAME)] | None = None  # the team whose secrets these are: in the key
    base_images: list[str] = Field(default_factory=list)  # the FROM images (dockyard.tasks.registry.base_images), checked by the worker
    key: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

    @model_validator(mode="after")
    def _key_matches_content(self) -> BuildSpec:
        if self.dockerfile_lines is not None:
            if self.dockerfile != "auto":
                raise ValueError("dockerfile_lines go only with dockerfile='auto'")
            if dockerfile_digest(auto_dockerfile_bytes(self.dockerfile_lines)) != self.dockerfile_digest:
                raise ValueError("dockerfile_digest does not match dockerfile_lines")
        elif self.dockerfile == "auto":
            raise ValueError("dockerfile='auto' needs dockerfile_lines")
        if not (bool(self.sealed_secrets) == bool(self.secret_ids) == bool(self.secrets_owner)):
            raise ValueError("sealed_secrets, secret_ids and secrets_owner go together")
        if "secrets" in self.build_kwargs:
            raise ValueError("build secrets travel sealed, not in build_kwargs")
        if self.key != spec_key(self):
            raise ValueError("key does not match the spec's content")
        return self


def spec_key(spec: BuildSpec) -> str:
    """The build key of ``spec``'s content: context, Dockerfile, backend and options.

    ``spec.limits`` is left out on purpose: a limit can make a build fail, never make it produce
    another image, so requests that differ only in limits share one build and its cache entry.
    """
    options = dict(spec.build_kwargs)
    if spec.secret_ids:
        options["secrets"] = sorted(spec.secret_ids)
        options["secrets_owner"] = spec.secrets_owner  # another team's identical build has other secrets: another key
    if spec.base_images:
        options["from"] = list(spec.base_images)  # no build option is called "from"
    return build_key(
        context_digest=spec.context_digest,
        dockerfile_digest=spec.dockerfile_digest,
        build_backend=spec.build_backend,
        build_kwargs=options,
    )


class Credentials(Request):
    """prefect-docker's registry credentials."""

    username: Annotated[str, Field(min_length=1)]
    password: Annotated[str, Field(min_length=1)]
    registry_url: str | None = None
    reauth: bool = True


class Sealed(Request):
    """Credentials sealed by ``dockyard.tasks.request.sealing``: only a worker can open them, for the
    sealing team and, when set, only for a push to ``repository``."""

    sealed: Annotated[str, Field(min_length=1)]
    repository: ImageName | None = None


class PushRequest(Request):
    """prefect-docker's push arguments, validated; ``image_name`` already qualified."""

    image_name: ImageName
    tag: Tag | None = None
    additional_tags: list[Tag] = Field(default_factory=list)
    credentials: Annotated[Sealed | Credentials | None, BeforeValidator(_credentials)] = None
    ignore_cache: bool = False
    build_backend: Backend = "docker-py"
    image_id: ImageId | None = None  # the image to push; set by a chain or the caller, never a tag lookup

    @property
    def tags(self) -> list[str]:
        return [self.tag or "latest", *self.additional_tags]

    @property
    def reference(self) -> str:
        return f"{self.image_name}:{self.tag or 'latest'}"

