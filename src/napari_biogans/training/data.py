"""Real batches in pairs form ``(B, C, 2, H, W)`` in [-1, 1], drawn on the training device.

Three ways to draw, one per model family:

* ``pooled`` (C = 1): cells of all chosen proteins pooled, labels ignored (the joint models);
* ``per-class`` (C classes): every class gets its own batch of its own cells (star, one-class);
* ``composite`` (C classes, red shared): METHODS A.3's multichannel composites, built from
  nearest neighbours on the red channel (mined once, batched, cached on disk).

The whole stack lives on the device as uint8, and indices, flips and neighbour choices come
from one ``torch.Generator`` there, so a batch costs no host transfer and a seed fixes it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..data.lin import CellStack

MODES = ("pooled", "per-class", "composite")
CACHE_ENV = "BIOGANS_CACHE"


def stack_hash(stack: CellStack) -> str:
    """SHA-256 of pixels and labels: what a checkpoint records as its training data."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(stack.images).tobytes())
    digest.update(stack.class_index.astype(np.int64).tobytes())
    digest.update("\0".join(stack.class_names).encode())
    return digest.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "napari-biogans"))


def mine_neighbours(stack: CellStack, k: int = 5, chunk: int = 2048, device="cpu") -> np.ndarray:
    """For every cell and class, the ``k`` nearest cells of that class by L2 on the red channel.

    Distances are in [0, 1] scale as in the reference; computed in chunks of queries with one
    matrix product each. Returns indices into ``stack`` of shape (N, C, k).
    """
    red = torch.as_tensor(stack.images[:, 0], device=device).flatten(1).float() / 255.0
    sq = (red * red).sum(1)
    labels = torch.as_tensor(stack.class_index, device=device)
    out = torch.empty(len(stack), len(stack.class_names), k, dtype=torch.int64)
    for c in range(len(stack.class_names)):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < k:
            raise ValueError(f"class {stack.class_names[c]} has {len(members)} cells; composites need at least {k}")
        for start in range(0, len(stack), chunk):
            query = red[start : start + chunk]
            dist = sq[start : start + chunk, None] - 2 * query @ red[members].T + sq[members][None]
            out[start : start + chunk, c] = members[dist.topk(k, largest=False).indices].cpu()
    return out.numpy()


def cached_neighbours(stack: CellStack, k: int = 5, device="cpu") -> np.ndarray:
    path = cache_dir() / "neighbours" / f"{stack_hash(stack)[:32]}-k{k}.npy"
    if path.is_file():
        return np.load(path)
    neighbours = mine_neighbours(stack, k=k, device=device)
    from ..atomic import atomic_write

    atomic_write(path, lambda tmp: np.save(tmp, neighbours))
    return neighbours


class CellBatches:
    """Draws real batches in pairs form; ``flips`` are the reference's random H and V flips."""

    def __init__(self, stack: CellStack, mode: str, device, generator: torch.Generator, flips: bool = True):
        if mode not in MODES:
            raise ValueError(f"unknown batch mode '{mode}'; one of {MODES}")
        self.mode, self.device, self.generator, self.flips = mode, torch.device(device), generator, flips
        self.n_classes = 1 if mode == "pooled" else len(stack.class_names)
        self.images = torch.as_tensor(stack.images, device=self.device)
        labels = torch.as_tensor(stack.class_index, device=self.device)
        self.members = [torch.nonzero(labels == c).flatten() for c in range(len(stack.class_names))]
        empty = [stack.class_names[c] for c, m in enumerate(self.members) if len(m) == 0]
        if empty and mode != "pooled":
            raise ValueError(f"no cells for {empty}")
        self.labels = labels
        if mode == "composite":
            self.neighbours = torch.as_tensor(cached_neighbours(stack), device=self.device)

    def _randint(self, high: int, shape) -> torch.Tensor:
        return torch.randint(high, shape, device=self.device, generator=self.generator)

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        """One random horizontal and vertical flip per sample (all its classes flip together)."""
        if not self.flips:
            return x
        b = x.shape[0]
        shape = (b,) + (1,) * (x.ndim - 1)
        h = torch.rand(shape, device=self.device, generator=self.generator) < 0.5
        v = torch.rand(shape, device=self.device, generator=self.generator) < 0.5
        x = torch.where(h, x.flip(-1), x)
        return torch.where(v, x.flip(-2), x)

    def __call__(self, batch_size: int) -> torch.Tensor:
        if self.mode == "pooled":
            idx = self._randint(len(self.images), (batch_size, 1))
        elif self.mode == "per-class":
            idx = torch.stack([m[self._randint(len(m), (batch_size,))] for m in self.members], dim=1)
        else:
            return self._flip(self._composites(batch_size)).float() / 127.5 - 1.0
        return self._flip(self.images[idx]).float() / 127.5 - 1.0

    def _composites(self, batch_size: int) -> torch.Tensor:
        """METHODS A.3: masked red, own green in its class slot, neighbours' greens elsewhere."""
        query = self._randint(len(self.images), (batch_size,))
        own_class = self.labels[query]
        k = self.neighbours.shape[-1]
        pick = self.neighbours[query, :, :].gather(2, self._randint(k, (batch_size, self.n_classes, 1))).squeeze(2)
        classes = torch.arange(self.n_classes, device=self.device)
        source = torch.where(classes[None] == own_class[:, None], query[:, None], pick)  # (B, C)
        red = self.images[query, 0]
        mask = red > 0
        greens = self.images[source, 1] * mask[:, None]
        return torch.stack([red[:, None].expand_as(greens) * mask[:, None], greens], dim=2)
