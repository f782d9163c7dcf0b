"""The "Export model…" button of Generate cells and Paint EM: a save dialog, then
:func:`napari_biogans.export.export_job` in a worker (the CLI's ``biogans export``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QLabel, QPushButton

from . import _common
from .workers import start_job

FILTERS = {"onnx": "ONNX model (*.onnx)", "bioimageio": "bioimage.io model package (*.zip)"}


def format_for(path, chosen_filter: str = "") -> str:
    """The export format a file name (or, without a known suffix, the dialog's filter) asks for."""
    suffix = Path(path).suffix.lower()
    if suffix == ".zip":
        return "bioimageio"
    if suffix == ".onnx":
        return "onnx"
    return "bioimageio" if chosen_filter == FILTERS["bioimageio"] else "onnx"


class ExportModelButton(QPushButton):
    """Exports the model ``model_path()`` names; says what it wrote (and how closely it matches) in ``status``.
    ``seed()``: the EM noise built into the export (Paint EM's noise seed), or the test codes' seed."""

    def __init__(self, model_path: Callable[[], object], status: QLabel, seed: Callable[[], int] = lambda: 0):
        super().__init__("Export model…")
        self.setToolTip("Save the model as ONNX or as a bioimage.io package (deepImageJ, ilastik, bioimageio.core); "
                        "the export is run once and checked against this plugin's own output")
        self.model_path, self.status, self.seed = model_path, status, seed
        self.worker = None
        self.clicked.connect(lambda *_: self.choose())

    def choose(self) -> None:
        model = self.model_path()
        if model is None:
            _common.report_error("no model chosen", "choose a model first")
            return
        start = str(Path(_common.get_setting("export/folder", str(Path.home()))) / f"{Path(str(model)).stem}.onnx")
        file, chosen = QFileDialog.getSaveFileName(self, "Export the model", start, ";;".join(FILTERS.values()))
        if file:
            _common.set_setting("export/folder", str(Path(file).parent))
            self.export(model, file, format_for(file, chosen))

    def export(self, model, out, fmt: str | None = None):
        """Start the export of ``model`` to ``out``; returns the worker."""
        from ..export import describe, export_job

        self.setEnabled(False)
        self.status.setText("exporting…")
        self.worker = start_job(
            export_job, model, fmt or format_for(out), out, seed=self.seed(), what="Export model",
            on_update=lambda update: self.status.setText(f"export: {update.stage}…"),
            on_done=lambda result: self.status.setText(describe(result)),
            on_error=self._failed, on_finished=lambda: self.setEnabled(True))
        return self.worker

    def _failed(self, err) -> None:
        self.status.setText(f"export failed: {err}")
        _common.report_error(err, "pip install 'napari-biogans[export]' if a library is missing")
