"""EM evaluation of the SGAN paper (its section 5 and supplement D), on label codes 0/1/2.

* Segmentation accuracy (Table 2): a U-Net segmenter (F_y's architecture, 3-class softmax)
  trained on real sections; generated images are segmented and compared with the labels they
  were rendered from: per-class IU, mean IU and the per-pixel NLL (nats).
* Global statistics (Table 1): cell areas (cytoplasm components bounded by membrane, cells
  cut by the image border left out), mitochondria areas, roundness 4πA/P², mitochondria per
  cell; χ² distances between the real and generated histograms on bins of the real sample for the
  first three, the mean only for mitochondria per cell (as the paper reports it).
* Support size (supplement D): the birthday-paradox test of Arora & Zhang. Label maps are
  binarised per channel and down-sampled 2x; two maps are duplicates when their IU > 0.9.
* Realism: a classifier two-sample test (C2ST) between real and generated EM patches with
  the project's batched critics (one-channel variant).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from ..data.em import MEMBRANE, MITOCHONDRIA, one_hot
from ..jobs import Job, Update

N_CLASSES = 3
# Table 1's χ² statistics; mitochondria per cell is only described (its mean, as the paper gives it): most
# cells hold none, so its histogram is nearly all zeros, real or shuffled, and a χ² of it cannot see a defect
TESTED_STATISTICS = ("cell_area", "mito_area", "mito_roundness")
DESCRIBED_STATISTICS = ("mito_per_cell",)
CHI2_BINS = 10

__all__ = [
    "class_iu", "mean_iu", "train_segmenter", "segment", "segmentation_scores", "label_statistics",
    "global_statistics", "chi2_distance", "histogram_edges", "compare_statistics", "compare_pooled", "binarise",
    "TESTED_STATISTICS", "DESCRIBED_STATISTICS", "CHI2_BINS",
    "pairwise_iu", "find_duplicates", "recalibrate_batchnorm",
    "BirthdayResult", "birthday_test", "label_generator_sampler", "c2st_realism",
]


# ------------------------------------------------------------------------------------------------
# Intersection over union


def class_iu(pred: np.ndarray, truth: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """IU per class over all pixels of all maps; NaN for a class absent from both."""
    pred, truth = np.asarray(pred).ravel().astype(np.int64), np.asarray(truth).ravel().astype(np.int64)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction and truth differ in size: {pred.size} and {truth.size}")
    confusion = np.bincount(truth * n_classes + pred, minlength=n_classes**2).reshape(n_classes, n_classes)
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def mean_iu(pred: np.ndarray, truth: np.ndarray, n_classes: int = N_CLASSES) -> float:
    """Mean IU over the classes present in either map (the FCN definition)."""
    return float(np.nanmean(class_iu(pred, truth, n_classes)))


# ------------------------------------------------------------------------------------------------
# Segmentation accuracy


def _dice_ce_loss(logits, target, class_weights):
    """Class-weighted cross-entropy plus soft Dice (mean over classes): the thin membranes and the
    rare mitochondria count as much as the cytoplasm that fills most pixels."""
    import torch.nn.functional as F

    ce = F.cross_entropy(logits, target, weight=class_weights)
    probs = logits.float().softmax(1)
    truth = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * truth).sum((0, 2, 3))
    dice = (2 * inter + 1) / (probs.sum((0, 2, 3)) + truth.sum((0, 2, 3)) + 1)
    return ce + (1 - dice).mean()


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Inverse square-root class frequencies, normalised to mean 1 (float32, one per class)."""
    freq = np.bincount(np.asarray(labels).ravel(), minlength=N_CLASSES).astype(np.float64) + 1
    w = (freq / freq.sum()) ** -0.5
    return (w / w.mean()).astype(np.float32)


def _jitter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random contrast (×0.8–1.2) and brightness (±0.1) per crop, in [-1, 1] units."""
    n = x.shape[0]
    return np.clip(x * rng.uniform(0.8, 1.2, (n, 1, 1)) + rng.uniform(-0.1, 0.1, (n, 1, 1)), -1, 1).astype(np.float32)


def recalibrate_batchnorm(model, images: np.ndarray, batches: int = 20, crop: int = 160, batch_size: int = 8,
                          device="cpu", seed: int = 0):
    """Batch-norm statistics of the final weights: the running means and variances, averaged over
    ``batches`` random crops (flips, turns, no contrast jitter) instead of trailing the training's moving
    weights (which left the eval-mode U-Net far worse than its training batches). Returns the model in eval mode."""
    import torch

    from ..data.em import random_crops
    from ..models.segmenter import to_input

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    rng = np.random.default_rng(seed)
    crop = min(crop, *images.shape[1:])
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            x, _ = random_crops(images, None, crop, batch_size, rng)
            model(torch.from_numpy(to_input(x))[:, None].to(device))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def train_segmenter(images: np.ndarray, labels: np.ndarray, iterations: int = 6000, crop: int = 192,
                    batch_size: int = 8, width: int = 16, levels: int = 4, lr: float = 2e-3, device="cpu",
                    seed: int = 0, state: dict | None = None, save: Callable[[dict], None] | None = None,
                    save_every: int = 200, stop=None, time_budget: float | None = None) -> Job:
    """Train the shipped segmenter's U-Net (:class:`~napari_biogans.models.segmenter.SegmenterUNet`) on
    sections (S, H, W) uint8 / codes: random crops with flips, 90° turns and contrast jitter, class-weighted
    cross-entropy + Dice, Adam with a cosine learning rate over ``iterations``. A job that returns the model,
    its batch-norm statistics recomputed for the final weights (:func:`recalibrate_batchnorm`).

    ``state`` (from a previous ``save``) resumes where it stopped; ``save(state)`` is called every
    ``save_every`` steps, at the end and when ``stop`` (a :class:`~napari_biogans.jobs.StopFlag`) is set.
    ``time_budget`` (seconds, resumed sessions counted): the schedule runs on whichever of steps and time
    is further along and training ends when either is spent, so a shared CPU still completes it.
    """
    import math
    import time

    import torch

    from ..data.em import random_crops
    from ..models.segmenter import SegmenterUNet, to_input

    torch.manual_seed(seed)
    model = SegmenterUNet(1, N_CLASSES, width, levels).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    start, spent = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        start, spent = int(state["step"]), float(state.get("seconds", 0.0))
    weights = torch.from_numpy(class_weights(labels)).to(device)
    autocast = torch.autocast("cuda", torch.bfloat16) if torch.device(device).type == "cuda" else None

    started = time.monotonic()

    def seconds():
        return spent + time.monotonic() - started

    def snapshot(step):
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng.bit_generator.state,
                "step": step, "seconds": seconds()}

    def progress(step):
        return max(step / iterations, seconds() / time_budget if time_budget else 0.0)

    model.train()
    report_every = max(1, iterations // 200)
    for step in range(start, iterations):
        if progress(step) >= 1:
            break
        for group in opt.param_groups:  # cosine from lr down to lr / 20
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress(step)))))
        x, y = random_crops(images, labels, crop, batch_size, rng)
        x = torch.from_numpy(_jitter(to_input(x), rng))[:, None].to(device)
        y = torch.from_numpy(y.astype(np.int64)).to(device)
        if autocast is None:
            loss = _dice_ce_loss(model(x), y, weights)
        else:
            with autocast:
                loss = _dice_ce_loss(model(x).float(), y, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        last = done == iterations or progress(done) >= 1 or bool(stop)
        if save is not None and (done % save_every == 0 or last):
            save(snapshot(done))
        if done % report_every == 0 or last:
            yield Update(done, iterations, "segmenter", {"loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"]})
        if stop:
            break
    # as many batches as it trained on, up to 20: a tiny test run stays tiny
    return recalibrate_batchnorm(model, images, min(20, max(1, iterations)), crop, batch_size, device, seed)


def segment(model, images: np.ndarray, device="cpu") -> np.ndarray:
    """Class probabilities (N, 3, H, W) for uint8 images (N, H, W) of any size."""
    from ..models.segmenter import segment as run_segmenter

    return run_segmenter(model, images, device)


def segmentation_scores(model, images: np.ndarray, labels: np.ndarray, device="cpu") -> dict:
    """Mean IU, per-class IU and NLL (mean per-pixel −log p(true class), nats) of a segmenter."""
    probs = segment(model, images, device)
    pred = probs.argmax(1)
    truth = labels.astype(np.int64)
    p_true = np.take_along_axis(probs, truth[:, None], 1)[:, 0]
    iu = class_iu(pred, truth)
    return {"mean_iu": float(np.nanmean(iu)), "iu": iu.tolist(),
            "nll": float(-np.log(np.clip(p_true, 1e-12, 1.0)).mean())}


# ------------------------------------------------------------------------------------------------
# Global statistics


def label_statistics(labels: np.ndarray, exclude_border: bool = True) -> dict[str, np.ndarray]:
    """Per-object statistics of one label map, in pixels.

    ``cell_area``: areas of the 4-connected non-membrane components (cells, mitochondria
    included); ``mito_area`` and ``mito_roundness`` (4πA/P², skimage's perimeter, capped at 1) of the
    8-connected mitochondria; ``mito_per_cell``: mitochondria whose pixels mostly lie in each
    cell. Cells (and their mitochondria) touching the border are left out when
    ``exclude_border``: their size is unknown.
    """
    from skimage.measure import regionprops

    labels = np.asarray(labels)
    cells, n_cells = ndi.label(labels != MEMBRANE)
    valid = np.ones(n_cells + 1, dtype=bool)
    valid[0] = False
    if exclude_border:
        valid[np.unique(np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]]))] = False
    cell_area = np.bincount(cells.ravel(), minlength=n_cells + 1)
    mito, _ = ndi.label(labels == MITOCHONDRIA, np.ones((3, 3)))
    areas, roundness, counts = [], [], np.zeros(n_cells + 1, dtype=np.int64)
    for region in regionprops(mito):
        owner = np.bincount(cells[tuple(region.coords.T)]).argmax()
        if not valid[owner]:
            continue
        counts[owner] += 1
        areas.append(region.area)
        # at most 1 (the isoperimetric bound): skimage's perimeter of a few-pixel object is too short
        # (0 for one pixel), which gave specks roundness up to 4π and swamped the mean
        roundness.append(min(1.0, 4 * np.pi * region.area / max(region.perimeter, 1.0) ** 2))
    return {
        "cell_area": cell_area[valid].astype(np.float64),
        "mito_area": np.asarray(areas, dtype=np.float64),
        "mito_roundness": np.asarray(roundness, dtype=np.float64),
        "mito_per_cell": counts[valid].astype(np.float64),
    }


def global_statistics(label_maps, exclude_border: bool = True) -> dict[str, np.ndarray]:
    """:func:`label_statistics` pooled over several maps (an iterable of (H, W) maps)."""
    pooled: dict[str, list] = {}
    for labels in label_maps:
        for key, values in label_statistics(labels, exclude_border).items():
            pooled.setdefault(key, []).append(values)
    return {key: np.concatenate(values) for key, values in pooled.items()}


def chi2_distance(h1: np.ndarray, h2: np.ndarray) -> float:
    """χ² distance ½·Σ (p − q)² / (p + q) between two histograms, each normalised to sum 1."""
    p, q = np.asarray(h1, np.float64), np.asarray(h2, np.float64)
    p, q = p / max(p.sum(), 1e-300), q / max(q.sum(), 1e-300)
    total = p + q
    nz = total > 0
    return float(0.5 * np.sum((p[nz] - q[nz]) ** 2 / total[nz]))


def histogram_edges(reference: np.ndarray, bins: int = CHI2_BINS) -> np.ndarray:
    """Edges of ``bins`` equal-count bins of the ``reference`` (real) sample, the outer two open (±∞) so that
    every value of the other sample lands in a bin. Bins of the real sample alone: bins of both samples pooled
    were set by whichever sample was larger, and a generated set of thousands of one-pixel specks put every
    edge on one value (a single bin: χ² 0, a perfect score for the worst maps)."""
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.concatenate([[-np.inf], inner, [np.inf]])


def compare_statistics(real_maps, fake_maps, bins: int = CHI2_BINS, exclude_border: bool = True) -> dict:
    """Table 1: per statistic, real and generated means, and for :data:`TESTED_STATISTICS` the χ² distance of
    their histograms on :func:`histogram_edges` of the real sample."""
    return compare_pooled(global_statistics(real_maps, exclude_border), global_statistics(fake_maps, exclude_border),
                          bins)


def compare_pooled(real: dict, fake: dict, bins: int = CHI2_BINS) -> dict:
    """:func:`compare_statistics` on statistics already pooled by :func:`global_statistics`; ``real`` sets the
    bins. A tested statistic with no objects on either side has χ² NaN (nothing compared, not a perfect 0)."""
    out = {}
    for key in real:
        a, b = real[key], fake[key]
        out[key] = {"real_mean": float(a.mean()) if a.size else float("nan"),
                    "fake_mean": float(b.mean()) if b.size else float("nan")}
        if key not in TESTED_STATISTICS:
            continue
        if a.size == 0 or b.size == 0:
            out[key]["chi2"] = float("nan")
            continue
        edges = histogram_edges(a, bins)
        out[key]["chi2"] = chi2_distance(np.histogram(a, edges)[0], np.histogram(b, edges)[0])
    return out


# ------------------------------------------------------------------------------------------------
# Support size: the birthday-paradox test


def binarise(label_maps: np.ndarray, downsample: int = 2) -> np.ndarray:
    """(N, H, W) codes -> (N, 2·h·w) float32 {0, 1}: membrane and mitochondria masks, each
    averaged over ``downsample``² blocks and thresholded at ½."""
    masks = one_hot(np.asarray(label_maps))  # (N, 2, H, W)
    n, c, h, w = masks.shape
    d = downsample
    masks = masks[..., : h // d * d, : w // d * d].reshape(n, c, h // d, d, w // d, d).mean((3, 5))
    return (masks >= 0.5).reshape(n, -1).astype(np.float32)


def pairwise_iu(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """IU between every row of binary matrices ``a`` (N, P) and ``b`` (M, P) (``a`` itself by
    default): one matrix product. Two empty maps are identical (IU 1)."""
    b = a if b is None else b
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 1.0)


def find_duplicates(label_maps: np.ndarray, threshold: float = 0.9,
                    downsample: int = 2) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, IU)`` with i < j whose binarised, down-sampled maps have IU > ``threshold``."""
    iu = pairwise_iu(binarise(label_maps, downsample))
    i, j = np.nonzero(np.triu(iu > threshold, k=1))
    return [(int(a), int(b), float(iu[a, b])) for a, b in zip(i, j)]


@dataclass
class BirthdayResult:
    batch_sizes: list[int]
    duplicate_rate: list[float]  # fraction of repeats whose batch held a duplicate pair
    min_distance: list[float]  # mean over repeats of the smallest 1 − IU in the batch
    threshold: float

    @property
    def smallest_batch(self) -> int | None:
        """Smallest batch size with a duplicate in at least half of the repeats (None: none)."""
        return next((s for s, r in zip(self.batch_sizes, self.duplicate_rate) if r >= 0.5), None)

    @property
    def support_estimate(self) -> int | None:
        """≈ s² for that batch size s (Arora & Zhang); None when no batch size reached 50 %."""
        s = self.smallest_batch
        return None if s is None else s * s


def birthday_test(sample: Callable[[int, np.random.Generator], np.ndarray], batch_sizes=(100, 200, 500, 1000),
                  repeats: int = 10, threshold: float = 0.9, downsample: int = 2, seed: int = 0) -> BirthdayResult:
    """``sample(n, rng)`` returns n label maps (n, H, W); for each batch size, ``repeats``
    fresh batches are searched for duplicates (supplement D: 128² maps from 2x2 noise)."""
    rng = np.random.default_rng(seed)
    rates, distances = [], []
    for s in batch_sizes:
        found, closest = 0, []
        for _ in range(repeats):
            iu = pairwise_iu(binarise(sample(int(s), rng), downsample))
            np.fill_diagonal(iu, -np.inf)
            best = float(iu.max())
            found += best > threshold
            closest.append(1.0 - best)
        rates.append(found / repeats)
        distances.append(float(np.mean(closest)))
    return BirthdayResult(list(map(int, batch_sizes)), rates, distances, threshold)


def label_generator_sampler(label_generator, noise_side: int = 2, device="cpu") -> Callable:
    """``sample(n, rng)`` for :func:`birthday_test` from G_y with ``noise_side``² noise (the
    paper's "atom" of 2x2 -> 128² labels); batches of 64 through the generator in eval mode."""
    import torch

    from ..data.em import from_one_hot

    generator = label_generator.to(device).eval()

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, n, 64):
                z = rng.standard_normal((min(64, n - start), generator.nz, noise_side, noise_side), dtype=np.float32)
                y = generator(torch.from_numpy(z).to(device))[:, :2].float().cpu().numpy()
                out.append(from_one_hot((y + 1) / 2))
        return np.concatenate(out)

    return sample


# ------------------------------------------------------------------------------------------------
# Realism: C2ST on EM patches


def _patch_drawer(images: np.ndarray, patch: int, generator):
    """Random ``patch``² crops with random flips from (N, H, W) uint8: (b, 1, 1, p, p) in [-1, 1]."""
    import torch

    from .c2st import random_flips

    stack = torch.from_numpy(np.ascontiguousarray(images))
    n, h, w = stack.shape
    if patch > h or patch > w:
        raise ValueError(f"patch {patch} is larger than the images ({h}x{w})")

    def draw(b: int):
        i = torch.randint(n, (b,), generator=generator)
        y = torch.randint(h - patch + 1, (b,), generator=generator)
        x = torch.randint(w - patch + 1, (b,), generator=generator)
        rows = y[:, None] + torch.arange(patch)
        cols = x[:, None] + torch.arange(patch)
        crops = stack[i[:, None, None], rows[:, :, None], cols[:, None, :]].float() / 127.5 - 1
        return random_flips(crops[:, None, None], generator)

    return draw


def c2st_realism(real_images: np.ndarray, fake_images: np.ndarray, patch: int = 64, steps: int = 2000,
                 batch_size: int = 64, width: int = 32, algorithm: str = "wgan-gp", lr: float | None = None,
                 device="cpu", seed: int = 0) -> Job:
    """C2ST between real and generated EM images (N, H, W) uint8, on random patches (a job).

    Each set is split by columns: patches for training come from the left half of every image,
    patches for scoring from the right half, so the scored patches were never seen. Returns
    ``{"score", "losses"}``: near 0 when the critic cannot tell the sets apart (D.1's sign).
    """
    import torch

    from .c2st import train_and_score

    gen = torch.Generator().manual_seed(seed)
    drawers = {}
    for name, images in (("real", real_images), ("fake", fake_images)):
        middle = images.shape[-1] // 2
        drawers[name, "train"] = _patch_drawer(images[..., :middle], patch, gen)
        drawers[name, "test"] = _patch_drawer(images[..., middle:], patch, gen)

    def pairs(role):
        # one critic: its patches come from ``gen``, not from the per-step generator of a group
        return lambda b, _rng, _ids: (drawers["real", role](b).to(device), drawers["fake", role](b).to(device))

    result = yield from train_and_score(pairs("train"), pairs("test"), 1, image_size=(patch, patch),
                                        algorithm=algorithm, steps=steps, batch_size=batch_size, width=width,
                                        device=device, seed=seed, lr=lr, channels=1)
    return {"score": float(result.scores[0]), "losses": result.losses[:, 0].tolist()}
