"""The one writer of evaluation results: the tables (CSV), the JSON and the figures (PNG) that
``biogans evaluate`` writes and the Diagnostics widget shows and exports.

Numbers keep full precision (reading a file back gives the same floats). A result made from
simulated cells, or from a model trained on them, says so in its CSV's first line, its JSON
(``simulated``) and its figure's title. A result whose diagnostic did not pass its controls at this
budget (:class:`.trust.Trust`) says so the same way: a ``# UNTRUSTED ...`` CSV line, the JSON's
``trust`` object, its figure's title and the first line of :func:`describe`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from . import plots
from .files import finite
from .trust import FAILED, Trust
from .pipeline import (
    SIMULATED_NOTE,
    C2STEvaluation,
    FastC2STEvaluation,
    FeaturesEvaluation,
    FIDEvaluation,
    RealVsRealEvaluation,
    ReconstructionEvaluation,
)

STEMS = {C2STEvaluation: "c2st", FastC2STEvaluation: "fast_c2st", ReconstructionEvaluation: "reconstruction",
         RealVsRealEvaluation: "real_vs_real",
         FIDEvaluation: "fid", FeaturesEvaluation: "features"}
MATRIX_TITLE = "real vs real C2ST (mean over splits)"
FAST_METHOD = "fast feature test"  # vs the paper's critic C2ST: every output says which one made it
CRITIC_METHOD = "paper's critic C2ST"
FAST_CONTROLS = ("real vs real", "blur σ=1", "other protein")


def stem(result) -> str:
    """The file name stem of a result's outputs: ``c2st``, ``reconstruction``, ``real_vs_real``, ..."""
    return STEMS[type(result)]


def untrusted_line(result) -> str | None:
    """The line that marks a result that did not pass its controls (None for a trusted one)."""
    return None if result.trust.trusted else result.trust.line()


def simulated_line(result) -> str | None:
    """The line that marks an output made from simulated cells (None for real ones)."""
    if not result.provenance.simulated:
        return None
    return f"{SIMULATED_NOTE} (not real LIN data): {result.provenance.data}"


# ------------------------------------------------------------------------------------------------
# Tables


def table(result) -> tuple[list[str], list[list]]:
    """``(header, rows)`` of a result's CSV."""
    if isinstance(result, C2STEvaluation):
        report = result.report
        splits = len(next(iter(report.values()))["scores"])
        header = ["protein", "median", "mad", "mean", "std", *[f"split{s}" for s in range(splits)]]
        return header, [[name, r["median"], r["mad"], r["mean"], r["std"], *r["scores"]] for name, r in report.items()]
    if isinstance(result, FastC2STEvaluation):
        header = ["protein", "accuracy", "p_value", "cells", "different", "controls_pass",
                  *[f"{c} {k}" for c in FAST_CONTROLS for k in ("accuracy", "p_value")]]
        return header, [[name, r["accuracy"], r["p_value"], r["n"], r["different"], r["controls_pass"],
                         *[r["controls"].get(c, {}).get(k) for c in FAST_CONTROLS for k in ("accuracy", "p_value")]]
                        for name, r in result.report.items()]
    if isinstance(result, ReconstructionEvaluation):
        cells, rec, nn = result.cells, result.reconstruction, result.nn_l2
        header = ["file", "protein", "l2", "nll", "nll_start", "nn_l2"]
        return header, [[cells.file_names[i], cells.class_names[cells.class_index[i]], rec.l2[i], rec.nll[i],
                         rec.nll_start[i], nn[i]] for i in range(len(cells))]
    if isinstance(result, RealVsRealEvaluation):
        mean = result.mean
        return ["A \\ B", *result.names], [[name, *mean[i]] for i, name in enumerate(result.names)]
    if isinstance(result, FIDEvaluation):
        header = ["protein", "real (train vs test)", result.provenance.model]
        return header, [[name, result.real[i], result.generated[i]] for i, name in enumerate(result.names)]
    header = ["embedding", "1-NN protein accuracy", "dimensions"]
    return header, [[k, v, result.dimensions[k]] for k, v in result.accuracy.items()]


def table_text(result) -> str:
    """The CSV file's text: the simulated-cells and untrusted lines (``#`` comments), the header, the rows."""
    buffer = io.StringIO()
    for note in (simulated_line(result), untrusted_line(result)):
        if note:
            buffer.write(f"# {note}\n")
    header, rows = table(result)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in finite(row)] for row in rows)
    return buffer.getvalue()


def read_table(path) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of a CSV this module wrote, its ``#`` lines skipped."""
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    header, *rows = list(csv.reader(lines))
    return header, rows


# ------------------------------------------------------------------------------------------------
# JSON


def settings_of(result) -> dict:
    """Every setting that made the numbers, with the model, the data, the device and the simulated flag."""
    p = result.provenance
    return {**asdict(result.settings), "model": p.model, "weights_sha256": p.weights_sha256, "data": p.data,
            "device": p.device, "simulated": p.simulated, **p.extra}


def summary(result) -> dict:
    """The JSON body of a result."""
    from .c2st import summarize
    from .reconstruction import median_mad

    head = {"trust": result.trust.as_dict(), "simulated": result.provenance.simulated}
    if result.provenance.simulated:
        head["note"] = simulated_line(result)
    head["settings"] = settings_of(result)
    if isinstance(result, C2STEvaluation):
        body = {"method": CRITIC_METHOD, "scores": result.report}
    elif isinstance(result, FastC2STEvaluation):
        body = {"method": FAST_METHOD, "scores": result.report}
    elif isinstance(result, ReconstructionEvaluation):
        rec, nn = result.reconstruction, result.nn_l2[np.isfinite(result.nn_l2)]
        body = {"l2": median_mad(rec.l2), "nll": median_mad(rec.nll), "nn_l2": median_mad(nn) if len(nn) else None,
                "nn_baseline": result.nn_source, "cells": len(result.cells), "mode": result.settings.mode,
                "restarts": result.settings.restarts, "steps": result.settings.steps, "model": result.provenance.model,
                "device": result.provenance.device}
    elif isinstance(result, RealVsRealEvaluation):
        scores = result.scores
        body = {"names": result.names, "sets": list(result.sets), "mean": result.mean, "std": np.nanstd(scores, axis=0),
                "scores": scores, "diagonal": summarize(np.diagonal(scores, axis1=1, axis2=2).ravel())}
    elif isinstance(result, FIDEvaluation):
        body = {"classifier_accuracy": result.classifier_accuracy,
                "fid": {n: {"real": result.real[i], "generated": result.generated[i]} for i, n in enumerate(result.names)}}
    else:
        body = {"classifier_accuracy": result.classifier_accuracy, "accuracy": result.accuracy,
                "dimensions": result.dimensions}
    return finite({**head, **body})


def read_trust(path) -> Trust:
    """The trust status of a result's JSON file, as this module wrote it."""
    return Trust.from_dict(json.loads(Path(path).read_text())["trust"])


def summary_text(result) -> str:
    return json.dumps(summary(result), indent=2, allow_nan=False) + "\n"


# ------------------------------------------------------------------------------------------------
# Figures


def has_figure(result) -> bool:
    return isinstance(result, (C2STEvaluation, FastC2STEvaluation, ReconstructionEvaluation, RealVsRealEvaluation))


def title(result, text: str = "") -> str:
    """A figure's title, ``UNTRUSTED: ...`` first when the result did not pass its controls and
    ``SIMULATED cells`` when it comes from simulated cells or models."""
    marks = (SIMULATED_NOTE if result.provenance.simulated else "",
             "" if result.trust.trusted else result.trust.short(), text)
    return " — ".join(t for t in marks if t)


def draw(result, ax, style=plots.LIGHT) -> None:
    """Draw a result's figure into ``ax`` (the CLI's PNG and the widget's themed canvas alike)."""
    if isinstance(result, C2STEvaluation):
        plots.c2st_scores(ax, result.report, style=style)
        ax.set_title(title(result, f"{CRITIC_METHOD}, {result.provenance.model}"))
    elif isinstance(result, FastC2STEvaluation):
        names = list(result.report)
        accuracy = [result.report[n]["accuracy"] for n in names]
        ax.bar(range(len(names)), accuracy, color=style["foreground"], alpha=0.7)
        ax.axhline(0.5, color=style["foreground"], linestyle="--", linewidth=1)
        for i, n in enumerate(names):
            ax.text(i, accuracy[i], f"p={result.report[n]['p_value']:.2g}", ha="center", va="bottom", fontsize=7,
                    color=style["foreground"])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("leave-one-out accuracy (0.5: indistinguishable)")
        ax.set_title(title(result, f"{FAST_METHOD}, {result.provenance.model}"))
    elif isinstance(result, ReconstructionEvaluation):
        rec, nn = result.reconstruction, result.nn_l2
        plots.reconstruction_scatter(ax, rec.l2, rec.nll, nn_l2=nn[np.isfinite(nn)], nz=result.nz, style=style,
                                     label=f"{len(rec.l2)} cells",
                                     nn_label=f"nearest neighbour, median ({result.nn_source})")
        ax.set_title(title(result, f"reconstruction, {result.provenance.model}"))
    elif isinstance(result, RealVsRealEvaluation):
        plots.score_matrix(ax, result.mean, result.names, style=style, title=title(result, MATRIX_TITLE))
        ax.set_ylabel(result.sets[0])  # which cells A and B are depends on the training split
        ax.set_xlabel(result.sets[1])
    else:
        raise ValueError(f"no figure for {stem(result)} results")
    ax.title.set_color(style["foreground"])


# ------------------------------------------------------------------------------------------------
# Files


def write_table(result, path) -> Path:
    """Write the result's CSV to ``path``."""
    text = table_text(result)
    return atomic_write(Path(path), lambda p: p.write_text(text))


def write_outputs(result, out_dir) -> dict[str, Path]:
    """Write ``<stem>.csv``, ``<stem>.json`` and ``<stem>.png`` (and ``reconstructions.tif`` of a
    reconstruction) in ``out_dir``; returns them by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = stem(result)
    files = {"csv": write_table(result, out / f"{name}.csv")}
    text = summary_text(result)
    files["json"] = atomic_write(out / f"{name}.json", lambda p: p.write_text(text))
    if has_figure(result):
        size = (6, 5) if isinstance(result, RealVsRealEvaluation) else (5, 4)
        files["png"] = out / f"{name}.png"
        plots.save_figure(lambda ax: draw(result, ax), files["png"], size=size)
    if isinstance(result, ReconstructionEvaluation):  # an OME-TIFF, cells along T in the CSV's row order
        from .. import ome
        from ..data.lin import to_uint8

        metadata = {"stack_axis": "cell", "content": "latent reconstructions, one per CSV row",
                    "provenance": finite(asdict(result.provenance)), "trust": result.trust.as_dict()}
        files["tif"] = ome.write(out / "reconstructions.tif", to_uint8(result.reconstruction.images), "TCYX",
                                 list(result.cells.channel_names), result.cells.pixel_size_um, metadata)
    return files


# ------------------------------------------------------------------------------------------------
# Text


def describe(result) -> str:
    """A short human summary, as the CLI prints it and the widget shows it."""
    from .reconstruction import median_mad

    lines = [f"[{simulated_line(result)}]"] if result.provenance.simulated else []
    lines.append(result.trust.line())
    if isinstance(result, FastC2STEvaluation):
        lines.append(f"{FAST_METHOD} (not the paper's critic C2ST): leave-one-out accuracy of a linear classifier "
                     "on cached features, 0.5 = indistinguishable, with a permutation p-value")
        lines += [f"{name:>10}: accuracy {r['accuracy']:.2f}, p = {r['p_value']:.3g} over {r['n']} cells a side: "
                  f"{'different from real' if r['different'] else 'indistinguishable from real'}"
                  for name, r in result.report.items()]
    elif isinstance(result, C2STEvaluation):
        lines.append(f"{CRITIC_METHOD} (METHODS D.1), lower is closer to real")
        lines += [f"{name:>10}: median {r['median']:.2f} ± {r['mad']:.2f} (MAD), mean {r['mean']:.2f} ± {r['std']:.2f}"
                  for name, r in result.report.items()]
    elif isinstance(result, ReconstructionEvaluation):
        rec, nn = result.reconstruction, result.nn_l2
        l2, nll = median_mad(rec.l2), median_mad(rec.nll)
        prior_mean, prior_sd = plots.prior_nll(result.nz)
        text = f"{len(rec.l2)} cells · L2 {l2[0]:.3f} ± {l2[1]:.3f} (median ± MAD)"
        known = np.isfinite(nn)
        if known.any():
            base = median_mad(nn[known])
            beats = int(np.sum(rec.l2[known] < nn[known]))
            text += (f" vs nearest neighbour {base[0]:.3f} ± {base[1]:.3f} ({result.nn_source}; the model is "
                     f"closer for {beats} of {int(known.sum())} cells)")
        text += f" · NLL {nll[0]:.1f} ± {nll[1]:.1f} vs prior {prior_mean:.1f} ± {prior_sd:.1f} (mean ± sd)"
        lines.append(text)
    elif isinstance(result, RealVsRealEvaluation):
        lines.append(f"mean score matrix (rows {result.sets[0]}, columns {result.sets[1]}):")
        lines.append("        " + " ".join(f"{n:>6}" for n in result.names))
        lines += [f"{name:>7} " + " ".join(f"{v:6.1f}" for v in result.mean[i]) for i, name in enumerate(result.names)]
    elif isinstance(result, FIDEvaluation):
        lines.append(f"LIN classifier: {result.classifier_accuracy:.1%} protein accuracy on the held-out cells")
        if result.trust.status == FAILED:
            lines.append("FID not shown: it failed its controls (the numbers are in the files, marked UNTRUSTED)")
            return "\n".join(lines)
        lines += [f"{name:>10}: FID real {result.real[i]:.3f}, generated {result.generated[i]:.3f}"
                  for i, name in enumerate(result.names)]
    else:
        lines.append(f"LIN classifier: {result.classifier_accuracy:.1%} protein accuracy on the held-out cells")
        lines += [f"{name:>15}: leave-one-out 1-NN protein accuracy {value:.1%}"
                  for name, value in result.accuracy.items()]
    return "\n".join(lines)
