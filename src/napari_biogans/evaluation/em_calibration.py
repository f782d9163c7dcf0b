"""Calibration of the EM diagnostics: each proves it can see before its number is trusted.

Every diagnostic is run, at the budget of the evaluation it vouches for, on inputs whose answer is
known:

* **label statistics** (χ² of cell area, mitochondria area and roundness,
  :func:`~.em_metrics.compare_statistics`; mitochondria per cell is described by its mean, not tested):
  real validation maps against real training maps of the same total area as the generated set (real vs
  real, must read *close*), and against those maps spoiled: pixels **shuffled** within each map, both
  classes **eroded** by :data:`ERODE_RADIUS` px and **dilated** by :data:`DILATE_RADIUS` px (each must read
  *far*);
* **EM C2ST** (:func:`~.em_metrics.c2st_realism`): real vs real (odd against even training
  sections, :func:`~.em_report.c2st_sections`), real vs **Gaussian-blurred** real (the odd sections
  blurred by σ = 1 and 2 px; each must be detected);
* **segmentation**: the segmenter's mean IU on the real validation sections must reach
  :data:`SEGMENTER_MIN_IU`.

A diagnostic is trusted only when all its controls pass; the result carries the verdict as a
``trust`` dict with the field names of :class:`napari_biogans.evaluation.trust.Trust.as_dict`
(``trusted``, ``status``, ``reason``, ``needed``, ``controls``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..data.em import CYTOPLASM, MEMBRANE, MITOCHONDRIA
from ..jobs import Job
from . import em_metrics
from .trust import CALIBRATED, FAILED, NOT_CALIBRATED, Trust  # noqa: F401  (the statuses: public here too)

SEGMENTER_MIN_IU = 0.80
# label statistics: real vs real must stay under REAL_CHI2_MAX, and a spoiled control must read at
# least DETECT_FACTOR times the real-vs-real χ² and DETECT_MIN above it
REAL_CHI2_MAX = 0.05
DETECT_FACTOR = 2.0
DETECT_MIN = 0.01
# px of erosion and of dilation, the same for every statistic: each the smallest that the χ² of the statistic
# with the fewest objects (mitochondria area, ~130 mitochondria in 10 sections of 1024²) sees. Dilation by 2 px
# (mean mitochondrion +21 %) and 3 px are within that histogram's noise on any number of bins; by 4 px, +43 %.
# Erosion by 2 px already opens the membranes (cells merge into the border); by 3-4 px they are gone.
# Measured in docs/evaluation.md, EM section.
ERODE_RADIUS = 2
DILATE_RADIUS = 4
# the controls each tested statistic (em_metrics.TESTED_STATISTICS) must see; roundness is a shape, which
# erosion and dilation of a blob barely change: it is asked to see shuffled labels only
STATISTIC_CONTROLS = {
    "cell_area": ("shuffled", "eroded", "dilated"),
    "mito_area": ("shuffled", "eroded", "dilated"),
    "mito_roundness": ("shuffled",),
}
LABEL_CONTROLS = ("shuffled", "eroded", "dilated")
BLUR_SIGMAS = (1.0, 2.0)
# C2ST: real vs real must read within C2ST_REAL_MAX of 0, and blur must score C2ST_DETECT above it
C2ST_REAL_MAX = 0.05
C2ST_DETECT = 0.1

__all__ = ["SEGMENTER_MIN_IU", "spoil_labels", "control_name", "budget_sample", "calibrate_statistics", "blurred",
           "c2st_trust", "segmentation_trust", "trust", "uncalibrated"]


def trust(passed: bool, reason: str, needed: str = "", controls: dict | None = None) -> dict:
    """The JSON trust record (:class:`~napari_biogans.evaluation.trust.Trust`) of a diagnostic whose controls ran."""
    return Trust(CALIBRATED if passed else FAILED, reason, "" if passed else needed, controls or {}).as_dict()


def uncalibrated(reason: str) -> dict:
    """The JSON trust record of a diagnostic whose controls were not run."""
    return Trust(NOT_CALIBRATED, reason, "its controls (leave out --no-calibration)", {}).as_dict()


# ------------------------------------------------------------------------------------------------
# Label statistics


def spoil_labels(labels: np.ndarray, control: str, seed: int = 0, radius: int | None = None) -> np.ndarray:
    """Label maps (N, H, W) spoiled by a known defect: ``shuffled`` (each map's pixels permuted),
    ``eroded`` / ``dilated`` (membranes and mitochondria shrunk / grown by ``radius`` px, by default
    :data:`ERODE_RADIUS` / :data:`DILATE_RADIUS`; mitochondria winning)."""
    labels = np.asarray(labels)
    if control == "shuffled":
        rng = np.random.default_rng(seed)
        return np.stack([rng.permutation(m.ravel()).reshape(m.shape) for m in labels])
    if control not in ("eroded", "dilated"):
        raise ValueError(f"unknown label control '{control}'; one of {LABEL_CONTROLS}")
    grow = ndi.binary_dilation if control == "dilated" else ndi.binary_erosion
    radius = radius or _radius(control)
    cross = ndi.generate_binary_structure(2, 1)
    out = np.full(labels.shape, CYTOPLASM, dtype=np.uint8)
    for i, m in enumerate(labels):
        out[i][grow(m == MEMBRANE, cross, iterations=radius)] = MEMBRANE
        out[i][grow(m == MITOCHONDRIA, cross, iterations=radius)] = MITOCHONDRIA
    return out


def _radius(control: str) -> int:
    return DILATE_RADIUS if control == "dilated" else ERODE_RADIUS


def control_name(control: str, radius: int | None = None) -> str:
    """A label control as the calibration tables name it: erosion and dilation with their radius."""
    return control if control == "shuffled" else f"{control} {radius or _radius(control)} px"


def budget_sample(labels: np.ndarray, n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` crops of ``size``² from maps (S, H, W), one per map in turn at a random place: real maps with
    the generated set's budget (count and side), so the calibration speaks for that budget."""
    rng = np.random.default_rng(seed)
    s, h, w = labels.shape
    size = min(size, h, w)
    out = []
    for i in range(n):
        y, x = rng.integers(h - size + 1), rng.integers(w - size + 1)
        out.append(labels[i % s, y:y + size, x:x + size])
    return np.stack(out)


def calibrate_statistics(reference, real: np.ndarray, bins: int = em_metrics.CHI2_BINS, seed: int = 0,
                         radius: int | None = None) -> dict:
    """Per tested statistic (:data:`STATISTIC_CONTROLS`): the χ² of each control against ``reference``
    (validation maps) and the trust verdict. ``bins`` and ``radius`` (one for erosion and dilation) other than
    the product's: for measuring what the χ² can see (scripts/calibrate_em.py).

    ``reference``: maps (N, H, W) or their :func:`~.em_metrics.global_statistics`; ``real``: real maps other
    than the reference at the evaluation's budget (:func:`budget_sample`).
    Returns ``{statistic: {"controls": {control: {"chi2", "passed"}}, "trust": {...}}}``."""
    if not isinstance(reference, dict):
        reference = em_metrics.global_statistics(reference)
    controls = {"real vs real": real, **{c: spoil_labels(real, c, seed, radius) for c in LABEL_CONTROLS}}
    chi2 = {name: em_metrics.compare_pooled(reference, em_metrics.global_statistics(maps), bins)
            for name, maps in controls.items()}
    out = {}
    for key, wanted in STATISTIC_CONTROLS.items():
        base = chi2["real vs real"][key]["chi2"]
        floor = max(DETECT_FACTOR * base, base + DETECT_MIN)
        table = {"real vs real": {"chi2": base, "passed": bool(base <= REAL_CHI2_MAX)}}  # NaN (no objects): fails
        for control in wanted:
            value = chi2[control][key]["chi2"]
            table[control_name(control, radius)] = {"chi2": value, "passed": bool(value >= floor)}
        wanted = [control_name(control, radius) for control in wanted]
        failed = [name for name, row in table.items() if not row["passed"]]
        summary = {name: f"χ² {row['chi2']:.3g} ({'pass' if row['passed'] else 'FAIL'})"
                   for name, row in table.items()}
        if not failed:
            reason = f"real vs real χ² {base:.3g} ≤ {REAL_CHI2_MAX}; {', '.join(wanted)} read ≥ {floor:.3g}"
        elif "real vs real" in failed:
            reason = f"real vs real χ² {base:.3g} > {REAL_CHI2_MAX}: the sample is too small to compare"
        else:
            reason = f"does not see {', '.join(failed)} (χ² under {floor:.3g})"
        out[key] = {"controls": table, "trust": trust(not failed, reason, "more or larger generated maps "
                                                                          "(--generated, --size)", summary)}
    return out


# ------------------------------------------------------------------------------------------------
# C2ST and segmentation


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 sections (N, H, W) blurred by a Gaussian of ``sigma`` px (a known defect)."""
    out = ndi.gaussian_filter(np.asarray(images, np.float64), (0, sigma, sigma), mode="nearest")  # skimage's gaussian
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def c2st_trust(real_vs_real: float, blur_scores: dict) -> dict:
    """Verdict of the EM C2ST from its real-vs-real score and its scores on blurred real images."""
    controls = {"real vs real": {"score": real_vs_real, "passed": bool(abs(real_vs_real) <= C2ST_REAL_MAX)}}
    for sigma, score in blur_scores.items():
        controls[f"blur σ={sigma:g}"] = {"score": score, "passed": bool(score >= real_vs_real + C2ST_DETECT)}
    failed = [name for name, row in controls.items() if not row["passed"]]
    summary = {name: f"{row['score']:.3g} ({'pass' if row['passed'] else 'FAIL'})" for name, row in controls.items()}
    if not failed:
        reason = (f"real vs real {real_vs_real:.3g} within {C2ST_REAL_MAX} of 0; blur σ = "
                  f"{', '.join(f'{s:g}' for s in blur_scores)} detected (≥ {C2ST_DETECT} above it)")
    else:
        reason = f"fails {', '.join(failed)}"
    return {"controls": controls, "trust": trust(not failed, reason, "more critic steps (--steps) or a wider critic "
                                                                     "(--width)", summary)}


def calibrate_c2st(real: np.ndarray, other_real: np.ndarray, real_vs_real: float, **c2st_kwargs) -> Job:
    """A job: the C2ST of ``real`` against ``other_real`` blurred at each of :data:`BLUR_SIGMAS`, at the
    evaluation's settings; returns :func:`c2st_trust` with the given ``real_vs_real`` score."""
    from ..jobs import within

    steps = c2st_kwargs["steps"]
    scores = {}
    for i, sigma in enumerate(BLUR_SIGMAS):
        found = yield from within(em_metrics.c2st_realism(real, blurred(other_real, sigma), **c2st_kwargs),
                                  i * steps, len(BLUR_SIGMAS) * steps, f"C2ST calibration blur σ={sigma:g}")
        scores[sigma] = found["score"]
    return c2st_trust(real_vs_real, scores)


def segmentation_trust(real_mean_iu: float, source: str) -> dict:
    """Verdict of the segmentation measures: the segmenter must segment real sections well first."""
    passed = real_mean_iu >= SEGMENTER_MIN_IU
    reason = f"the {source} segmenter reaches mean IU {real_mean_iu:.3f} on the real validation sections"
    reason += f" (≥ {SEGMENTER_MIN_IU})" if passed else f", under {SEGMENTER_MIN_IU}"
    return trust(passed, reason, "the shipped segmenter (vnc-segmenter) or a longer-trained one",
                 {"real validation mean IU": f"{real_mean_iu:.3f}"})
