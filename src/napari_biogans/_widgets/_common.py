"""Shared pieces of the dock widgets: settings, path fields, plots, errors, layer helpers.

Everything here is Qt/napari glue over the core; nothing computes. The model and device pickers
and the widgets' view of the model loader are in :mod:`.model_picker`; the fields and rows that
forms are built from in :mod:`.forms`.

* :func:`settings` — a ``QSettings`` store that survives restarts (last model, device, folders,
  trained models). ``BIOGANS_SETTINGS`` points it at an ``.ini`` file instead (tests use it).
* :class:`PathEdit` — a line edit with Browse buttons, remembered in the settings.
* :class:`PlotCanvas` — a matplotlib canvas coloured from napari's theme, restyled when it changes.
* :func:`report_error` — an exception or message shown by napari's notifications, with what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from qtpy.QtCore import QSettings
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

SETTINGS_ENV = "BIOGANS_SETTINGS"

# --------------------------------------------------------------------------------------------
# Settings


def settings() -> QSettings:
    """The plugin's persistent settings (``BIOGANS_SETTINGS`` = path of an .ini file to use instead)."""
    path = os.environ.get(SETTINGS_ENV)
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings("napari-biogans", "napari-biogans")


def get_setting(key: str, default=None):
    value = settings().value(key, default)
    return default if value is None else value


def set_setting(key: str, value) -> None:
    store = settings()
    store.setValue(key, value)
    store.sync()


def get_list_setting(key: str) -> list[str]:
    """A list of strings stored as JSON (QSettings' own list handling differs between formats)."""
    try:
        value = json.loads(get_setting(key, "[]"))
    except (TypeError, ValueError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def set_list_setting(key: str, values) -> None:
    set_setting(key, json.dumps([str(v) for v in values]))


def get_int_setting(key: str, default: int) -> int:
    try:
        return int(get_setting(key, default))
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------------------------
# Errors


def report_error(err, what_to_do: str = "") -> str:
    """Show ``err`` (an exception or text) as a napari error notification; returns the text shown."""
    from napari.utils.notifications import show_error

    from ..atomic import WriteError
    from ..training.run_folder import RunFolderBusy

    text = str(err) if not isinstance(err, BaseException) else (str(err) or type(err).__name__)
    if isinstance(err, MemoryError):
        text = "out of memory"
        what_to_do = what_to_do or "Use fewer cells, a smaller batch or the CPU."
    elif isinstance(err, WriteError):  # a read-only folder or a full disk
        what_to_do = "choose a folder you can write to, or free disk space; what was saved before is kept"
    elif isinstance(err, RunFolderBusy):  # its message names the holder and what to do
        what_to_do = ""
    elif type(err).__name__ == "OutOfMemoryError":
        from ..devices import out_of_memory_message

        text = out_of_memory_message(err).split(":")[0]
        what_to_do = what_to_do or "Use a smaller batch or width, or the CPU; checkpoints saved before are kept."
    message = f"napari-biogans: {text}" + (f" — {what_to_do}" if what_to_do else "")
    show_error(message)
    return message


# --------------------------------------------------------------------------------------------
# Paths


class PathEdit(QWidget):
    """A line edit with Browse buttons for a file and/or a folder; remembered under ``settings_key``."""

    def __init__(self, settings_key: str, tooltip: str, file_filter: str | None = None, folder: bool = True,
                 default: str = "", parent=None):
        from qtpy.QtWidgets import QLineEdit

        super().__init__(parent)
        self._key, self._filter = settings_key, file_filter
        self.edit = QLineEdit(get_setting(settings_key, default))
        self.edit.setToolTip(tooltip)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        if file_filter:
            button = QPushButton("File…")
            button.setToolTip("Choose a file")
            button.clicked.connect(self._browse_file)
            layout.addWidget(button)
        if folder:
            button = QPushButton("Folder…")
            button.setToolTip("Choose a folder")
            button.clicked.connect(self._browse_folder)
            layout.addWidget(button)
        self.edit.editingFinished.connect(self._remember)

    def text(self) -> str:
        return self.edit.text().strip()

    def set_text(self, text: str) -> None:
        self.edit.setText(str(text))
        self._remember()

    def _start(self) -> str:
        text = self.text()
        return str(Path(text).parent if text else Path.home())

    def _browse_file(self) -> None:
        file, _ = QFileDialog.getOpenFileName(self, "Choose a file", self._start(), self._filter)
        if file:
            self.set_text(file)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder", self._start())
        if folder:
            self.set_text(folder)

    def _remember(self) -> None:
        set_setting(self._key, self.text())


# --------------------------------------------------------------------------------------------
# Plots


class PlotCanvas(QWidget):
    """A matplotlib figure in a QWidget, coloured from the viewer's theme and restyled on change.

    Draw with ``self.ax``; call :meth:`draw` afterwards (it re-applies the theme colours). Margins
    are fixed in pixels and refitted on resize instead of a layout engine, which keeps a redraw
    at a few tens of milliseconds: the GUI thread stays free while a model trains.
    """

    MARGINS_PX = (52, 10, 12, 36)  # left, right, top, bottom
    top_extra_px = 0  # room above the axes for a legend row (set by the widget that puts one there)

    def __init__(self, viewer, height: float = 2.2, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = viewer
        self.figure = Figure(figsize=(4, height), dpi=90)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setStyleSheet("background-color: transparent;")
        self.canvas.setMinimumHeight(int(height * 70))
        self.ax = self.figure.add_subplot(111)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.colors: dict[str, str] = {}
        self.canvas.mpl_connect("resize_event", self._fit_margins)
        viewer.events.theme.connect(self._on_theme)
        self.destroyed.connect(self._disconnect_theme)  # a bound method: see forms.follow_layers
        self.apply_theme()
        self._fit_margins()

    def _fit_margins(self, event=None) -> None:
        width, height = self.figure.bbox.width, self.figure.bbox.height
        if width < 50 or height < 50:
            return
        left, right, top, bottom = self.MARGINS_PX
        top += (14 if self.ax.get_title() else 0) + self.top_extra_px
        self.figure.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height,
                                    bottom=bottom / height)

    def _disconnect_theme(self, *_) -> None:
        _disconnect(self.viewer.events.theme, self._on_theme)

    def _on_theme(self, event=None) -> None:
        try:
            self.apply_theme()
            self.canvas.draw_idle()
        except RuntimeError:  # the Qt side is gone
            pass

    def theme_colors(self) -> dict[str, str]:
        from napari.utils.theme import get_theme

        theme = get_theme(self.viewer.theme)
        return {key: getattr(theme, key).as_hex() for key in ("text", "primary", "secondary", "highlight",
                                                                "current", "warning", "background", "foreground")}

    def apply_theme(self) -> None:
        self.colors = self.theme_colors()
        text, grid = self.colors["text"], self.colors["highlight"]
        self.figure.patch.set_alpha(0.0)
        for ax in self.figure.axes:
            ax.set_facecolor("none")
            for spine in ax.spines.values():
                spine.set_color(grid)
            ax.tick_params(colors=text, labelsize=8)
            ax.xaxis.label.set_color(text)
            ax.yaxis.label.set_color(text)
            ax.title.set_color(text)
            ax.grid(True, color=grid, alpha=0.35, linewidth=0.6)
            legend = ax.get_legend()
            if legend is not None:
                legend.get_frame().set_alpha(0.0)
                for label in legend.get_texts():
                    label.set_color(text)

    def line_colors(self) -> list[str]:
        """Colours for lines that read on both themes: napari's accent first, then matplotlib's."""
        return [self.colors.get("current", "#4560c4"), "#e07b39", "#3ba55c", "#c94fd6", "#d4b02e", "#39b8c9"]

    def draw(self) -> None:
        self.apply_theme()
        self._fit_margins()
        self.canvas.draw_idle()


def _disconnect(emitter, callback) -> None:
    try:
        emitter.disconnect(callback)
    except (RuntimeError, TypeError, ValueError):
        pass


def add_or_update_layers(viewer, layer_data: list[tuple], group: str | None = None) -> list:
    """Add image layer tuples, or replace the data of same-named layers already in the viewer.

    A same-named layer with another dimensionality is replaced. With ``group``, earlier layers of
    that group (``metadata['biogans_group']``) that are not in ``layer_data`` are removed, so a
    re-run with fewer proteins leaves no stale layers. Returns the layers, in order.
    """
    from napari.layers import Image

    names = {kwargs["name"] for _, kwargs, _ in layer_data}
    if group is not None:
        for layer in list(viewer.layers):
            if layer.metadata.get("biogans_group") == group and layer.name not in names:
                viewer.layers.remove(layer)
    layers = []
    for data, kwargs, _kind in layer_data:
        kwargs = dict(kwargs)
        if group is not None:
            kwargs["metadata"] = {**kwargs.get("metadata", {}), "biogans_group": group}
        name = kwargs["name"]
        existing = viewer.layers[name] if name in viewer.layers else None
        if isinstance(existing, Image) and existing.ndim == data.ndim and not existing.rgb and \
                not kwargs.get("rgb", False):
            existing.metadata = kwargs.get("metadata", {})
            existing.data = data
            if "contrast_limits" in kwargs:
                existing.contrast_limits = kwargs["contrast_limits"]
            if "axis_labels" in kwargs:
                existing.axis_labels = kwargs["axis_labels"]
            layers.append(existing)
            continue
        if existing is not None:
            viewer.layers.remove(existing)
        layers.append(viewer.add_image(data, **kwargs))
    return layers


def stack_from_layers(red, green):
    """The cells of a red and a green image layer (cells, H, W) as a CellStack.

    Classes come from the red layer's metadata as the plugin's readers leave it; layers without
    them count as one protein named after the green layer (as in the Train widget).
    """
    import numpy as np

    from ..data.lin import CellStack

    if red is green:
        raise ValueError("the red and the green layer must be different layers")
    r, g = np.asarray(red.data), np.asarray(green.data)
    if r.shape != g.shape or r.ndim != 3:
        raise ValueError(f"'{red.name}' {r.shape} and '{green.name}' {g.shape} must both be (cells, H, W)")
    images = np.stack([r, g], axis=1)
    if images.dtype != np.uint8:
        if images.min() < 0 or images.max() > 255:
            raise ValueError(f"'{red.name}' / '{green.name}' must hold 0..255 intensities (uint8 cells)")
        images = np.round(images).astype(np.uint8)
    meta, n = red.metadata, len(images)
    class_names, class_index = list(meta.get("class_names", [])), meta.get("class_index")
    if not class_names or class_index is None or len(class_index) != n:
        class_names, class_index = [green.name], [0] * n
    return CellStack(images=images, class_index=np.asarray(class_index), class_names=class_names,
                     file_names=list(meta.get("file_names", [f"cell{i}" for i in range(n)]))[:n],
                     description=f"napari layers '{red.name}' + '{green.name}'",
                     simulated=bool(meta.get("simulated", False)))
