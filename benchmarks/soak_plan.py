"""The soak's plan: its names and labels, the requests it sends, and the tiny contexts they build.

A soak sends ``--builds`` requests drawn from ``--distinct`` contexts; tags
vary a little so some requests are "same content, other tags", and the
requests of about a third of the repeated contexts are sent back to back.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from benchmarks import harness

SOAK_REDIS_DB = 10  # the farm uses 0, the bench 12, the tests 13
SOAK_KEY_PREFIX = "dockyard-soak:"
SOAK_REPOSITORY = "dockyard-soak"  # images are <registry>/dockyard-soak/<run>:c<context>-v<variant>
SOAK_LABEL = "io.dockyard.soak.run"  # on every image and RUN container the soak makes; its value is the run id
CONTEXT_LABEL = "io.dockyard.soak.context"  # which of the run's contexts an image or RUN container is
WALL_BUDGET_S = 600.0
CALL_TIMEOUT_S = 240.0  # one build or push call
MEMORY_SAMPLE_S = 5.0
PROGRESS_S = 15.0
FIRST_ERRORS = 5
TAG_VARIANTS = (("v0", 70), ("v1", 20), ("v2", 10))  # tag of a repeated request: mostly the same, some others
BURST_FRACTION = 0.35  # share of repeated contexts whose requests are sent back to back (they join)


@dataclass(frozen=True)
class Request:
    """One build request of the plan; ``push`` also pushes its result."""

    index: int
    context: int
    tag: str
    push: bool


def make_plan(builds: int, distinct: int, push_every: int, rng: random.Random) -> list[Request]:
    """``builds`` requests over ``distinct`` contexts, every context at least once.

    A context requested several times gets mostly its first tag again (an
    identical request) and sometimes another (same content, other tags). The
    requests of about a third of the repeated contexts are sent back to back,
    so they run concurrently; the rest are spread over the run.
    """
    distinct = max(1, min(distinct, builds))
    counts = [1] * distinct
    for _ in range(builds - distinct):
        counts[rng.randrange(distinct)] += 1
    names = [name for name, _ in TAG_VARIANTS]
    weights = [float(weight) for _, weight in TAG_VARIANTS]
    groups: list[list[tuple[int, str]]] = []
    for context, count in enumerate(counts):
        variants = ["v0"] + [rng.choices(names, weights=weights)[0] for _ in range(count - 1)]
        copies = [(context, f"c{context:03d}-{variant}") for variant in variants]
        if count > 1 and rng.random() < BURST_FRACTION:
            groups.append(copies)
        else:
            groups.extend([copy] for copy in copies)
    rng.shuffle(groups)
    flat = [copy for group in groups for copy in group]
    return [
        Request(index, context, tag, push=push_every > 0 and (index + 1) % push_every == 0)
        for index, (context, tag) in enumerate(flat)
    ]


def write_contexts(root: Path, run_id: str, distinct: int) -> list[Path]:
    """One tiny context per distinct build: a Dockerfile and a small file, both unique."""
    paths = []
    for context in range(distinct):
        directory = root / f"ctx-{context:03d}"
        directory.mkdir(parents=True)
        unique = uuid.uuid4().hex
        (directory / "data.txt").write_text(f"soak {run_id} context {context} {unique}\n" + "x" * 200 + "\n")
        (directory / "Dockerfile").write_text(
            f"FROM {harness.base_image()}\n"
            f"LABEL {SOAK_LABEL}={run_id}\n"
            f"LABEL {CONTEXT_LABEL}={context}\n"
            "COPY data.txt /data.txt\n"
            f"RUN echo {unique} > /built\n"
        )
        paths.append(directory)
    return paths

