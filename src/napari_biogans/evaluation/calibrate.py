"""Calibration: every diagnostic proves it can see, on inputs whose answer is known.

From real cells (simulated or the user's), one protein at a time, the cells are split into two
halves, A and B. The controls compare A with:

- ``real vs real``: B, the same protein's other half (expected: indistinguishable);
- ``blur σ=1``, ``blur σ=2``: B blurred by a Gaussian of 1 or 2 px (scikit-image);
- ``intensity −10%``: B with both channels 10 % dimmer;
- ``red↔green``: B with its channels swapped;
- ``other protein``: cells of another protein (the next one of the list that is not its look-alike,
  :func:`.fast_test.other_protein`);
- ``look-alike protein``: cells of the protein that looks most like it (Tea4 for Tea1), reported
  but not required: the real-vs-real table should read such pairs as close;
- ``training copies``: B again, taken as a model's training cells and returned as its samples
  (memorisation: only the nearest-neighbour diagnostic can see it; a two-sample test reads it as
  real vs real, so it is not run there).

The diagnostics: the fast feature test (:mod:`.fast_test`), the paper's critic C2ST at the chosen
budget (critics of every control and split trained together), FID on the feature network's
classifier features (with a permutation p-value) and the nearest-neighbour memorisation check.
A diagnostic **passes its controls** when it reads real vs real as indistinguishable and detects
blur σ = 1 and the other protein (the memorisation check: when it flags the training copies and
not real vs real). The table goes to CSV, markdown and JSON, and each diagnostic's verdict at its
budget is remembered for the cells (by their hash), which is how later results on those cells get
their trust status (:func:`critic_trust`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..jobs import Job, Update
from .fast_test import (FastTestSettings, blur, compare_features, false_alarm_level, feature_net_job, halves,
                        look_alike, other_protein, significant)
from ..atomic import atomic_write
from .files import finite
from .trust import CALIBRATED, Trust, uncalibrated, untrusted

REQUIRED = ("real vs real", "blur σ=1", "other protein")  # a two-sample test passes when these come out right
FAST, CRITIC, FID, NN = "fast feature test", "paper's critic C2ST", "FID (classifier features)", "nearest neighbour"
ALPHA = 0.05
# The paper's critic at the cheapest CPU budget measured to pass its controls (docs/evaluation.md,
# "The paper's critic on a CPU"): real vs real near 0, blur σ = 1 and the other protein above it on
# every split. The reference learning rate (1e-4) leaves a 1,000-step critic untrained.
# 1,000 steps passed on seven of the simulator's eight proteins; Cki2 (a bright, diffuse green) passed at 2,000.
CPU_CRITIC = {"splits": 3, "steps": 2000, "width": 16, "batch_size": 32, "lr": 5e-4}
NULL_SCORE = {"wgan-gp": 0.0, "wgan": 0.0, "gan": -2 * math.log(2)}  # a critic's score on identical sets
# Real vs real must score within this of the null. An untrained WGAN-GP critic reads ≈ −10; a trained one
# reads a little below 0, because its test score keeps the gradient penalty (METHODS D.1: "often slightly
# negative"): single splits at the CPU budget measured −2.3 … +0.4 (docs/evaluation.md). Hence a fifth of
# the untrained offset for WGAN-GP; the clipped WGAN's scores are small and the GAN's null is its floor.
NULL_TOLERANCE = {"wgan-gp": 2.0, "wgan": 0.5, "gan": 0.5}
MEMORISED = 0.5  # nearest-neighbour L2 below this fraction of held-out cells' flags memorisation


@dataclass(frozen=True)
class CalibrationSettings:
    """Which diagnostics and at what budget. ``critic_*``: the paper's C2ST (METHODS D.1) settings."""

    fast: FastTestSettings = FastTestSettings()
    critic_steps: int = CPU_CRITIC["steps"]
    critic_splits: int = CPU_CRITIC["splits"]
    critic_width: int = CPU_CRITIC["width"]
    critic_batch_size: int = CPU_CRITIC["batch_size"]
    critic_algorithm: str = "wgan-gp"
    critic_lr: float | None = CPU_CRITIC["lr"]  # None: the algorithm's reference learning rate
    critic_test_batches: int = 10
    fid_permutations: int = 49
    skip: tuple[str, ...] = ()  # diagnostics left out: "critic", "fid", "fast" (the fast test and FID)
    required_only: bool = False  # only the controls a verdict rests on (a third of the critics)
    seed: int = 0


def control_sets(stack, protein: str, seed: int = 0, required_only: bool = False
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``control -> (A, B)`` uint8 pairs for one protein (A is always the same half); with
    ``required_only``, the controls a verdict rests on and the training copies."""
    mine = stack.images[stack.class_index == stack.class_names.index(protein)]
    if len(mine) < 8:
        raise ValueError(f"{stack.description}: {protein} has {len(mine)} cells; calibration needs at least 8")
    first, second = halves(len(mine), seed)
    a, b = mine[first], mine[second]
    dim = np.rint(b.astype(np.float32) * 0.9).astype(np.uint8)
    sets = {"real vs real": (a, b), "blur σ=1": (a, blur(b, 1.0)), "blur σ=2": (a, blur(b, 2.0)),
            "intensity −10%": (a, dim), "red↔green": (a, b[:, ::-1].copy())}
    rng = np.random.default_rng(seed)
    similar = look_alike(stack, protein)
    other = other_protein(stack, protein, similar)
    for control, name in (("other protein", other), ("look-alike protein", similar if similar != other else None)):
        if name is not None:
            theirs = stack.images[stack.class_index == stack.class_names.index(name)]
            sets[control] = (a, theirs[rng.permutation(len(theirs))[: len(b)]])
    sets["training copies"] = (a, b)  # B is the training set and the "generated" cells alike
    if required_only:
        sets = {c: pair for c, pair in sets.items() if c in REQUIRED or c == "training copies"}
    return sets


def expected(diagnostic: str, control: str) -> str:
    if diagnostic == NN:
        return "flagged" if control == "training copies" else "not flagged"
    return "indistinguishable" if control == "real vs real" else "different"


def _applies(diagnostic: str, control: str) -> bool:
    if diagnostic == NN:
        return control in ("real vs real", "training copies")
    return control != "training copies"


# ------------------------------------------------------------------------------------------------
# The diagnostics on the controls


def _row(diagnostic, protein, control, score, p_value, answer, budget) -> dict:
    want = expected(diagnostic, control)
    return {"diagnostic": diagnostic, "protein": protein, "control": control, "score": score, "p_value": p_value,
            "expected": want, "answer": answer, "pass": answer == want, "budget": budget}


def _embedded(net, sets: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``control -> (features of A, features of B)``; A (the same half for every control) embedded once."""
    fa = net.features(next(iter(sets.values()))[0])
    return {control: (fa, net.features(b)) for control, (_, b) in sets.items()}


def _answer(control: str, p: float, n_proteins: int) -> str:
    """Real vs real is a false alarm only below the Bonferroni level over the proteins calibrated
    together; a defect is detected at p ≤ 0.05."""
    level = false_alarm_level(ALPHA, n_proteins) if control == "real vs real" else ALPHA
    return "different" if significant(p, level) else "indistinguishable"


def _fast_rows(features, protein, n_proteins: int, settings: CalibrationSettings, budget: str) -> list[dict]:
    rows = []
    for k, (control, (fa, fb)) in enumerate(features.items()):
        if not _applies(FAST, control):
            continue
        r = compare_features(fa, fb, settings.fast, salt=k)
        rows.append(_row(FAST, protein, control, r["accuracy"], r["p_value"],
                         _answer(control, r["p_value"], n_proteins), budget))
    return rows


def fid_permutation(fa: np.ndarray, fb: np.ndarray, permutations: int, seed: int) -> tuple[float, float]:
    """``(FID, p-value)``: the Fréchet distance of two feature sets and the fraction of random
    re-splits of their union that reach it."""
    from .fid import frechet_distance

    value = frechet_distance(fa, fb)
    both, rng, reached = np.concatenate([fa, fb]), np.random.default_rng(seed), 0
    for _ in range(permutations):
        order = rng.permutation(len(both))
        reached += frechet_distance(both[order[: len(fa)]], both[order[len(fa) :]]) >= value
    return value, (1 + reached) / (1 + permutations)


def _fid_rows(features, classifier_dims: int, protein, n_proteins: int, settings: CalibrationSettings,
             budget: str) -> list[dict]:
    rows = []
    for k, (control, (fa, fb)) in enumerate(features.items()):
        if not _applies(FID, control):
            continue
        value, p = fid_permutation(fa[:, -classifier_dims:], fb[:, -classifier_dims:], settings.fid_permutations,
                                   settings.seed + k)
        rows.append(_row(FID, protein, control, value, p, _answer(control, p, n_proteins), budget))
    return rows


def _nn_rows(protein, sets, budget: str) -> list[dict]:
    from .reconstruction import nearest_neighbour_l2

    a, train = sets["training copies"]
    baseline = float(np.median(nearest_neighbour_l2(a, train)[0]))  # held-out cells to the training cells
    rows = []
    for control in ("real vs real", "training copies"):
        generated = a if control == "real vs real" else train
        ratio = float(np.median(nearest_neighbour_l2(generated, train)[0])) / baseline
        rows.append(_row(NN, protein, control, ratio, None, "flagged" if ratio < MEMORISED else "not flagged",
                         budget))
    return rows


def critic_scores(controls: dict[str, dict[str, tuple]], settings: CalibrationSettings, device) -> Job:
    """The paper's critic C2ST on every (protein, control), ``critic_splits`` critics each, all trained
    together. A job returning ``(protein, control) -> scores (splits,)``."""
    import torch

    from .c2st import Pools, plan_critics, train_and_score

    keys = [(p, c) for p, sets in controls.items() for c in sets if _applies(CRITIC, c)]
    images, pools = [], {"train": ([], []), "test": ([], [])}
    offset = 0
    for protein, control in keys:
        a, b = controls[protein][control]
        images += [a, b]
        for s in range(settings.critic_splits):
            for side, (cells, start) in enumerate(((a, offset), (b, offset + len(a)))):
                test, train = halves(len(cells), settings.seed + 1 + s)
                pools["train"][side].append(train + start)
                pools["test"][side].append(test + start)
        offset += len(a) + len(b)
    stacked = np.concatenate(images)
    draw = {role: [Pools(stacked, side, device) for side in sides] for role, sides in pools.items()}
    critics = len(keys) * settings.critic_splits
    plan = plan_critics(critics, stacked.shape[-2:], settings.critic_width, settings.critic_batch_size,
                        settings.critic_algorithm, torch.device(device), None, data_bytes=stacked.nbytes)
    result = yield from train_and_score(
        lambda n, rng, ids: (draw["train"][0](n, rng, ids), draw["train"][1](n, rng, ids)),
        lambda n, rng, ids: (draw["test"][0](n, rng, ids), draw["test"][1](n, rng, ids)),
        critics, image_size=stacked.shape[-2:], algorithm=settings.critic_algorithm, steps=settings.critic_steps,
        batch_size=settings.critic_batch_size, test_batches=settings.critic_test_batches,
        width=settings.critic_width, device=device, seed=settings.seed, lr=settings.critic_lr, plan=plan)
    scores = result.scores.reshape(len(keys), settings.critic_splits)
    return {key: scores[i] for i, key in enumerate(keys)}


def _critic_rows(scores: dict, settings: CalibrationSettings, budget: str) -> list[dict]:
    """Real vs real reads indistinguishable when its median score is near the critic's null; a control
    is detected when its scores rank above real vs real's (one-sided Mann–Whitney, p ≤ 0.05: with 3
    splits a side, only when every split scores higher)."""
    from scipy.stats import mannwhitneyu

    null = NULL_SCORE[settings.critic_algorithm]
    rows = []
    scores = {key: np.asarray(values, np.float64) for key, values in scores.items()}  # float32 made p = 0.0500000007
    for (protein, control), values in scores.items():
        median = float(np.median(values))
        if control == "real vs real":
            tolerance = NULL_TOLERANCE[settings.critic_algorithm]
            near = abs(median - null) < tolerance
            row = _row(CRITIC, protein, control, median, None,
                       "indistinguishable" if near else f"off the null ({null:.2f} ± {tolerance})", budget)
        else:
            p = float(mannwhitneyu(values, scores[(protein, "real vs real")], alternative="greater").pvalue)
            row = _row(CRITIC, protein, control, median, p,
                       "different" if significant(p, ALPHA) else "indistinguishable", budget)
        rows.append(row | {"splits": [float(v) for v in values]})  # every split's score, in the JSON
    return rows


# ------------------------------------------------------------------------------------------------
# The whole suite


@dataclass
class Calibration:
    rows: list[dict]
    verdicts: dict  # diagnostic -> {"pass": bool, "budget": str, "failed": [...], "settings": {...}}
    data: str
    data_sha256: str
    device: str
    simulated: bool
    seconds: dict  # diagnostic -> wall seconds


def passes(rows: list[dict], diagnostic: str) -> tuple[bool, list[str]]:
    """Whether ``diagnostic`` passed its required controls on every protein, and which failed."""
    required = ("real vs real", "training copies") if diagnostic == NN else REQUIRED
    failed = [f"{r['protein']}: {r['control']} read {r['answer']}" for r in rows
              if r["diagnostic"] == diagnostic and r["control"] in required and not r["pass"]]
    return not failed, failed


def critic_budget(settings: CalibrationSettings) -> str:
    return (f"{settings.critic_splits} splits × {settings.critic_steps} steps, width {settings.critic_width}, "
            f"batch {settings.critic_batch_size}, learning rate {settings.critic_lr or 'the reference'}, "
            f"{settings.critic_algorithm}")


def calibrate_job(stack, proteins: list[str] | None, settings: CalibrationSettings, device="cpu") -> Job:
    """Run every diagnostic on every control of ``proteins`` (default: all) of the real ``stack``.
    A job returning a :class:`Calibration`; its verdicts are remembered for the cells' hash."""
    import time

    from ..training.data import stack_hash

    names = list(proteins or stack.class_names)
    missing = [n for n in names if n not in stack.class_names]
    if missing:
        raise ValueError(f"{stack.description}: no cells of {missing} (it holds {list(stack.class_names)})")
    controls = {p: control_sets(stack, p, settings.seed, settings.required_only) for p in names}
    rows, seconds = [], {}
    if "fast" not in settings.skip:  # the feature network serves the fast test and FID
        start = time.perf_counter()
        net = yield from feature_net_job(stack, settings.fast, device)
        fast_budget = (f"feature net width {settings.fast.feature_width}, {settings.fast.feature_iterations} "
                       f"iterations, {settings.fast.permutations} permutations")
        features = {p: _embedded(net, controls[p]) for p in names}
        for p in names:
            rows += _fast_rows(features[p], p, len(names), settings, fast_budget)
        seconds[FAST] = time.perf_counter() - start
    yield Update(1, 3, "fast feature test, FID and nearest neighbour")
    if not {"fast", "fid"} & set(settings.skip):
        start = time.perf_counter()
        dims = net.model.config["features"]
        for p in names:
            rows += _fid_rows(features[p], dims, p, len(names), settings, f"{settings.fid_permutations} permutations")
        seconds[FID] = time.perf_counter() - start
        yield Update(2, 3, "fast feature test, FID and nearest neighbour")
    start = time.perf_counter()
    for p in names:
        rows += _nn_rows(p, controls[p], "exact L2")
    seconds[NN] = time.perf_counter() - start
    yield Update(3, 3, "fast feature test, FID and nearest neighbour")
    if "critic" not in settings.skip:
        start = time.perf_counter()
        scores = yield from critic_scores(controls, settings, device)
        rows += _critic_rows(scores, settings, critic_budget(settings))
        seconds[CRITIC] = time.perf_counter() - start
    verdicts = {}
    for diagnostic in dict.fromkeys(r["diagnostic"] for r in rows):
        ok, failed = passes(rows, diagnostic)
        verdicts[diagnostic] = {"pass": ok, "failed": failed,
                                "budget": next(r["budget"] for r in rows if r["diagnostic"] == diagnostic)}
    if CRITIC in verdicts:  # remembered per protein, so proteins calibrated in separate runs add up
        verdicts[CRITIC]["settings"] = _critic_key(settings)
        verdicts[CRITIC]["proteins"] = {p: dict(zip(("pass", "failed"), passes(
            [r for r in rows if r["protein"] == p], CRITIC))) for p in names}
    result = Calibration(rows, verdicts, stack.description, stack_hash(stack), str(device), stack.simulated, seconds)
    remember(result)
    return result


# ------------------------------------------------------------------------------------------------
# Remembered verdicts, and the trust of later results


def _critic_key(settings: CalibrationSettings) -> dict:
    return {"steps": settings.critic_steps, "splits": settings.critic_splits, "width": settings.critic_width,
            "algorithm": settings.critic_algorithm, "batch_size": settings.critic_batch_size, "lr": settings.critic_lr}


def _record_path(data_sha256: str) -> Path:
    from ..training.data import cache_dir

    return cache_dir() / "calibrations" / f"{data_sha256[:32]}.json"


def remember(calibration: Calibration) -> Path:
    """Add this calibration's critic verdicts to the cells' record: one entry per budget, holding a
    verdict per protein (a later run at the same budget adds its proteins or replaces theirs)."""
    path = _record_path(calibration.data_sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:  # calibrations of other proteins may finish at once
        try:
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
        except ImportError:  # Windows: no advisory locks
            pass
        record = _records(calibration.data_sha256)
        critic = calibration.verdicts.get(CRITIC)
        if critic:
            same = next((r for r in record if r["settings"] == critic["settings"]), None)
            proteins = {**(same["proteins"] if same else {}), **critic["proteins"]}
            record = [r for r in record if r is not same] + [
                {"settings": critic["settings"], "budget": critic["budget"], "proteins": proteins}]
        text = json.dumps({"data_sha256": calibration.data_sha256, "critic": record}, indent=2)
        return atomic_write(path, lambda p: p.write_text(text))


def _records(data_sha256: str) -> list[dict]:
    path = _record_path(data_sha256)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if data.get("data_sha256") != data_sha256:  # another data set's: stale
        return []
    return [r for r in data.get("critic", []) if "proteins" in r]  # older records held no per-protein verdicts


def critic_trust(stack, steps: int, splits: int, width: int, algorithm: str, data_sha256: str | None = None,
                 lr: float | None = None, batch_size: int = 64, proteins=None) -> Trust:
    """Trust of a paper's-critic C2ST of ``proteins`` (default: all of ``stack``'s) at this budget, from
    the remembered calibrations at the same algorithm and learning rate (None: the reference's):
    calibrated when every protein passed at no more steps, splits, width and batch; failed when one
    failed at no fewer; else not calibrated (with the cheapest budget known to pass)."""
    from ..training.data import stack_hash

    names = list(proteins or stack.class_names)
    records = [r for r in _records(data_sha256 or stack_hash(stack))
               if r["settings"]["algorithm"] == algorithm and r["settings"].get("lr") == lr]
    budget = {"steps": steps, "splits": splits, "width": width, "batch_size": batch_size}

    def at_most(r):
        return all(r["settings"][k] <= v for k, v in budget.items())

    def at_least(r):
        return all(r["settings"][k] >= v for k, v in budget.items())

    def verdict(r, p):  # True, False or None (not calibrated there)
        return r["proteins"].get(p, {}).get("pass")

    def cost(r):
        return r["settings"]["steps"] * r["settings"]["splits"] * r["settings"]["width"]

    covering = [r for r in records if all(verdict(r, p) for p in names)]
    cheapest = min(covering, key=cost, default=None)
    needed = f"at least {cheapest['budget']}" if cheapest else (
        f"a calibration at this budget: biogans evaluate calibrate --data <these cells> --steps {steps} "
        f"--splits {splits} --width {width} --batch-size {batch_size} --algorithm {algorithm}"
        + (f" --lr {lr:g}" if lr else "") + f" --proteins {','.join(names)}")
    passed = {p: next((r for r in records if at_most(r) and verdict(r, p)), None) for p in names}
    if all(passed.values()):
        budgets = sorted({r["budget"] for r in passed.values()})
        return Trust(CALIBRATED, f"passed its controls on these cells at {' and '.join(budgets)}")
    controls = {p: CALIBRATED if passed[p] else "failed controls" if any(
        at_least(r) and verdict(r, p) is False for r in records) else "not calibrated" for p in names}
    failed = [(p, r) for p in names for r in records if not passed[p] and at_least(r) and verdict(r, p) is False]
    if failed:
        detail = "; ".join(f for p, r in failed[:3] for f in r["proteins"][p]["failed"][:1])
        fine = [p for p in names if passed[p]]
        also = f"; calibrated for {', '.join(fine)}" if fine else ""
        bad = sorted({p for p, _ in failed})
        more = (f"more critic steps, calibrated first: biogans evaluate calibrate --data <these cells> --proteins "
                f"{','.join(bad)} --steps {2 * steps} --splits {splits} --width {width} --batch-size {batch_size} "
                f"--algorithm {algorithm}" + (f" --lr {lr:g}" if lr else "") + " --critic-only --required-controls")
        return untrusted(f"failed its controls on these cells at {failed[0][1]['budget']} ({detail}){also}", more,
                         controls)
    missing = [p for p in names if not passed[p]]
    weaker = sorted({r["budget"] for r in records for p in missing if verdict(r, p) is False})
    known = f" (it failed its controls at {', '.join(weaker)})" if weaker else ""
    return uncalibrated(f"no calibration of the critic C2ST of {', '.join(missing)} on these cells at {splits} "
                        f"splits × {steps} steps, width {width}, batch {batch_size}, learning rate "
                        f"{lr or 'the reference'}{known}", needed)


def fast_trust(report: dict) -> Trust:
    """Trust of a fast feature test from its own controls (run with every answer)."""
    failed = [f"{name}: {', '.join(r['failed'])}" for name, r in report.items() if not r["controls_pass"]]
    controls = {name: {c: f"accuracy {v['accuracy']:.2f}, p={v['p_value']:.3g}" for c, v in r["controls"].items()}
                for name, r in report.items()}
    if failed:
        return untrusted("its controls came out wrong (" + "; ".join(failed) + ")",
                         "more cells per protein or a trained feature network (--fast-iterations)", controls)
    return Trust(CALIBRATED, "real vs real indistinguishable, blur σ=1 and the other protein detected, for every "
                             "protein", controls=controls)


# ------------------------------------------------------------------------------------------------
# Files


HEADER = ["diagnostic", "protein", "control", "score", "p_value", "expected", "answer", "pass", "budget"]


def markdown(calibration: Calibration) -> str:
    lines = [f"Calibration on {calibration.data} ({'SIMULATED cells, ' if calibration.simulated else ''}"
             f"device {calibration.device})", "",
             "| diagnostic | protein | control | score | p | expected | answer | pass |",
             "|---|---|---|---|---|---|---|---|"]
    for r in calibration.rows:
        p = "" if r["p_value"] is None else f"{r['p_value']:.3g}"
        lines.append(f"| {r['diagnostic']} | {r['protein']} | {r['control']} | {r['score']:.3g} | {p} | "
                     f"{r['expected']} | {r['answer']} | {'yes' if r['pass'] else '**no**'} |")
    lines += ["", "| diagnostic | budget | passes its controls | seconds |", "|---|---|---|---|"]
    for name, v in calibration.verdicts.items():
        verdict = "yes" if v["pass"] else "**no**: " + "; ".join(v["failed"][:3])
        lines.append(f"| {name} | {v['budget']} | {verdict} | {calibration.seconds.get(name, float('nan')):.0f} |")
    return "\n".join(lines) + "\n"


def write(calibration: Calibration, out_dir) -> dict[str, Path]:
    """``calibration.csv``, ``calibration.md`` and ``calibration.json`` in ``out_dir``."""
    import csv
    import io


    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    if calibration.simulated:
        buffer.write(f"# SIMULATED cells (not real LIN data): {calibration.data}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows([["" if v is None else v for v in finite([r[k] for k in HEADER])] for r in calibration.rows])
    text, md = buffer.getvalue(), markdown(calibration)
    body = json.dumps(finite(asdict(calibration)), indent=2, allow_nan=False) + "\n"
    return {"csv": atomic_write(out / "calibration.csv", lambda p: p.write_text(text)),
            "md": atomic_write(out / "calibration.md", lambda p: p.write_text(md)),
            "json": atomic_write(out / "calibration.json", lambda p: p.write_text(body))}

