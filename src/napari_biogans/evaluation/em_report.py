"""``biogans evaluate em``: the SGAN paper's EM evaluation of one trained model, as a report.

Generated label/image pairs (G_y's labels rendered by G_x in tiles, or a joint model's pairs) are
set against the real validation sections (10-19) with the measures of
:mod:`~napari_biogans.evaluation.em_metrics`:

* ``segmentation`` (Table 2): a U-Net trained on the real training sections (00-09) segments the
  real validation images and the generated images (their labels as ground truth): mean IU,
  per-class IU, NLL. The shipped segmenter (``vnc-segmenter``) by default; one trained for this
  evaluation on request (``segmenter=None``).
* ``statistics`` (Table 1): means of the global label statistics and χ² distances of cell area,
  mitochondria area and roundness (mitochondria per cell: its mean only, as the paper gives it),
  validation against generated; the same for training against validation as the real-vs-real yardstick.
* ``birthday`` (supplement D): G_y's support size from 2x2 noise "atoms" (128² labels).
* ``c2st``: a C2ST between generated EM patches and the even training sections (the images the
  generator learned from); the odd training sections against the even ones are the real-vs-real
  yardstick. Sections 10-19 are not used: a critic tells them from 00-09 (a drift along the
  stack, docs/evaluation.md), so a perfect generator would not read 0 against them.

A conditional model (mitochondria given membranes) draws mitochondria on the validation
membranes: only its statistics apply (no images, no noise-only labels). Any part can be
skipped for a quick run. Each part carries a ``trust`` verdict from its controls
(:mod:`~napari_biogans.evaluation.em_calibration`) at the budget of this run. :func:`write_report`
writes the JSON, a CSV table beside the paper's numbers (with a ``trusted`` column), the
calibration table and a PNG of generated pairs beside real ones.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
import numpy as np

from ..atomic import atomic_open, atomic_write, write_text
from ..data import em
from ..jobs import Job, Update, within
from . import em_calibration, em_metrics

PARTS = ("segmentation", "statistics", "birthday", "c2st")
IU_CLASSES = ("cytoplasm", "membrane", "mitochondria")
SHIPPED_SEGMENTER = "vnc-segmenter"
SEGMENTER_CROP = 160
BIRTHDAY_NOISE_SIDE = 2  # supplement D's "atom": 2x2 noise -> 128² labels

# The paper's EM numbers: Han, Murphy & Ramanan (WACV 2018), ../shared/papers/004_a71b84a955e8dd49.txt,
# Tables 1 and 2. METHODS.md section H lists only the LIN numbers, so these are quoted from the paper.
# "real" is Table 2's Non-Param row (real training images) and Table 1's Training row (ground truth).
# Table 1's mean cell and mitochondria sizes are left out: its unit ("μm") cannot be matched to our areas
# in pixels. Its χ² bins are not given, so χ² values compare in magnitude only.
PAPER_NUMBERS = {
    "segmentation.mean_iu": {"real": 0.883, "dsgan": 0.893, "sgan": 0.872, "joint": 0.818},
    "segmentation.nll": {"real": 0.112, "dsgan": 0.108, "sgan": 0.132, "joint": 0.177},
    "statistics.mito_roundness.mean": {"real": 0.843, "dsgan": 0.819, "sgan": 0.839, "joint": 0.779},
    "statistics.mito_per_cell.mean": {"real": 0.067, "dsgan": 0.068, "sgan": 0.073, "joint": 0.060},
    "statistics.cell_area.chi2": {"dsgan": 0.050, "sgan": 0.057, "joint": 0.058},
    "statistics.mito_area.chi2": {"dsgan": 0.130, "sgan": 0.112, "joint": 0.129},
    "statistics.mito_roundness.chi2": {"dsgan": 0.109, "sgan": 0.122, "joint": 0.095},
}

__all__ = ["PARTS", "PAPER_NUMBERS", "EMEvalSettings", "EMEvaluation", "generate_pairs", "score_pairs", "evaluate_em",
           "report_rows", "calibration_rows", "write_report"]


@dataclass
class EMEvalSettings:
    train_sections: tuple = em.TRAIN_SECTIONS
    validation_sections: tuple = em.VALIDATION_SECTIONS
    n_generated: int = 10
    size: int | None = None  # side of the generated maps; None: the validation sections' side
    segmenter: str | None = SHIPPED_SEGMENTER  # a segmenter model's name or file; None: train one for this run
    segmenter_iterations: int = 2000  # when one is trained
    segmenter_width: int = 16
    c2st_steps: int = 2000
    c2st_width: int = 64  # D.1's ndf
    c2st_batch_size: int = 64
    c2st_patch: int = 64
    c2st_algorithm: str = "wgan-gp"
    c2st_lr: float | None = None  # None: the algorithm's reference learning rate
    birthday_batch_sizes: tuple = (100, 200, 500, 1000)
    birthday_repeats: int = 10
    skip: tuple = ()
    calibrate: bool = True  # run each diagnostic's controls at this run's budget (trust verdicts)
    seed: int = 0  # generated pair i uses seed + i for its labels and its image noise

    def __post_init__(self):
        unknown = set(self.skip) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown evaluation parts {sorted(unknown)}; parts are {', '.join(PARTS)}")


@dataclass
class EMEvaluation:
    """The JSON-able ``results`` and the pairs they were measured on (for the report's figure)."""

    results: dict
    generated_images: np.ndarray | None  # (N, H, W) uint8; None for a conditional model
    generated_labels: np.ndarray  # (N, H, W) codes
    real_images: np.ndarray  # the validation sections
    real_labels: np.ndarray


def _skipped(settings: EMEvalSettings, images: bool, sampler: bool) -> dict[str, str]:
    """Parts left out, with the reason: asked for, or not applicable (a conditional model has no
    images and draws no labels from noise alone)."""
    out = {part: "skipped" for part in settings.skip}
    if not images:
        out.setdefault("segmentation", "no generated images")
        out.setdefault("c2st", "no generated images")
    if not sampler:
        out.setdefault("birthday", "no label generator to sample from noise")
    return out


def _work(settings: EMEvalSettings, skipped) -> int:
    """Progress steps of the measures: segmenter iterations (when one is trained), C2ST critic steps (of the
    calibration's blurred controls too), one per other part."""
    c2st_runs = 2 + (len(em_calibration.BLUR_SIGMAS) if settings.calibrate else 0)
    steps = {"segmentation": 1 if settings.segmenter else settings.segmenter_iterations, "statistics": 1,
             "birthday": 1, "c2st": c2st_runs * settings.c2st_steps}
    return sum(n for part, n in steps.items() if part not in skipped)


def generate_pairs(model, n: int, size: int, seed: int = 0, membranes: np.ndarray | None = None) -> Job:
    """A job that returns ``n`` generated (images (n, size, size) uint8 or None, labels (n, size, size)) from an EMModel,
    in the order :func:`~napari_biogans.data.em.read_sections` returns real ones.

    Pair i uses ``seed + i``. A conditional model draws mitochondria on ``membranes`` (masks
    (S, H, W), used in turn, cropped to ``size``) and has no images.
    """
    from ..rendering import render_tiled

    mode = model.meta["mode"]
    if mode == "conditional" and membranes is None:
        raise ValueError("a conditional model needs membrane masks to draw mitochondria on")
    labels, images = [], []
    for i in range(n):
        s = seed + i
        if mode == "joint":
            y, x = model.sample_joint(size, size, seed=s)
        elif mode == "conditional":
            y, x = model.mitochondria_given_membranes(membranes[i % len(membranes), :size, :size], seed=s), None
        else:
            y = model.sample_labels(size, size, seed=s)
            x = render_tiled(model.image_generator, y, noise_seed=s, device=model.device)
        labels.append(y)
        images.append(x)
        yield Update(i + 1, n, "generated pairs")
    return None if mode == "conditional" else np.stack(images), np.stack(labels)


def _segmenter(settings: EMEvalSettings, train_images, train_labels, segmenter, device, done, total) -> Job:
    """``(model, description)``: the given segmenter (``(model, meta)``), or one trained on the training sections."""
    if segmenter is not None:
        model, meta = segmenter
        validation = meta.get("validation", {})
        return model, {"source": "shipped", "name": meta.get("name"), "sha256": meta.get("sha256"),
                       "card_mean_iu": validation.get("mean_iu")}
    crop = min(SEGMENTER_CROP, *train_images.shape[1:])
    model = yield from within(em_metrics.train_segmenter(
        train_images, train_labels, settings.segmenter_iterations, crop=crop, width=settings.segmenter_width,
        device=device, seed=settings.seed), done, total)
    return model, {"source": "trained", "iterations": settings.segmenter_iterations,
                   "width": settings.segmenter_width, "crop": crop}


def score_pairs(generated: tuple, train: tuple, validation: tuple, settings: EMEvalSettings | None = None, *,
                label_sampler=None, segmenter=None, device="cpu") -> Job:
    """A job returning the measures of every part not skipped for generated (images or None, labels) against the
    real (images, labels) of the ``train`` and ``validation`` sections (the C2ST's real images are
    the training sections', :func:`c2st_sections`); ``label_sampler``: ``sample(n, rng)`` for the
    birthday test (None: no birthday test); ``segmenter``: ``(model, meta)`` of a trained segmenter (None: one
    is trained here, ``settings.segmenter_iterations``)."""
    settings = settings or EMEvalSettings()
    skipped = _skipped(settings, generated[0] is not None, label_sampler is not None)
    total, done = _work(settings, skipped), 0
    (gen_images, gen_labels), (train_images, train_labels), (val_images, val_labels) = generated, train, validation
    results: dict = {"skipped": skipped}

    if "segmentation" not in skipped:
        model, described = yield from _segmenter(settings, train_images, train_labels, segmenter, device, done, total)
        done += 1 if segmenter is not None else settings.segmenter_iterations
        real = em_metrics.segmentation_scores(model, val_images, val_labels, device)
        results["segmentation"] = {
            "real": real, "generated": em_metrics.segmentation_scores(model, gen_images, gen_labels, device),
            "segmenter": described, "trust": em_calibration.segmentation_trust(real["mean_iu"], described["source"]),
        }
        yield Update(done, total, "segmentation")

    if "statistics" not in skipped:
        val_stats = em_metrics.global_statistics(val_labels)
        # the validation sections set the χ² bins of both (em_metrics.histogram_edges): the real-vs-real yardstick
        # is read on the bins of the generated comparison (its real_mean is the validation's, fake_mean the training's)
        results["statistics"] = {
            "generated": em_metrics.compare_pooled(val_stats, em_metrics.global_statistics(gen_labels)),
            "train_vs_validation": em_metrics.compare_pooled(val_stats, em_metrics.global_statistics(train_labels))}
        if settings.calibrate:  # real training maps at the generated set's count and side, and spoiled copies
            n, side = gen_labels.shape[0], min(gen_labels.shape[1:])
            found = em_calibration.calibrate_statistics(
                val_stats, em_calibration.budget_sample(train_labels, n, side, settings.seed), seed=settings.seed)
            results["statistics"]["calibration"] = {key: row["controls"] for key, row in found.items()}
            results["statistics"]["trust"] = {key: row["trust"] for key, row in found.items()}
        else:
            results["statistics"]["trust"] = {key: em_calibration.uncalibrated("controls skipped")
                                              for key in em_metrics.TESTED_STATISTICS}
        done += 1
        yield Update(done, total, "statistics")

    if "birthday" not in skipped:
        found = em_metrics.birthday_test(label_sampler, settings.birthday_batch_sizes, settings.birthday_repeats,
                                         seed=settings.seed)
        results["birthday"] = {**asdict(found), "smallest_batch": found.smallest_batch,
                               "support_estimate": found.support_estimate, "noise_side": BIRTHDAY_NOISE_SIDE}
        done += 1
        yield Update(done, total, "birthday test")

    if "c2st" not in skipped:
        reference, control = c2st_sections(train_images)
        kwargs = dict(patch=settings.c2st_patch, steps=settings.c2st_steps, batch_size=settings.c2st_batch_size,
                      width=settings.c2st_width, algorithm=settings.c2st_algorithm, lr=settings.c2st_lr,
                      device=device, seed=settings.seed)
        scores = {}
        for name, other in (("generated", gen_images), ("real_vs_real", control)):
            found = yield from within(em_metrics.c2st_realism(reference, other, **kwargs), done, total, f"C2ST {name}")
            scores[name] = found["score"]
            done += settings.c2st_steps
        sections = list(settings.train_sections)
        results["c2st"] = {**scores, "reference_sections": sections[0::2], "control_sections": sections[1::2],
                           "algorithm": settings.c2st_algorithm}
        if settings.calibrate:  # the same critic must see the odd sections blurred
            n_blur = len(em_calibration.BLUR_SIGMAS)
            found = yield from within(em_calibration.calibrate_c2st(
                reference, control, scores["real_vs_real"], **kwargs), done, total)
            done += n_blur * settings.c2st_steps
            results["c2st"].update(calibration=found["controls"], trust=found["trust"])
        else:
            results["c2st"]["trust"] = em_calibration.uncalibrated("controls skipped")
    return results


def c2st_sections(train_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The C2ST's reference (even training sections) and real-vs-real control (odd ones): neighbours
    in the stack, so they differ only as any two real sets do."""
    if len(train_images) < 2:
        raise ValueError("the EM C2ST compares even with odd training sections: it needs at least two "
                         "(--sections-train), or skip it (--skip c2st)")
    return train_images[0::2], train_images[1::2]


def _read_real(vnc_dir, sections, role: str):
    em.section_indices(vnc_dir)  # a clear error for a folder that is not a VNC stack
    images, labels = em.read_sections(vnc_dir, sections)
    if labels is None:
        raise ValueError(f"{vnc_dir}: the {role} sections need membrane and mitochondria labels beside raw/")
    return images, labels


def evaluate_em(model, vnc_dir, settings: EMEvalSettings | None = None, *, segmenter=None, device=None) -> Job:
    """A job that evaluates an :class:`~napari_biogans.models.em_inference.EMModel` on a VNC stack folder
    (``settings``' training and validation sections); ``segmenter``: ``(model, meta)`` of the segmenter to use (None:
    ``settings.segmenter`` is loaded through the core loader, or one is trained when that is None). Reads every
    input before the long work; returns an :class:`EMEvaluation`."""
    settings = settings or EMEvalSettings()
    device = model.device if device is None else device
    mode = model.meta["mode"]
    unconditional = mode != "conditional"
    skipped = _skipped(settings, images=unconditional, sampler=unconditional)
    train = _read_real(vnc_dir, settings.train_sections, "training")
    val_images, val_labels = _read_real(vnc_dir, settings.validation_sections, "validation")
    if "c2st" not in skipped:
        c2st_sections(train[0])  # a clear error before the long work
    if segmenter is None and settings.segmenter and "segmentation" not in skipped:
        from ..models import loader

        loaded = loader.load(settings.segmenter, device, kind=loader.SEGMENTER_KIND)
        segmenter = (loaded.model, loaded.meta)
    size = settings.size or min(val_images.shape[1:])
    total = settings.n_generated + _work(settings, skipped)
    gen_images, gen_labels = yield from within(generate_pairs(
        model, settings.n_generated, size, settings.seed, None if unconditional else val_labels == em.MEMBRANE),
        0, total)
    sampler = None
    if "birthday" not in skipped:
        sampler = em_metrics.label_generator_sampler(model.label_generator, BIRTHDAY_NOISE_SIDE, device)
    results = yield from within(score_pairs((gen_images, gen_labels), train, (val_images, val_labels), settings,
                                            label_sampler=sampler, segmenter=segmenter,
                                            device=device),
                                settings.n_generated, total)
    results["model"] = {"mode": mode, "iterations": model.meta.get("iterations"),
                        "data": model.meta.get("data", {}).get("description")}
    results["settings"] = {**asdict(settings), "size": size, "data": str(vnc_dir), "device": str(device)}
    return EMEvaluation(results, gen_images, gen_labels, val_images, val_labels)


# ------------------------------------------------------------------------------------------------
# The report


def _trusted(trust: dict | None):
    """A row's ``trusted`` cell: True / False from a calibration verdict, None when none was run."""
    return None if trust is None else bool(trust["trusted"])


def report_rows(results: dict) -> list[dict]:
    """One row per measure: ours on real data (the real-vs-real yardstick where the measure compares
    two sets), ours on generated data, the paper's numbers for real data and for this mode, and whether
    the measure passed its controls (``trusted``; an untrusted row's note starts with the reason)."""
    mode = results.get("model", {}).get("mode")
    rows = []

    def row(measure, real, generated, note="", trust=None):
        paper = PAPER_NUMBERS.get(measure, {})
        if trust is not None and not trust["trusted"]:
            note = f"UNTRUSTED: {trust['reason']}" + (f"; {note}" if note else "")
        rows.append({"measure": measure, "real": real, "generated": generated, "paper_real": paper.get("real"),
                     "paper_generated": paper.get(mode), "trusted": _trusted(trust), "note": note})

    seg = results.get("segmentation")
    if seg:
        trust = seg.get("trust")
        row("segmentation.mean_iu", seg["real"]["mean_iu"], seg["generated"]["mean_iu"],
            f"{seg['segmenter']['source']} segmenter; real: validation sections; generated: their own labels as truth",
            trust)
        for i, name in enumerate(IU_CLASSES):
            row(f"segmentation.iu.{name}", seg["real"]["iu"][i], seg["generated"]["iu"][i], trust=trust)
        row("segmentation.nll", seg["real"]["nll"], seg["generated"]["nll"], "nats per pixel", trust)
    stats = results.get("statistics")
    if stats:
        for key, value in stats["generated"].items():
            unit = ", pixels" if key.endswith("area") else ""
            described = "" if "chi2" in value else "; described, not tested (a mean, as the paper gives it)"
            row(f"statistics.{key}.mean", value["real_mean"], value["fake_mean"],
                f"real: validation sections{unit}{described}")
            if "chi2" in value:
                row(f"statistics.{key}.chi2", stats["train_vs_validation"][key]["chi2"], value["chi2"],
                    "real: training vs validation; generated: validation vs generated", stats.get("trust", {}).get(key))
    birthday = results.get("birthday")
    if birthday:
        row("birthday.support_estimate", None, birthday["support_estimate"],
            f"≈ s² for the smallest batch s with a duplicate in half the repeats; empty: none up to "
            f"{max(birthday['batch_sizes'])}")
    c2st = results.get("c2st")
    if c2st:
        row("c2st.score", c2st["real_vs_real"], c2st["generated"],
            "against the even training sections; real: the odd ones; near 0 = indistinguishable", c2st.get("trust"))
    return rows


def calibration_rows(results: dict) -> list[dict]:
    """The calibration table: one row per diagnostic and control, with its value and pass / fail."""
    rows = []
    seg = results.get("segmentation")
    if seg and "trust" in seg:
        rows.append({"diagnostic": "segmentation", "control": "real validation mean IU",
                     "value": seg["real"]["mean_iu"], "passed": seg["trust"]["trusted"]})
    for key, controls in results.get("statistics", {}).get("calibration", {}).items():
        rows += [{"diagnostic": f"statistics.{key}.chi2", "control": name, "value": row["chi2"],
                  "passed": row["passed"]} for name, row in controls.items()]
    for name, row in results.get("c2st", {}).get("calibration", {}).items():
        rows.append({"diagnostic": "c2st.score", "control": name, "value": row["score"], "passed": row["passed"]})
    return rows


def _finite(value):
    """JSON and CSV cells: NaN and infinities (a class absent from both maps) become empty."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _label_rgb(labels: np.ndarray) -> np.ndarray:
    palette = np.array([em.LABEL_COLORS[code][:3] for code in sorted(em.LABEL_COLORS)]) * 255
    return palette.astype(np.uint8)[labels]


def _pairs_figure(path: Path, evaluation: EMEvaluation, examples: int) -> None:
    """Generated labels and images beside real validation crops of the same size, one pair a row."""
    from matplotlib.figure import Figure

    n = min(examples, len(evaluation.generated_labels))
    h, w = evaluation.generated_labels.shape[1:]
    columns = [("generated labels", lambda i: _label_rgb(evaluation.generated_labels[i]))]
    if evaluation.generated_images is not None:
        columns.append(("generated image", lambda i: evaluation.generated_images[i]))
    real = len(evaluation.real_labels)
    columns += [("real labels", lambda i: _label_rgb(evaluation.real_labels[i % real, :h, :w])),
                ("real image", lambda i: evaluation.real_images[i % real, :h, :w])]
    fig = Figure(figsize=(2.5 * len(columns), 2.5 * n), dpi=120, layout="constrained")
    axes = fig.subplots(n, len(columns), squeeze=False)
    for i in range(n):
        for j, (title, image) in enumerate(columns):
            axes[i, j].imshow(image(i), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(title, fontsize=9)
    atomic_write(path, fig.savefig)


def write_report(evaluation: EMEvaluation, out_dir, examples: int = 4) -> dict[str, Path]:
    """``em_report.json`` (everything), ``em_report.csv`` (:func:`report_rows`), ``em_calibration.csv``
    (:func:`calibration_rows`) and ``em_pairs.png`` (``examples`` generated pairs beside real ones) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "em_report.json", "csv": out / "em_report.csv",
             "calibration": out / "em_calibration.csv", "png": out / "em_pairs.png"}
    write_text(files["json"], json.dumps(_finite(evaluation.results), indent=2, allow_nan=False))
    for key, rows in (("csv", report_rows(evaluation.results)), ("calibration", calibration_rows(evaluation.results))):
        fields = list(rows[0]) if rows else ["diagnostic", "control", "value", "passed"]
        with atomic_open(files[key], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in _finite(row).items()} for row in rows)
    _pairs_figure(files["png"], evaluation, examples)
    return files
