"""A two-sample test that answers on a CPU: a linear classifier on the features of a small network
trained once per data set, with a permutation p-value.

The paper's C2ST trains a fresh critic per split and protein (hours on a CPU). Here one feature
network, the protein classifier of :mod:`.fid` trained on the real cells (left at its seeded random
weights when the cells hold one protein), embeds cells as the channel means and standard deviations
of each of its layers (what blur, contrast and texture change) plus its penultimate activations,
averaged over the four flips (cells have no preferred end or side). The network is cached on disk,
keyed by the cells' hash and its settings, so every later test on the same cells only embeds.

The statistic is the exact leave-one-out accuracy of a ridge classifier between the two sets
(0.5: indistinguishable, 1: fully separable). Leave-one-out predictions of ridge regression are
closed-form (``(Hy − h·y) / (1 − h)`` with ``H`` the hat matrix), and ``H`` does not depend on the
labels, so a thousand label permutations cost one matrix product: the p-value is the fraction of
permutations at least as accurate as the real labels.

Every run also tests its own controls on the same features (two halves of the real cells, the
real cells against themselves blurred by σ = 1 px, and against another protein when there is
one, not its look-alike: :func:`other_protein`), which is what makes its answer trustworthy or
not (:mod:`.trust`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..jobs import Job, Update, within

FORMAT = 1  # of the cached feature network; a different one is stale


@dataclass(frozen=True)
class FastTestSettings:
    """The feature network and the test. ``max_cells``: cells per side (a seeded random subset)."""

    feature_iterations: int = 600
    feature_width: int = 16
    permutations: int = 1000
    ridge: float = 1.0  # relative to the mean squared feature norm
    alpha: float = 0.05  # p below this: the sets differ
    max_cells: int = 400
    seed: int = 0


class FeatureNet:
    """The trained (or random) protein classifier and its embedding of uint8 cells."""

    def __init__(self, model, trained: bool, accuracy: float, device="cpu"):
        self.model, self.trained, self.accuracy, self.device = model.eval(), trained, accuracy, device

    def _embed(self, x):
        import torch

        parts = []
        for layer in self.model.body:
            x = layer(x)
            if isinstance(layer, torch.nn.LeakyReLU):
                parts += [x.mean((2, 3)), x.std((2, 3))]
        parts.append(x)  # penultimate activations
        return torch.cat(parts, 1)

    def _input(self, images: np.ndarray):
        import torch

        return torch.as_tensor(images, device=self.device).float() / 127.5 - 1.0  # uint8 → [−1, 1]

    def features(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """(N, d) float64 features of uint8 pairs (N, 2, H, W), averaged over the four flips."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                x = self._input(images[start : start + batch])
                flips = [x, x.flip(-1), x.flip(-2), x.flip(-1, -2)]
                out.append(torch.stack([self._embed(f) for f in flips]).mean(0).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    def predict(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """The protein (class index) the classifier sees in each uint8 pair (N, 2, H, W)."""
        import torch

        with torch.inference_mode():
            return np.concatenate([self.model(self._input(images[i : i + batch])).argmax(1).cpu().numpy()
                                   for i in range(0, len(images), batch)])


# ------------------------------------------------------------------------------------------------
# The feature network, trained once per data set


def _cache_path(stack, settings: FastTestSettings) -> tuple[Path, dict]:
    from ..training.data import cache_dir, stack_hash

    key = {"format": FORMAT, "data_sha256": stack_hash(stack), "iterations": settings.feature_iterations,
           "width": settings.feature_width, "seed": settings.seed, "image_size": list(stack.image_size)}
    name = f"{key['data_sha256'][:32]}-w{settings.feature_width}-i{settings.feature_iterations}-s{settings.seed}"
    return cache_dir() / "feature-nets" / f"{name}.safetensors", key


def held_out(stack, seed: int) -> np.ndarray:
    """Indices of the 20 % of each protein's cells the feature network does not train on."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(stack.class_index, minlength=len(stack.class_names))
    return np.concatenate([rng.permutation(np.flatnonzero(stack.class_index == c))[: max(1, int(0.2 * n))]
                           for c, n in enumerate(counts) if n])


def _load_cached(path: Path, key: dict, n_classes: int, device):
    """The cached network when its recorded key matches; None when absent or stale (a stale file is
    never used: it is retrained and replaced)."""
    from .. import checkpoints
    from .fid import LinClassifier

    if not path.is_file():
        return None
    try:
        tensors, meta = checkpoints.load(path, kind="feature-net")
    except checkpoints.CheckpointError:
        return None
    if meta.get("key") != key:
        return None
    model = LinClassifier(n_classes, key["image_size"], key["width"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError:
        return None
    return FeatureNet(model.to(device), meta["trained"], meta["accuracy"], device)


def feature_net_job(stack, settings: FastTestSettings, device="cpu") -> Job:
    """The feature network of ``stack`` (real cells): from the cache, else trained on them (80 % of
    each protein; the rest measures its accuracy) and cached. A job returning a :class:`FeatureNet`."""
    import torch

    from .. import checkpoints
    from .fid import LinClassifier, train_classifier

    path, key = _cache_path(stack, settings)
    n_classes = len(stack.class_names)
    cached = _load_cached(path, key, n_classes, device)
    if cached is not None:
        return cached
    if n_classes > 1:
        held = held_out(stack, settings.seed)
        rest = np.setdiff1d(np.arange(len(stack)), held)
        trained = yield from within(train_classifier(stack.subset(rest), stack.subset(held),
                                                     iterations=settings.feature_iterations,
                                                     width=settings.feature_width, device=device,
                                                     seed=settings.seed),
                                    0, settings.feature_iterations, "feature network (once per data set)")
        model, accuracy, was_trained = trained.model, trained.accuracy, True
    else:  # one protein: nothing to classify; seeded random weights still see blur and contrast
        torch.manual_seed(settings.seed)
        model, accuracy, was_trained = LinClassifier(1, stack.image_size, settings.feature_width), float("nan"), False
        model.eval()
    model = model.to(device).eval()
    meta = {"kind": "feature-net", "key": key, "trained": was_trained,
            "accuracy": None if np.isnan(accuracy) else accuracy, "data": stack.description}
    checkpoints.save(path, model.state_dict(), meta)
    return FeatureNet(model, was_trained, accuracy, device)


# ------------------------------------------------------------------------------------------------
# Recognition: does the model draw each protein recognisably?

RECOGNITION_BAR = 0.5  # a catalogue model's cells are recognised at least half as often as real ones


def recognition(net: FeatureNet, stack, generated: dict[str, np.ndarray], seed: int = 0) -> dict:
    """Per protein: the share of the generated cells the feature network (trained once on the real
    ``stack``) calls that protein, beside its recall on its own held-out real cells, and whether the
    generated share reaches :data:`RECOGNITION_BAR` of the real one."""
    names, held = list(stack.class_names), held_out(stack, seed)
    real_pred, real_truth = net.predict(stack.images[held]), stack.class_index[held]
    out = {}
    for name, cells in generated.items():
        c = names.index(name)
        real = float(np.mean(real_pred[real_truth == c] == c))
        made = float(np.mean(net.predict(cells) == c))
        out[name] = {"generated": made, "real": real, "passes": made >= RECOGNITION_BAR * real}
    return out


# ------------------------------------------------------------------------------------------------
# The test


def ridge_loo_accuracy(a: np.ndarray, b: np.ndarray, permutations: int = 1000, ridge: float = 1.0,
                       seed: int = 0) -> tuple[float, float]:
    """``(accuracy, p-value)``: leave-one-out accuracy of a ridge classifier telling feature sets
    ``a`` from ``b`` (equal sizes), and the fraction of label permutations that reach it."""
    x = np.concatenate([a, b])
    n = len(x)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a two-sample test needs at least 2 cells a side, got {len(a)} and {len(b)}")
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    kernel = x @ x.T / x.shape[1]
    lam = ridge * np.trace(kernel) / n
    hat = kernel @ np.linalg.inv(kernel + lam * np.eye(n))  # labels are centred, so no intercept is needed
    h = np.diag(hat)
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.ones(len(a)), -np.ones(len(b))])
    labels = np.column_stack([y] + [rng.permutation(y) for _ in range(permutations)])
    labels = labels - labels.mean(0)  # ridge with an (unpenalised) intercept
    loo = (hat @ labels - h[:, None] * labels) / (1 - h[:, None])
    accuracy = np.mean(np.sign(loo) == np.sign(labels), axis=0)
    p_value = (1 + np.sum(accuracy[1:] >= accuracy[0])) / (1 + permutations)
    return float(accuracy[0]), float(p_value)


def _equal_sizes(fa, fb, max_cells: int, rng):
    n = min(len(fa), len(fb), max_cells)
    return fa[rng.choice(len(fa), n, replace=False)], fb[rng.choice(len(fb), n, replace=False)]


def compare_features(fa: np.ndarray, fb: np.ndarray, settings: FastTestSettings, salt: int = 0) -> dict:
    """The test between two feature sets: accuracy, p-value, cells a side, and the verdict."""
    rng = np.random.default_rng(settings.seed + salt)
    a, b = _equal_sizes(fa, fb, settings.max_cells, rng)
    accuracy, p = ridge_loo_accuracy(a, b, settings.permutations, settings.ridge, settings.seed + salt)
    return {"accuracy": accuracy, "p_value": p, "n": len(a), "different": significant(p, settings.alpha)}


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel of uint8 pairs (N, 2, H, W) by ``sigma`` px (scikit-image)."""
    from skimage.filters import gaussian

    out = gaussian(images.astype(np.float32), sigma=(0, 0, sigma, sigma), preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return order[: n // 2], order[n // 2 : 2 * (n // 2)]


def controls(net: FeatureNet, stack, protein: str, settings: FastTestSettings, other: str | None = None) -> dict:
    """The test's own controls on one protein's real cells: two halves (should read
    indistinguishable), one half against the other blurred by σ = 1 px, and (with ``other``) against
    another protein's cells (both should be detected)."""
    mine = stack.images[stack.class_index == stack.class_names.index(protein)]
    first, second = halves(len(mine), settings.seed)
    f1, f2 = net.features(mine[first]), net.features(mine[second])
    out = {"real vs real": compare_features(f1, f2, settings, 1),
           "blur σ=1": compare_features(f1, net.features(blur(mine[second], 1.0)), settings, 2)}
    if other is not None:
        theirs = stack.images[stack.class_index == stack.class_names.index(other)]
        out["other protein"] = compare_features(f1, net.features(theirs), settings, 3) | {"other": other}
    return out


def significant(p: float, alpha: float) -> bool:
    """The one rejection rule of every two-sample test here: p ≤ alpha (the rule for exact and
    permutation tests, whose p cannot fall below 1/20 with 3 critic splits a side)."""
    return p <= alpha


def false_alarm_level(alpha: float, n_proteins: int) -> float:
    """The p-value below which real vs real counts as a false alarm when ``n_proteins`` are checked
    at once (Bonferroni: at α = 0.05 each, 8 perfect tests would raise one in three times)."""
    return alpha / max(1, n_proteins)


def controls_pass(found: dict, alpha: float, n_proteins: int = 1) -> tuple[bool, list[str]]:
    """Whether the controls came out as expected, and which did not: real vs real must not fall below
    the false-alarm level, every defect must be detected (p ≤ ``alpha``)."""
    level = false_alarm_level(alpha, n_proteins)
    failed = [name for name, r in found.items()
              if (significant(r["p_value"], level) if name == "real vs real" else not r["different"])]
    return not failed, failed


def look_alike(stack, protein: str) -> str | None:
    """The protein whose cells look most like ``protein``'s: the nearest mean green channel (L2).
    Look-alikes such as Tea1/Tea4 are what the real-vs-real table should read as close, so they
    are not the 'wrong protein' a diagnostic must detect. None with one protein."""
    names = list(stack.class_names)
    if len(names) < 2:
        return None
    means = np.stack([stack.images[stack.class_index == i, 1].astype(np.float32).mean(axis=0)
                      for i in range(len(names))])
    mine = names.index(protein)
    distance = ((means - means[mine]) ** 2).sum(axis=(1, 2))
    distance[mine] = np.inf
    return names[int(np.argmin(distance))]


def other_protein(stack, protein: str, similar: str | None = None) -> str | None:
    """The 'wrong protein' control: the next protein of the list (cyclic) that is not ``protein``'s
    look-alike (``similar``, computed when not given; with two proteins, the other one); None with
    one protein."""
    names = list(stack.class_names)
    if len(names) < 2:
        return None
    skip = (similar or look_alike(stack, protein)) if len(names) > 2 else None
    start = names.index(protein)
    return next(names[(start + k) % len(names)] for k in range(1, len(names))
                if names[(start + k) % len(names)] != skip)


def fast_c2st(net: FeatureNet, real, generated: dict[str, np.ndarray], settings: FastTestSettings) -> Job:
    """The fast test of generated cells (protein, or "all" for a model of any protein -> uint8 pairs)
    against the ``real`` cells of each protein, with each protein's controls. A job returning
    protein -> {accuracy, p_value, n, different, controls, controls_pass, failed}."""
    report = {}
    names, proteins = list(generated), list(real.class_names)
    for k, name in enumerate(names):
        yield Update(k, len(names), "fast feature test")
        pooled = name not in proteins  # a model of any protein: against every real cell, controls on the first
        real_own = real.images if pooled else real.images[real.class_index == proteins.index(name)]
        result = compare_features(net.features(real_own), net.features(generated[name]), settings)
        control_protein = proteins[0] if pooled else name
        found = controls(net, real, control_protein, settings, other_protein(real, control_protein))
        ok, failed = controls_pass(found, settings.alpha, len(names))
        report[name] = {**result, "controls": found, "controls_pass": ok, "failed": failed}
    yield Update(len(names), len(names), "fast feature test")
    return report
