"""FID with a LIN classifier (the Skripnyuk thesis, section 4.3.5).

Inception features say little about fission-yeast cells, so the thesis trained its own protein
classifier and took the Fréchet distance between Gaussians fitted to its penultimate activations:

    d² = ‖m_r − m_f‖² + Tr(C_r + C_f − 2 (C_r C_f)^½)

Here the classifier is a small CNN on the (red, green) pair, trained on the cells at hand
(simulated ones here; real LIN when the user has them). Its sanity checks follow the thesis:
intra-class FID (train vs test of one protein) must sit well below inter-class FID, and similar
proteins (Arp3/Fim1, Tea1/Tea4) sit near each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.lin import CellStack
from ..jobs import Job, Update
from ..models.fluorescence import tower_plan


class LinClassifier(nn.Module):
    """Conv-BN-LeakyReLU down to the B.1 base size, global average pool, a ``features``-wide layer, logits."""

    def __init__(self, n_classes: int, image_size=(48, 80), width: int = 32, features: int = 128):
        super().__init__()
        _, n = tower_plan(image_size)
        layers, c_in = [], 2
        for i in range(n):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, features),
                                  nn.ReLU())
        self.head = nn.Linear(features, n_classes)
        self.config = {"n_classes": int(n_classes), "image_size": list(image_size), "width": int(width),
                       "features": int(features)}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, features): what FID and profiling compare."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class TrainedClassifier:
    model: LinClassifier
    class_names: list[str]
    accuracy: float  # on the held-out cells given to train_classifier
    device: torch.device


def _float(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(images), dtype=torch.float32) / 127.5 - 1.0


def train_classifier(train: CellStack, test: CellStack | None = None, iterations: int = 500,
                     batch_size: int = 64, width: int = 32, device="cpu", seed: int = 0) -> Job:
    """Train the protein classifier on ``train`` (Adam, random flips); accuracy on ``test`` if given.
    A job returning a :class:`TrainedClassifier`."""
    device = torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = LinClassifier(len(train.class_names), train.image_size, width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = train.images, torch.as_tensor(train.class_index, dtype=torch.long)
    model.train()
    report_every = max(1, iterations // 200)
    for step in range(iterations):
        rows = rng.integers(0, len(images), batch_size)
        x = _float(images[rows]).to(device)
        flips = [d for d in (2, 3) if rng.random() < 0.5]  # cells have no preferred end or side
        if flips:
            x = x.flip(flips)
        loss = nn.functional.cross_entropy(model(x), labels[rows].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % report_every == 0 or step == iterations - 1:
            yield Update(step + 1, iterations, "LIN classifier")
    model.eval()
    accuracy = float("nan")
    if test is not None:
        if list(test.class_names) != list(train.class_names):
            raise ValueError(f"test proteins {test.class_names} differ from the training ones {train.class_names}")
        predicted = np.concatenate([logits.argmax(1) for logits in _batched(model, test.images, device, "logits")])
        accuracy = float(np.mean(predicted == test.class_index))
    return TrainedClassifier(model, list(train.class_names), accuracy, device)


def _batched(model: LinClassifier, images: np.ndarray, device, what: str, batch: int = 256):
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = _float(images[start : start + batch]).to(device)
            out = model(x) if what == "logits" else model.features(x)
            yield out.double().cpu().numpy()


def classifier_features(classifier: TrainedClassifier, images: np.ndarray) -> np.ndarray:
    """(N, features) float64 penultimate activations of uint8 pairs (N, 2, H, W)."""
    if len(images) == 0:
        return np.zeros((0, classifier.model.config["features"]))
    return np.concatenate(list(_batched(classifier.model, images, classifier.device, "features")))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N, d) and ``b`` (M, d).

    Tr (C_a C_b)^½ is the nuclear norm (sum of singular values) of A_c B_cᵀ / √((N−1)(M−1)) with A_c,
    B_c the centred features: exact, stable with singular covariances (fewer cells than features)
    and, being an N × M matrix, fast enough for permutation tests. With more cells than features
    the same norm comes from the d × d matrix C_a^½ C_b^½.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least two samples on each side")
    a_c, b_c = a - a.mean(0), b - b.mean(0)
    scale = np.sqrt((len(a) - 1) * (len(b) - 1))
    if min(len(a), len(b)) <= a.shape[1]:
        cross = a_c @ b_c.T / scale
    else:
        cross = _psd_root(a_c.T @ a_c / (len(a) - 1)) @ _psd_root(b_c.T @ b_c / (len(b) - 1))
    trace_root = np.linalg.svd(cross, compute_uv=False).sum()
    traces = (np.sum(a_c**2) / (len(a) - 1)) + (np.sum(b_c**2) / (len(b) - 1))
    value = float(np.sum((a.mean(0) - b.mean(0)) ** 2) + traces - 2 * trace_root)
    return max(value, 0.0)


def _psd_root(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def class_fid_matrix(classifier: TrainedClassifier, a: CellStack, b: CellStack) -> np.ndarray:
    """FID between every class of ``a`` (rows) and every class of ``b`` (columns): the thesis's sanity matrix."""
    fa = classifier_features(classifier, a.images)
    fb = classifier_features(classifier, b.images)
    rows = [fa[a.class_index == i] for i in range(len(a.class_names))]
    cols = [fb[b.class_index == j] for j in range(len(b.class_names))]
    return np.array([[frechet_distance(r, c) for c in cols] for r in rows])


def generator_fid(classifier: TrainedClassifier, generator, real: CellStack, n: int = 500, seed: int = 0) -> dict:
    """FID per protein between ``n`` generated pairs of that protein and the real cells of it."""
    from ..data.lin import to_uint8
    from ..sampling import latent_codes, render

    names = classifier.class_names
    if generator.n_classes > 1 and generator.n_classes != len(names):
        raise ValueError(f"the generator has {generator.n_classes} classes, the classifier {len(names)}")
    z = latent_codes(n, generator.nz, generator.nz_red, seed)
    pairs = to_uint8(render(generator, z))  # (n, C, 2, H, W)
    real_features = classifier_features(classifier, real.images)
    out = {}
    for c, name in enumerate(names):
        slot = c if generator.n_classes > 1 else 0
        fake = classifier_features(classifier, pairs[:, slot])
        out[name] = frechet_distance(real_features[real.class_index == c], fake)
    return out
