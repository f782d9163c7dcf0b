"""How the Diagnostics widget shows an evaluation result: the reconstruction layers, the C2ST
table and the plots. The figures and the numbers are the evaluation pipeline's
(:mod:`napari_biogans.evaluation.outputs`), drawn in napari's theme colours."""

from __future__ import annotations

from dataclasses import asdict

from qtpy.QtWidgets import QTableWidgetItem

from ..evaluation import outputs

GROUP = "reconstruction"  # layer group of the reconstruction layers (replaced on every run)
GAP_PX = 4  # between a real cell and its reconstruction, side by side
METHODS = {"auto": "auto", outputs.FAST_METHOD: "fast", outputs.CRITIC_METHOD: "critic"}  # C2ST methods offered


def reconstruction_layers(result, scale, model_path) -> list[tuple]:
    """Layer data of the cells reconstructed (``reconstruction: real <channel>``) and of their
    reconstructions to the right of them (``reconstruction: <model> <channel>``), with provenance,
    L2, NLL and (on the reconstructions) the codes in ``metadata``."""
    from .._io import cell_layers
    from ..data.lin import CellStack, to_uint8

    cells, rec, source = result.cells, result.reconstruction, result.provenance
    model = source.model or "model"
    provenance = {"model": model, "weights_sha256": source.weights_sha256, "model_path": model_path,
                  "device": source.device, "data": cells.description, "simulated": source.simulated,
                  **asdict(result.settings)}
    rebuilt = CellStack(images=to_uint8(rec.images), class_index=cells.class_index,
                        class_names=list(cells.class_names), file_names=list(cells.file_names),
                        channel_names=cells.channel_names, description=f"reconstruction by {model}",
                        simulated=cells.simulated)
    per_cell = {"provenance": provenance, "l2": rec.l2.tolist(), "nll": rec.nll.tolist(),
                "nn_l2": result.nn_l2.tolist()}
    beside = (0.0, 0.0, (cells.image_size[1] + GAP_PX) * scale[1])
    layers = [(data, {**kwargs, "metadata": {**kwargs["metadata"], **per_cell}}, kind)
              for data, kwargs, kind in cell_layers(cells, f"{GROUP}: real", scale)]
    layers += [(data, {**kwargs, "translate": beside, "metadata": {**kwargs["metadata"], **per_cell, "codes": rec.z}},
                kind) for data, kwargs, kind in cell_layers(rebuilt, f"{GROUP}: {model}", scale)]
    return layers


def _row(name: str, r: dict, fast: bool) -> list[str]:
    if fast:
        controls = "passed" if r["controls_pass"] else "FAILED: " + ", ".join(r["failed"])
        return [name, f"{r['accuracy']:.3f}", f"{r['p_value']:.3g}", str(r["n"]),
                "different" if r["different"] else "indistinguishable", controls]
    return [name, *(f"{r[k]:.3f}" for k in ("median", "mad", "mean", "std")), str(r["n"])]


def fill_c2st_table(table, result) -> None:
    """One row per protein (and "all"): the paper's critics' median, MAD, mean, std over the splits and
    their number; or the fast test's accuracy, p-value, cells a side, verdict and controls."""
    report = result.report
    fast = "accuracy" in next(iter(report.values()))
    table.setHorizontalHeaderLabels(["protein", "accuracy", "p", "cells", "verdict", "controls"] if fast else
                                    ["protein", "median", "MAD", "mean", "std", "splits"])
    table.setRowCount(len(report))
    for i, (name, r) in enumerate(report.items()):
        values = _row(name, r, fast)
        for j, value in enumerate(values):
            table.setItem(i, j, QTableWidgetItem(value))
    table.resizeColumnsToContents()
    # show every row: a handful of proteins, no need to scroll
    table.setFixedHeight(table.horizontalHeader().height() + 2 * table.frameWidth()
                         + sum(table.rowHeight(i) for i in range(table.rowCount())))


def draw(canvas, result) -> None:
    """The result's figure (or an empty plot before any result) in the canvas, in the theme's colours."""
    canvas.ax.clear()
    if result is not None:
        canvas.apply_theme()
        accent, secondary = canvas.line_colors()[:2]
        style = {"foreground": canvas.colors["text"], "background": "none", "accent": accent,
                 "secondary": secondary}
        outputs.draw(result, canvas.ax, style=style)
    ax = canvas.ax  # dock-sized text (the pipeline's figures are sized for PNG files)
    for label in (ax.xaxis.label, ax.yaxis.label):
        label.set_fontsize(8)
    ax.title.set_fontsize(9)
    canvas.draw()
