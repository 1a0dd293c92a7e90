"""``safe_unpack`` against links built on links: a target is resolved through the links already in the
archive, not read as text, so no chain of in-context-looking links climbs out of the destination.

For every archive it accepts, each unpacked link's ``os.path.realpath`` stays inside the destination
(the text-only ``escaping_links`` of ``test_unpack`` cannot see these chains).
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

import pytest

from dockyard.tasks.context.unpack import safe_unpack
from dockyard.tasks.errors import UnsafeContext
from tests.unit.tasks.context.test_unpack import MAX_BYTES, Member, archive_of, listing

DIR, LINK = tarfile.DIRTYPE, tarfile.SYMTYPE


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    (tmp_path / "outer" / "dest").mkdir(parents=True)
    (tmp_path / "outer" / "flag").write_bytes(b"original flag")
    return tmp_path / "outer" / "dest"


def links_leaving(destination: Path) -> list[str]:
    """Unpacked links whose real path (as the kernel resolves it) is outside ``destination``."""
    root = os.path.realpath(destination)
    bad = []
    for directory, names, files in os.walk(destination):
        for name in [*names, *files]:
            path = Path(directory) / name
            if path.is_symlink():
                real = os.path.realpath(path)
                if real != root and not real.startswith(root + os.sep):
                    bad.append(f"{path.relative_to(destination)} -> {os.readlink(path)} = {real}")
    return bad


def refused(destination: Path, members: list[Member]) -> None:
    outside = listing(destination.parent, skip=destination.name)
    with pytest.raises(UnsafeContext, match="outside the context|too many links"):
        safe_unpack(io.BytesIO(archive_of(members)), destination, max_bytes=MAX_BYTES)
    assert listing(destination.parent, skip=destination.name) == outside


CHAINS = {
    "link to . then climb through it": [
        Member("s", LINK, linkname="."),
        Member("esc", LINK, linkname="s/.."),
    ],
    "link to .. in a directory then climb through it": [
        Member("a", DIR),
        Member("a/l", LINK, linkname=".."),
        Member("esc", LINK, linkname="a/l/.."),
    ],
    "a chain of dot links": [
        Member("s", LINK, linkname="."),
        Member("t", LINK, linkname="s/s/s"),
        Member("esc", LINK, linkname="t/s/../flag"),
    ],
    "the climbing link comes before the link it climbs through": [
        Member("esc", LINK, linkname="later/.."),
        Member("later", LINK, linkname="."),
    ],
    "a link to a link to a directory's parent": [
        Member("a", DIR),
        Member("a/b", DIR),
        Member("a/b/up", LINK, linkname="../.."),
        Member("a/up2", LINK, linkname="b/up"),
        Member("esc", LINK, linkname="a/up2/../x"),
    ],
    "a link in a subdirectory climbing through a sibling link": [
        Member("a", DIR),
        Member("a/here", LINK, linkname="."),
        Member("a/esc", LINK, linkname="here/../.."),
    ],
}


@pytest.mark.parametrize("members", CHAINS.values(), ids=CHAINS.keys())
def test_a_chain_of_links_out_of_the_context_is_refused(destination: Path, members: list[Member]) -> None:
    refused(destination, members)


def test_a_loop_of_links_is_refused_not_followed_forever(destination: Path) -> None:
    refused(destination, [Member("a", LINK, linkname="b"), Member("b", LINK, linkname="a/..")])


def test_chains_that_stay_inside_are_kept(destination: Path) -> None:
    members = [
        Member("app.txt", content=b"hello\n"),
        Member("s", LINK, linkname="."),
        Member("sub", DIR),
        Member("sub/up", LINK, linkname=".."),
        Member("sub/app", LINK, linkname="up/s/app.txt"),
        Member("t", LINK, linkname="s/sub/up/s/sub/.."),
        Member("dangling", LINK, linkname="sub/nothing/.."),
    ]
    safe_unpack(io.BytesIO(archive_of(members)), destination, max_bytes=MAX_BYTES)
    assert (destination / "sub" / "app").read_bytes() == b"hello\n"
    assert os.readlink(destination / "t") == "s/sub/up/s/sub/.."
    assert links_leaving(destination) == []


NAMES = ["a", "b", "d/c", "d/e", "d/f/g"]
STEPS_OF_TARGETS = ["..", ".", "a", "b", "c", "d", "e", "f", "g", "x"]


def random_archive(rng: random.Random) -> list[Member]:
    """Directories ``d`` and ``d/f``, then links among a few names, each to a short random relative path."""
    members = [Member("d", DIR), Member("d/f", DIR)]
    for name in rng.sample(NAMES, rng.randint(1, len(NAMES))):
        target = "/".join(rng.choice(STEPS_OF_TARGETS) for _ in range(rng.randint(1, 4)))
        members.append(Member(name, LINK, linkname=target))
    return members


@pytest.mark.parametrize("seed", range(8))
def test_any_accepted_archive_of_random_links_stays_inside(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    accepted = 0
    for round_ in range(60):
        destination = tmp_path / f"{round_}" / "dest"
        destination.mkdir(parents=True)
        members = random_archive(rng)
        try:
            safe_unpack(io.BytesIO(archive_of(members)), destination, max_bytes=MAX_BYTES)
        except UnsafeContext:
            continue
        accepted += 1
        assert links_leaving(destination) == [], [(m.name, m.linkname) for m in members]
    assert accepted > 0
