"""What images hold on an engine's disk, layer by layer, each layer counted once.

An image is a chain of layers; images that share a prefix of the chain
(a base image and everything built on it, or the builds of one project that
share its dependency layers) share those layers on disk. A layer is named
here by its chain id (the digest of the chain up to it), so two images share
a layer exactly when they share the chain up to it.

``footprint`` is the bytes of the layers that a set of images uses and no
other image on the engine uses: what removing the whole set would free.
Layer sizes come from the engine's image history (the daemon's own
per-layer sizes), read once per image id (an id names fixed content).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import docker

CACHE_LIMIT = 4096  # image ids whose layers this process remembers


@dataclass(frozen=True)
class ImageLayers:
    """An image's layers, oldest first, as (chain id, bytes)."""

    image_id: str
    layers: tuple[tuple[str, int], ...]

    @property
    def size(self) -> int:
        return sum(size for _chain, size in self.layers)


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain id of each layer: the digest of the layers up to it (OCI's ChainID)."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            chains.append("sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def layer_sizes(history_sizes_oldest_first: Iterable[int], layer_count: int) -> list[int]:
    """Each layer's bytes from the history's sizes: the engine gives a layer's size on its history
    entry and 0 on entries that made no layer, so non-zero sizes go to the layers in order.
    A layer of 0 bytes cannot be told from an entry without a layer; the image's total stays exact."""
    sizes = [size for size in history_sizes_oldest_first if size > 0][:layer_count]
    return sizes + [0] * (layer_count - len(sizes))


def image_layers(image_id: str, diff_ids: list[str], history: list[Mapping[str, Any]]) -> ImageLayers:
    """``ImageLayers`` from an inspect's ``RootFS.Layers`` and the history the engine gives (newest first)."""
    sizes = layer_sizes([int(entry.get("Size") or 0) for entry in reversed(history)], len(diff_ids))
    return ImageLayers(image_id, tuple(zip(chain_ids(diff_ids), sizes)))


def footprint(images: Iterable[ImageLayers], others: Iterable[ImageLayers]) -> int:
    """Bytes of the layers ``images`` use and ``others`` do not, each layer counted once."""
    foreign = {chain for image in others for chain, _size in image.layers}
    sizes: dict[str, int] = {}
    for image in images:
        for chain, size in image.layers:
            if chain not in foreign:
                sizes[chain] = max(size, sizes.get(chain, 0))
    return sum(sizes.values())


_known: dict[str, ImageLayers] = {}
_known_lock = threading.Lock()


def read_layers(client: docker.DockerClient, image_id: str) -> ImageLayers:
    """The layers of ``image_id`` on ``client``'s engine (two API calls the first time, none after)."""
    with _known_lock:
        found = _known.get(image_id)
    if found is not None:
        return found
    diff_ids = list(client.api.inspect_image(image_id).get("RootFS", {}).get("Layers") or [])
    found = image_layers(image_id, diff_ids, client.api.history(image_id))
    with _known_lock:
        if len(_known) >= CACHE_LIMIT:
            _known.clear()
        _known[image_id] = found
    return found


def top_level_images(client: docker.DockerClient) -> list[str]:
    """The ids of the engine's images, tagged or dangling, without the classic builder's intermediate
    images (which live and go with the image built on them)."""
    return [str(image["Id"]) for image in client.api.images()]


