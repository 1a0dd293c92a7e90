"""One history record: what a build or push was, where it ran, how it ended, and a build's steps."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["build", "push"]
Outcome = Literal["built", "joined", "hit", "failed", "cancelled"]


class StepRecord(BaseModel):
    """One step of a build, as the engine's own output tells it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int = Field(ge=1, description="the step's place in the build, from 1")
    name: str = Field(description="the instruction, e.g. 'RUN make'")
    duration_s: float | None = Field(None, ge=0, description="how long it ran; None if the output did not tell")
    cached: bool = Field(description="the engine's layer cache served it")


class BuildRecord(BaseModel):
    """A finished build or push. ``id`` is its Celery task id (or a caller's own id for a hit it answered itself)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    kind: Kind
    team: str
    image_name: str
    tags: list[str] = Field(default_factory=list, description="the tag first, then the additional tags")
    key: str | None = Field(None, description="the build key (builds) or push key (pushes)")
    host: str | None = None
    backend: str | None = Field(None, description="'docker-py' or 'buildx' (builds)")
    outcome: Outcome
    error_type: str | None = Field(None, description="the error's class name, when the outcome is failed")
    error: str | None = Field(None, description="the error's message, cut short")
    queued_at: float | None = Field(None, description="epoch seconds the request was sent, when the message tells")
    started_at: float | None = None
    finished_at: float
    duration_s: float | None = Field(None, ge=0)
    stood_for_s: float | None = Field(
        None, ge=0, description="a hit or join: the duration of the build it stood for (engine time saved)"
    )
    digest: str | None = Field(None, description="pushes: the pushed digest")
    image_id: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    output_key: str | None = Field(None, description="the Redis stream of the build's live output (its team's)")
    output_from: str | None = Field(None, description="the stream id this build's output starts after ('0' for the start)")
    output_to: str | None = Field(None, description="the id of the build's last line in that stream, when it ended")

    @property
    def steps_cached(self) -> int:
        """How many of this build's steps the engine's layer cache served."""
        return sum(1 for step in self.steps if step.cached)


class InFlight(BaseModel):
    """A build or push running now: what a dashboard and ``dockyard logs --follow`` show before its record exists."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    kind: Kind
    team: str
    image_name: str
    tags: list[str] = Field(default_factory=list)
    key: str | None = None
    host: str
    backend: str | None = None
    queued_at: float | None = None
    started_at: float
    output_key: str | None = None
    output_from: str | None = None
