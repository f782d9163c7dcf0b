"""One evaluation pipeline for ``biogans evaluate`` and the Diagnostics widget.

Each evaluation is a job (``napari_biogans.jobs``: a generator of ``Update`` s that returns its
result) over cells and a model the caller has loaded: :func:`c2st_job` (the paper's critics),
:func:`fast_c2st_job` (the fast feature test, the CPU default), :func:`reconstruction_job`,
:func:`real_vs_real_job`, :func:`fid_job` and :func:`features_job`. Every result carries its
:class:`.trust.Trust`, decided here from its own controls or the calibration of its diagnostic. The checks of the inputs
(image size against the model, the model's proteins present, the training cells' proteins) and the
choices that make a number (which cells, which baseline, which seeds) live here, so the CLI and the
widget get the same numbers from the same inputs; :mod:`.outputs` turns a result into the same
files for both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..jobs import Job
from .trust import CALIBRATED, Trust, uncalibrated, untrusted

SIMULATED_NOTE = "SIMULATED cells"  # in every title, JSON and CSV header made from simulated cells or models


class MismatchError(ValueError):
    """The cells do not fit the model (proteins or image size), or the training cells do not fit the cells."""


# ------------------------------------------------------------------------------------------------
# Settings and results


@dataclass(frozen=True)
class C2STSettings:
    """The classifier two-sample test: METHODS D.1's defaults (10 splits, 5000 critic steps, width 64)."""

    steps: int = 5000
    splits: int = 10
    width: int = 64
    batch_size: int = 64
    test_batches: int = 10  # held-out batch pairs averaged per critic
    algorithm: str = "wgan-gp"
    lr: float | None = None  # None: the algorithm's reference learning rate
    seed: int = 0
    memory_gb: float | None = None  # the critics' memory budget (None: a share of the free memory)


@dataclass(frozen=True)
class ReconstructionSettings:
    """Latent optimisation (METHODS D.2): L-BFGS ``steps`` of 20 inner iterations from ``restarts`` codes."""

    steps: int = 50
    restarts: int = 5
    mode: str = "regular"
    max_cells: int | None = None  # a seeded random subset of this many cells (None: all)
    seed: int = 0


@dataclass(frozen=True)
class ClassifierSettings:
    """The LIN protein classifier behind FID and the features comparison."""

    iterations: int = 2000
    width: int = 32
    generated: int = 500  # FID: generated cells per protein
    seed: int = 0


@dataclass
class Provenance:
    """What the numbers were made from, written beside them."""

    data: str
    simulated: bool  # the cells, or the model's training cells, are simulated
    device: str
    model: str | None = None
    weights_sha256: str | None = None
    extra: dict = field(default_factory=dict)  # the training cells, the critic file, ...


def _no_controls() -> Trust:
    return uncalibrated("no controls were run for this result", "biogans evaluate calibrate at this budget")


@dataclass
class C2STEvaluation:
    report: dict  # protein (and "all") -> {"scores": [per split], median, mad, mean, std, n}
    settings: C2STSettings
    provenance: Provenance
    trust: Trust = field(default_factory=_no_controls)


@dataclass
class FastC2STEvaluation:
    """The fast feature test (:mod:`.fast_test`) of generated against held-out real cells."""

    report: dict  # protein -> {accuracy, p_value, n, different, controls, controls_pass, failed}
    settings: object  # fast_test.FastTestSettings
    provenance: Provenance
    trust: Trust = field(default_factory=_no_controls)


@dataclass
class ReconstructionEvaluation:
    cells: object  # the CellStack reconstructed
    rows: np.ndarray  # their rows in the stack the model was judged on
    reconstruction: object  # reconstruction.Reconstruction
    nn_l2: np.ndarray  # nearest-neighbour L2 per cell (NaN: no neighbour of its protein)
    nn_source: str  # "training cells" or "other cells of the stack"
    nz: int
    settings: ReconstructionSettings
    provenance: Provenance
    trust: Trust = field(default_factory=_no_controls)


@dataclass
class RealVsRealEvaluation:
    names: list[str]
    scores: np.ndarray  # (splits, C, C): rows set A, columns set B
    sets: tuple[str, str]  # what A and B are
    settings: C2STSettings
    provenance: Provenance
    trust: Trust = field(default_factory=_no_controls)

    @property
    def mean(self) -> np.ndarray:
        return np.nanmean(self.scores, axis=0)


@dataclass
class FIDEvaluation:
    names: list[str]
    real: list[float]  # FID of the training cells against the held-out cells, per protein
    generated: list[float]  # FID of generated cells against the held-out cells, per protein
    classifier_accuracy: float
    settings: ClassifierSettings
    provenance: Provenance
    trust: Trust = field(default_factory=_no_controls)


@dataclass
class FeaturesEvaluation:
    accuracy: dict[str, float]  # embedding -> leave-one-out 1-NN protein accuracy
    dimensions: dict[str, int]
    classifier_accuracy: float
    settings: ClassifierSettings
    provenance: Provenance
    trust: Trust = field(default_factory=_no_controls)


def is_simulated(stack, meta: dict | None = None) -> bool:
    """Cells from the simulator, or a model trained on simulated cells."""
    if stack is not None and stack.simulated:
        return True
    meta = meta or {}
    return bool(meta.get("simulated_training_data") or (meta.get("data") or {}).get("simulated"))


def _provenance(stack, device, meta=None, others=(), **extra) -> Provenance:
    return Provenance(data=stack.description, simulated=is_simulated(stack, meta) or any(s.simulated for s in others),
                      device=str(device), model=(meta or {}).get("name"), weights_sha256=(meta or {}).get("sha256"),
                      extra=extra)


# ------------------------------------------------------------------------------------------------
# Input checks


def match_model(stack, generator, meta):
    """The cells the model can be judged on: its proteins, in its order (a pooled "any protein"
    model takes every cell). :class:`MismatchError` when a protein is missing or the sizes differ."""
    if tuple(stack.image_size) != tuple(generator.image_size):
        raise MismatchError("{}: the cells are {}×{} px, the model makes {}×{} px".format(
            stack.description, *stack.image_size, *generator.image_size))
    if generator.n_classes == 1:
        return stack
    names = list(meta["class_names"])
    missing = [n for n in names if n not in stack.class_names]
    if missing:
        raise MismatchError(f"{stack.description}: the model '{meta.get('name')}' has proteins {missing} that the "
                            f"cells lack (they hold {list(stack.class_names)})")
    return stack.select_classes(names)


def check_training_cells(train, cells):
    """``train`` holds every protein of ``cells`` and has their image size (else :class:`MismatchError`)."""
    missing = [n for n in cells.class_names if n not in train.class_names]
    if missing:
        raise MismatchError(f"the training cells ({train.description}) lack {missing}")
    if tuple(train.image_size) != tuple(cells.image_size):
        raise MismatchError("the training cells ({}) are {}×{} px, the cells {}×{} px".format(
            train.description, *train.image_size, *cells.image_size))
    return train


def pick_cells(n_total: int, n: int | None) -> np.ndarray:
    """Rows of the cells to reconstruct: all, or a seeded random subset of ``n``."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(0).choice(n_total, n, replace=False))


def nn_baseline(stack, rows: np.ndarray, pool=None) -> np.ndarray:
    """Nearest-neighbour L2 of the cells ``stack[rows]``, each against cells of its own protein.

    With ``pool`` (the training split) the neighbours are its cells, as in the paper. Without it
    they are the *other* cells of the stack (leave one out): a stand-in that is easier to beat (a
    test split is smaller than a training split, so its nearest cells are farther). NaN where a
    protein has no other cell.
    """
    from .reconstruction import nearest_neighbour_l2

    nn = np.full(len(rows), np.nan)
    for label, name in enumerate(stack.class_names):
        mine = np.flatnonzero(stack.class_index[rows] == label)
        if not len(mine):
            continue
        if pool is not None:
            candidates = pool.images[pool.class_index == pool.class_names.index(name)]
            if len(candidates):
                nn[mine] = nearest_neighbour_l2(stack.images[rows[mine]], candidates)[0]
            continue
        same = np.flatnonzero(stack.class_index == label)
        for k in mine:
            others = same[same != rows[k]]
            if len(others):
                nn[k] = nearest_neighbour_l2(stack.images[rows[k]][None], stack.images[others])[0][0]
    return nn


# ------------------------------------------------------------------------------------------------
# Jobs


def c2st_job(generator, meta: dict, cells, settings: C2STSettings, device) -> Job:
    """C2ST of the generator against held-out real cells; returns a :class:`C2STEvaluation`."""
    from .c2st import generator_c2st

    given, cells = cells, match_model(cells, generator, meta)
    names = list(meta["class_names"])
    report = yield from generator_c2st(generator, cells, names, n_splits=settings.splits, device=device,
                                       seed=settings.seed, steps=settings.steps, batch_size=settings.batch_size,
                                       test_batches=settings.test_batches, width=settings.width,
                                       algorithm=settings.algorithm, lr=settings.lr, memory_gb=settings.memory_gb)
    trust = critic_trust(given, settings, names)  # calibrations are remembered for the cells as given
    return C2STEvaluation(report, settings, _provenance(cells, device, meta), trust)


def c2st_method(method: str, device) -> str:
    """``fast`` or ``critic``; ``auto`` is the fast feature test on a CPU, the paper's critic C2ST on a GPU."""
    if method != "auto":
        return method
    return "fast" if getattr(device, "type", str(device)) == "cpu" else "critic"


def critic_trust(cells, settings: C2STSettings, proteins=None) -> Trust:
    """A paper's-critic C2ST is trusted at a budget where it passed its controls on these cells, for
    every protein compared (default: all of the cells')."""
    from .calibrate import critic_trust as remembered

    names = [p for p in proteins if p in cells.class_names] if proteins else None
    return remembered(cells, settings.steps, settings.splits, settings.width, settings.algorithm, lr=settings.lr,
                      batch_size=settings.batch_size, proteins=names)


def fast_c2st_job(generator, meta: dict, cells, settings, device) -> Job:
    """The fast feature test of the generator against held-out real cells, each protein with its own
    controls (the feature network is trained once per data set and cached); returns a
    :class:`FastC2STEvaluation`."""
    from ..data.lin import to_uint8
    from ..jobs import within
    from ..sampling import latent_codes, render
    from .calibrate import fast_trust
    from .fast_test import fast_c2st, feature_net_job

    given, cells = cells, match_model(cells, generator, meta)
    names = list(meta["class_names"]) if generator.n_classes > 1 else ["all"]
    net = yield from within(feature_net_job(given, settings, device), 0, 2, "feature network (once per data set)")
    n = min(settings.max_cells, max(cells.counts().values()))
    pairs = to_uint8(render(generator.to(device).eval(), latent_codes(n, generator.nz, generator.nz_red,
                                                                       settings.seed)))
    generated = {name: pairs[:, c if generator.n_classes > 1 else 0] for c, name in enumerate(names)}
    report = yield from within(fast_c2st(net, cells, generated, settings), 1, 2, "fast feature test")
    extra = {"method": "fast feature test", "feature_net_trained": net.trained,
             "feature_net_accuracy": net.accuracy}
    return FastC2STEvaluation(report, settings, _provenance(cells, device, meta, **extra), fast_trust(report))


def reconstruction_job(generator, meta: dict, cells, settings: ReconstructionSettings, device,
                       train=None) -> Job:
    """Reconstruct the cells (all, or ``max_cells`` of them) and measure the nearest-neighbour
    baseline: in ``train`` when given, else among the other held-out cells of the same protein.
    Returns a :class:`ReconstructionEvaluation`."""
    from .reconstruction import reconstruct

    stack = match_model(cells, generator, meta)
    if train is not None:
        check_training_cells(train, stack)
    rows = pick_cells(len(stack), settings.max_cells)
    chosen = stack.subset(rows)
    slots = chosen.class_index if generator.n_classes > 1 else np.zeros(len(chosen), dtype=int)
    result = yield from reconstruct(generator, chosen.as_float(), slots, mode=settings.mode,
                                    restarts=settings.restarts, steps=settings.steps, seed=settings.seed,
                                    device=device)
    nn = nn_baseline(stack, rows, train)
    source = "training cells" if train is not None else "other cells of the stack"
    extra = {"nn_baseline": source} | ({"train": train.description} if train is not None else {})
    trust = Trust(CALIBRATED, "compared with each cell's nearest training cell (the paper's control)") \
        if train is not None else uncalibrated("the nearest-neighbour baseline is other held-out cells, which is "
                                               "easier to beat than the training cells", "--train (the training cells)")
    return ReconstructionEvaluation(chosen, rows, result, nn, source, generator.nz, settings,
                                    _provenance(stack, device, meta, [train] if train is not None else [], **extra),
                                    trust)


def real_vs_real_sets(cells, train=None, proteins=None):
    """``(names, set A, set B, what A and B are)`` of the real-vs-real table, checked.

    With ``train``, set A is the training cells and set B the held-out ``cells``, as in the paper;
    without it, two disjoint halves of ``cells``, so the diagonal compares different cells of one
    protein. ``proteins``: the rows and columns (default: every protein of the cells, and of the
    training cells when given).
    """
    from ..data.lin import c2st_splits

    names = list(proteins) if proteins else list(cells.class_names)
    missing = [n for n in names if n not in cells.class_names]
    if missing:
        raise MismatchError(f"{cells.description}: no cells of {missing}")
    if train is None:
        halves = c2st_splits(cells, 1)[0]
        return names, cells.subset(halves["train"]), cells.subset(halves["test"]), ("A (half of the cells)",
                                                                                      "B (the other half)")
    if tuple(train.image_size) != tuple(cells.image_size):
        raise MismatchError("the training cells ({}) are {}×{} px, the cells {}×{} px".format(
            train.description, *train.image_size, *cells.image_size))
    if proteins:
        check_training_cells(train, cells.select_classes(names))
    names = [n for n in names if n in train.class_names]
    if not names:
        raise MismatchError(f"the training cells ({train.description}) share no protein with the cells")
    return names, train, cells, ("A (training cells)", "B (held-out cells)")


def real_vs_real_plan(cells, settings: C2STSettings, device, train=None, proteins=None):
    """The groups the real-vs-real critics will train in (a ``c2st.CriticPlan``), before any training."""
    from .c2st import real_vs_real_plan as plan

    names, a, b, _ = real_vs_real_sets(cells, train, proteins)
    return plan(a, b, len(names), settings.splits, device, settings.memory_gb, settings.width, settings.batch_size,
                settings.algorithm)


def real_vs_real_job(cells, settings: C2STSettings, device, train=None, proteins=None, plan=None) -> Job:
    """The real-vs-real C2ST matrix (the paper's Table 1); returns a :class:`RealVsRealEvaluation`.

    The sets are :func:`real_vs_real_sets`'; the critics train in the groups of ``plan``
    (default: :func:`real_vs_real_plan`).
    """
    from .c2st import real_vs_real

    names, a, b, sets = real_vs_real_sets(cells, train, proteins)
    plan = plan or real_vs_real_plan(cells, settings, device, train, proteins)
    scores = yield from real_vs_real(a, b, names, n_splits=settings.splits, device=device, seed=settings.seed,
                                     steps=settings.steps, batch_size=settings.batch_size,
                                     test_batches=settings.test_batches, width=settings.width,
                                     algorithm=settings.algorithm, lr=settings.lr, plan=plan)
    extra = {"sets": list(sets)} | ({"train": train.description} if train is not None else {})
    return RealVsRealEvaluation(names, scores, sets, settings,
                                _provenance(cells, device, others=[train] if train is not None else [], **extra),
                                real_vs_real_trust(scores, cells, settings))


def _classifier(train, test, settings: ClassifierSettings, device) -> Job:
    from . import fid

    if tuple(train.image_size) != tuple(test.image_size):
        raise MismatchError("the training cells ({}) are {}×{} px, the cells {}×{} px".format(
            train.description, *train.image_size, *test.image_size))
    if list(train.class_names) != list(test.class_names):
        raise MismatchError(f"the training cells ({train.description}) hold proteins {list(train.class_names)}, the "
                            f"cells {list(test.class_names)}; the classifier needs the same proteins in both")
    return (yield from fid.train_classifier(train, test, iterations=settings.iterations, width=settings.width,
                                            device=device, seed=settings.seed))


def fid_job(generator, meta: dict, test, train, settings: ClassifierSettings, device) -> Job:
    """FID per protein with a LIN classifier trained on ``train``: the training cells and generated
    cells, each against the held-out ``test`` cells. Returns a :class:`FIDEvaluation`."""
    from . import fid

    test = match_model(test, generator, meta)
    names = list(test.class_names)
    check_training_cells(train, test)
    train = train.select_classes(names)
    classifier = yield from _classifier(train, test, settings, device)
    matrix = fid.class_fid_matrix(classifier, train, test)
    real = np.diagonal(matrix)
    fake = fid.generator_fid(classifier, generator, test, n=settings.generated, seed=settings.seed)
    trust = fid_trust(classifier, train, test, matrix)
    return FIDEvaluation(names, [float(v) for v in real], [float(fake[n]) for n in names], classifier.accuracy,
                         settings, _provenance(test, device, meta, [train], train=train.description), trust)


MIN_ACCURACY_OVER_CHANCE = 2.0  # a LIN classifier below twice chance gives features that say nothing
MIN_ACCURACY = 0.8  # ... capped here for few proteins (twice chance of two proteins would be 100 %)


def classifier_trust(accuracy: float, n_classes: int) -> Trust | None:
    """Untrusted when the classifier's held-out accuracy is below twice chance (at most 80 %); None when
    it is enough."""
    floor = min(MIN_ACCURACY_OVER_CHANCE / max(n_classes, 1), MIN_ACCURACY)
    if n_classes < 2 or not np.isfinite(accuracy):
        return uncalibrated("the LIN classifier needs at least two proteins with held-out cells to be checked",
                            "cells of two or more proteins")
    if accuracy < floor:
        return untrusted(f"the LIN classifier is {accuracy:.1%} accurate on held-out cells, below {floor:.1%} "
                         f"(twice chance, at most {MIN_ACCURACY:.0%}): its features cannot tell proteins apart",
                         "more classifier iterations (--classifier-iterations) or a wider classifier")
    return None


def fid_trust(classifier, train, test, matrix: np.ndarray) -> Trust:
    """FID's own controls: the classifier above twice chance, and for every protein the real
    training cells closer to its held-out cells than (a) the held-out cells blurred by σ = 1 px and
    (b) another protein's training cells (:func:`.fast_test.other_protein`)."""
    from . import fid
    from .fast_test import blur, other_protein

    weak = classifier_trust(classifier.accuracy, len(test.class_names))
    if weak is not None:
        return weak
    blurred = test.subset(np.arange(len(test)))
    blurred.images = blur(test.images, 1.0)
    blur_fid = np.diagonal(fid.class_fid_matrix(classifier, blurred, test))
    names, failed, controls = list(test.class_names), [], {}
    for i, name in enumerate(names):
        other = names.index(other_protein(test, name))
        controls[name] = {"real": matrix[i, i], "blur σ=1": blur_fid[i], "other protein": matrix[other, i]}
        if not blur_fid[i] > matrix[i, i]:
            failed.append(f"{name}: blur σ=1 not farther than real")
        if not matrix[other, i] > matrix[i, i]:
            failed.append(f"{name}: {names[other]} not farther than real")
    if failed:
        return untrusted("its controls failed (" + "; ".join(failed) + ")",
                         "more classifier iterations or more cells per protein", controls)
    return Trust(CALIBRATED, f"classifier {classifier.accuracy:.1%} accurate; blur σ=1 and the other protein "
                             "farther than real for every protein", controls=controls)


def features_job(test, train, settings: ClassifierSettings, device, critic=None, critic_file=None) -> Job:
    """Leave-one-out 1-NN protein accuracy of the held-out cells in three embeddings: raw pixels,
    the LIN classifier's features and (with ``critic``) a trained critic's. Returns a
    :class:`FeaturesEvaluation`."""
    from . import fid, profiling

    check_training_cells(train, test)
    train = train.select_classes(list(test.class_names))
    classifier = yield from _classifier(train, test, settings, device)
    embeddings = {"raw pixels": test.images.reshape(len(test), -1).astype(np.float64),
                  "LIN classifier": fid.classifier_features(classifier, test.images)}
    if critic is not None:
        embeddings["critic"] = profiling.critic_features(critic, test.images)
    accuracy = {name: float(profiling.loo_1nn_accuracy(x, test.class_index)) for name, x in embeddings.items()}
    extra = {"train": train.description} | ({"critic": str(critic_file)} if critic_file else {})
    trust = classifier_trust(classifier.accuracy, len(test.class_names)) or Trust(
        CALIBRATED, f"LIN classifier {classifier.accuracy:.1%} accurate on held-out cells (over twice chance)")
    return FeaturesEvaluation(accuracy, {k: int(v.shape[1]) for k, v in embeddings.items()}, classifier.accuracy,
                              settings, _provenance(test, device, others=[train], **extra), trust)


def real_vs_real_trust(scores: np.ndarray, cells, settings: C2STSettings) -> Trust:
    """The matrix's diagonal is its own real-vs-real control: it must sit near the critic's null
    score (an untrained WGAN-GP critic reads ≈ −10 everywhere); then the critic's calibration on
    these cells decides."""
    from .calibrate import NULL_SCORE, NULL_TOLERANCE

    diagonal = float(np.nanmedian(np.diagonal(scores, axis1=1, axis2=2)))
    null = NULL_SCORE[settings.algorithm]
    if not abs(diagonal - null) < NULL_TOLERANCE[settings.algorithm]:
        return untrusted(f"the diagonal (same protein) reads {diagonal:.2f}, not near {null:.2f}: the critics did "
                         f"not learn at {settings.splits} splits × {settings.steps} steps, width {settings.width}",
                         "more critic steps (biogans evaluate calibrate finds how many)")
    return critic_trust(cells, settings)


# ------------------------------------------------------------------------------------------------
# Honest defaults


def c2st_seconds(settings: C2STSettings, critics: int, image_size, device) -> float:
    """Estimated seconds of ``critics`` C2ST critics of ``settings`` on ``device``, from one timed
    step of a single critic (grouped critics cost about the sum of single ones on a CPU)."""
    import torch

    from .c2st import train_and_score

    def draw(b, _rng, ids):
        x = torch.zeros(b, len(ids), 2, *image_size, device=device)
        return x, x

    def timed(steps: int) -> float:
        start = time.perf_counter()
        for _ in train_and_score(draw, draw, 1, image_size=image_size, steps=steps,
                                 batch_size=settings.batch_size, test_batches=1, width=settings.width, device=device,
                                 algorithm=settings.algorithm):
            pass
        return time.perf_counter() - start

    timed(1)  # warm-up: first-call allocations
    per_step = max((timed(3) - timed(1)) / 2, 1e-4)
    return per_step * settings.steps * critics


def c2st_plan(settings: C2STSettings, n_classes: int, cells, device):
    """The groups a generator's C2ST critics (splits x proteins) will train in: a ``c2st.CriticPlan``."""
    from .c2st import plan_critics

    return plan_critics(settings.splits * n_classes, cells.image_size, settings.width, settings.batch_size,
                        settings.algorithm, device, settings.memory_gb, data_bytes=cells.images.nbytes)


CPU_BUDGET_S = 600  # a C2ST estimated to take longer than this on a CPU says so, with a cheaper setting


def c2st_budget(settings: C2STSettings, critics: int, image_size, device):
    """``(seconds, cheaper settings, their seconds)`` when ``critics`` critics of ``settings`` would
    take longer than ``CPU_BUDGET_S`` on a CPU; None on a GPU or for a short run."""
    if getattr(device, "type", str(device)) != "cpu" or settings.steps * critics < 5000:
        return None  # tiny runs do not pay for the measurement
    seconds = c2st_seconds(settings, critics, image_size, device)
    if seconds < CPU_BUDGET_S:
        return None
    cheap = cheaper_c2st(settings)
    if cheap == settings:
        return None  # already as cheap as the suggestion (real vs real's CPU defaults): nothing better to say
    cheap_critics = max(1, critics * cheap.splits // settings.splits)
    return seconds, cheap, c2st_seconds(cheap, cheap_critics, image_size, device)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def cheaper_c2st(settings: C2STSettings) -> C2STSettings:
    """The paper's critic at the cheapest CPU budget that passed its controls (``calibrate.CPU_CRITIC``):
    fewer splits, steps, width and batch, a larger learning rate, a noisier score."""
    from dataclasses import replace

    from .calibrate import CPU_CRITIC

    return replace(settings, splits=min(settings.splits, CPU_CRITIC["splits"]),
                   steps=min(settings.steps, CPU_CRITIC["steps"]), width=min(settings.width, CPU_CRITIC["width"]),
                   batch_size=min(settings.batch_size, CPU_CRITIC["batch_size"]), lr=CPU_CRITIC["lr"])



def cpu_real_vs_real(settings: C2STSettings) -> C2STSettings:
    """Real vs real's defaults on a CPU: 8 proteins x 200 cells in about 10 minutes on 2 cores,
    still separating the similar pairs from the others (benchmarks/bench_real_vs_real.py). At 200
    steps the reference learning rate (1e-4) leaves the critics untrained (every pair near 0 or
    wildly negative, measured); 1e-3 separates them."""
    from dataclasses import replace

    return replace(settings, splits=1, steps=200, width=8, batch_size=32, lr=1e-3)
