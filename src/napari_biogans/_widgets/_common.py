"""Shared pieces of the dock widgets: settings, model and device pickers, plots, errors, cached models.

Everything here is Qt/napari glue over the core (``checkpoints``, ``devices``); nothing computes.

* :func:`settings` — a ``QSettings`` store that survives restarts (last model, device, folders,
  trained models). ``BIOGANS_SETTINGS`` points it at an ``.ini`` file instead (tests use it).
* :data:`model_registry` — models trained in this session or earlier (kept in the settings);
  the Train widget registers a finished run, every :class:`ModelPicker` lists it at once.
* :func:`load_generator_cached` — one loaded generator per (file, device), shared by the widgets
  and safe to call from worker threads; a changed file on disk is loaded again.
* :class:`PlotCanvas` — a matplotlib canvas coloured from napari's theme, restyled when it changes.
* :func:`report_error` — an exception or message shown by napari's notifications, with what to do.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path

from qtpy.QtCore import QObject, QSettings, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

SETTINGS_ENV = "BIOGANS_SETTINGS"
BROWSE = "Browse…"

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

    text = str(err) if not isinstance(err, BaseException) else (str(err) or type(err).__name__)
    if isinstance(err, MemoryError):
        text = "out of memory"
        what_to_do = what_to_do or "Use fewer cells, a smaller batch or the CPU."
    elif type(err).__name__ == "OutOfMemoryError":
        what_to_do = what_to_do or "The GPU ran out of memory: use a smaller batch or width, or the CPU."
    message = f"napari-biogans: {text}" + (f" — {what_to_do}" if what_to_do else "")
    show_error(message)
    return message


# --------------------------------------------------------------------------------------------
# Model files: cards read from the header alone, a registry of trained models, a loaded cache


def read_card(path) -> dict:
    """The JSON metadata of a napari-biogans ``.safetensors`` file, read from its header only.

    Raises :class:`napari_biogans.checkpoints.CheckpointError` for anything else.
    """
    from ..checkpoints import HEADER_KEY, CheckpointError

    path = Path(path)
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(size))
        meta = json.loads(header["__metadata__"][HEADER_KEY])
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such model file") from None
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        raise CheckpointError(f"{path}: not a napari-biogans model file (.safetensors with a biogans header)") from None
    return meta


def card_kind(path) -> str | None:
    """The ``kind`` a model file's card declares (None for files that are not napari-biogans models)."""
    from ..checkpoints import CheckpointError

    try:
        return read_card(path).get("kind")
    except CheckpointError:
        return None


RUN_FILE_STEMS = ("generator", "em_model")  # model files inside a run folder are named after the folder


class ModelRegistry(QObject):
    """Model files trained in napari (persisted in the settings); ``changed`` fires on every new one."""

    changed = Signal()
    KEY = "models/trained"

    def files(self) -> dict[str, Path]:
        """Display name -> file for the trained models that still exist (newest last)."""
        out = {}
        for text in get_list_setting(self.KEY):
            path = Path(text)
            if path.is_file():
                out[f"{path.parent.name} (trained)" if path.stem in RUN_FILE_STEMS else path.stem] = path
        return out

    def register(self, path) -> str:
        path = str(Path(path).resolve())
        files = [p for p in get_list_setting(self.KEY) if p != path] + [path]
        set_list_setting(self.KEY, files[-50:])
        self.changed.emit()
        return path


model_registry = ModelRegistry()

_cache_lock = threading.Lock()
_cache: dict[tuple, tuple] = {}
load_count = 0  # how many times a generator was actually read from disk (tests check the cache)


def load_generator_cached(path, device: str = "auto"):
    """``(generator, meta, torch.device)``, loaded once per file version and device (thread safe).

    ``meta`` gains ``name`` (the file's model name), ``sha256`` and ``path``.
    """
    global load_count
    from .. import checkpoints
    from ..devices import resolve_device

    path = Path(path).resolve()
    torch_device = resolve_device(device)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(torch_device))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        checkpoints.verify_shipped(path)
        generator, meta = checkpoints.load_generator(path, torch_device)
        meta = dict(meta)
        meta.setdefault("name", model_name(path))
        meta["sha256"] = checkpoints.file_sha256(path)
        meta["path"] = str(path)
        _cache.clear()  # one model at a time: switching model or device frees the last one
        _cache[key] = (generator, meta, torch_device)
        load_count += 1
        return _cache[key]


def model_name(path) -> str:
    path = Path(path)
    return path.parent.name if path.stem in RUN_FILE_STEMS else path.stem


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


# --------------------------------------------------------------------------------------------
# Pickers


class ModelPicker(QWidget):
    """Catalogue names, models trained here and browsed files, plus "Browse…" for any ``.safetensors``.

    Only files whose card is of ``kind`` are listed ("generator" for the fluorescence models,
    "em-generator" for the EM models). ``path()`` is the chosen file (or None); ``changed`` fires
    with it. The choice is remembered under the settings key ``settings_key``.
    """

    changed = Signal(object)

    def __init__(self, settings_key: str = "generate/model", kind: str = "generator", parent=None):
        super().__init__(parent)
        self._key, self.kind = settings_key, kind
        self._browsed: list[Path] = [Path(p) for p in get_list_setting("models/browsed") if Path(p).is_file()]
        self.combo = QComboBox()
        self.combo.setToolTip(
            "Generator to use: shipped models (catalogue, plus folders in BIOGANS_MODELS), models trained in "
            "the Train widget, or any napari-biogans .safetensors file via Browse…"
        )
        self.combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.combo.setMinimumContentsLength(12)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        self._last: Path | None = None
        self.refresh(select=get_setting(self._key, None))
        self.combo.activated.connect(self._activated)
        model_registry.changed.connect(self.refresh)

    def _entries(self) -> list[tuple[str, Path]]:
        from ..checkpoints import catalogue

        entries, seen = [], set()
        groups = (catalogue().items(), model_registry.files().items(),
                  ((f"{model_name(p)} ({p.name})", p) for p in self._browsed))
        for group in groups:
            for name, path in group:
                key = str(Path(path).resolve())
                if key not in seen and card_kind(path) in (self.kind, None):  # None: broken, shown with its error
                    seen.add(key)
                    entries.append((name, Path(path)))
        return entries

    def refresh(self, select=None) -> None:
        """Rebuild the list, keeping the current choice (or choosing ``select``, a path)."""
        keep = Path(select) if select else self.path()
        self.combo.blockSignals(True)
        self.combo.clear()
        for name, path in self._entries():
            self.combo.addItem(name, str(path))
            self.combo.setItemData(self.combo.count() - 1, str(path), Qt.ItemDataRole.ToolTipRole)
        self.combo.addItem(BROWSE, None)
        index = self._index_of(keep) if keep else -1
        if index < 0 and self.combo.count() > 1:
            index = 0
        self.combo.setCurrentIndex(max(index, 0) if self.combo.count() > 1 else 0)
        self.combo.blockSignals(False)
        new = self.path()
        if new != self._last:
            self._last = new
            self.changed.emit(new)

    def _index_of(self, path) -> int:
        try:
            target = str(Path(path).resolve())
        except OSError:
            return -1
        for i in range(self.combo.count()):
            data = self.combo.itemData(i)
            if data and str(Path(data).resolve()) == target:
                return i
        return -1

    def path(self) -> Path | None:
        data = self.combo.currentData()
        return Path(data) if data else None

    def set_path(self, path) -> None:
        """Choose ``path`` (added to the list as a browsed file when it is not there yet)."""
        path = Path(path)
        kind = card_kind(path)
        if kind not in (self.kind, None):
            where = "Paint EM" if kind == "em-generator" else "Generate cells, Cell cycle or Diagnostics"
            report_error(f"{path.name} is a '{kind}' model, not a '{self.kind}' one", f"open it in {where}")
            return
        if self._index_of(path) < 0:
            self._browsed.append(path)
            set_list_setting("models/browsed", [str(p) for p in self._browsed[-20:]])
        self.refresh(select=path)
        self._remember()

    def _activated(self, index: int) -> None:
        if self.combo.itemData(index) is None:  # Browse…
            start = str(self._last.parent) if self._last else get_setting("folders/models", str(Path.home()))
            file, _ = QFileDialog.getOpenFileName(self, "Choose a napari-biogans model", start,
                                                  "napari-biogans models (*.safetensors)")
            if file:
                set_setting("folders/models", str(Path(file).parent))
                self.set_path(file)
            else:
                self.refresh(select=self._last)
            return
        self._remember()
        new = self.path()
        if new != self._last:
            self._last = new
            self.changed.emit(new)

    def _remember(self) -> None:
        if self.path() is not None:
            set_setting(self._key, str(self.path()))


class DeviceCombo(QWidget):
    """auto / cpu / cuda:N / mps, with the device it resolves to shown beside it; remembered."""

    changed = Signal(str)

    def __init__(self, settings_key: str = "device", parent=None):
        super().__init__(parent)
        from ..devices import available_devices

        self._key = settings_key
        self.combo = QComboBox()
        self.combo.addItems(available_devices())
        self.combo.setToolTip("Where the model runs: auto picks a CUDA GPU, then Apple MPS, then the CPU")
        saved = get_setting(settings_key, "auto")
        if self.combo.findText(saved) >= 0:
            self.combo.setCurrentText(saved)
        self.label = QLabel()
        self.label.setToolTip("The device this choice resolves to on this machine")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.label, 1)
        self.combo.currentTextChanged.connect(self._changed)
        self._update_label()

    def device(self) -> str:
        return self.combo.currentText()

    def _changed(self, text: str) -> None:
        set_setting(self._key, text)
        self._update_label()
        self.changed.emit(text)

    def _update_label(self) -> None:
        from ..devices import describe_device, resolve_device

        try:
            self.label.setText(f"→ {describe_device(resolve_device(self.device()))}")
        except ValueError as err:
            self.label.setText("unavailable")
            self.label.setToolTip(str(err))


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
        self.destroyed.connect(lambda *_: _disconnect(viewer.events.theme, self._on_theme))
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


def row(*widgets, stretch_last: bool = False) -> QWidget:
    """Widgets side by side without margins."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if (stretch_last and i == len(widgets) - 1) else 0)
    return box


def spin(lo: int, hi: int, value: int, tooltip: str):
    """An integer spin box with its range, value and tooltip."""
    from qtpy.QtWidgets import QSpinBox

    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    box.setToolTip(tooltip)
    return box


def button(text: str, tooltip: str, slot) -> QPushButton:
    """A push button with a tooltip that calls ``slot()`` when clicked."""
    widget = QPushButton(text)
    widget.setToolTip(tooltip)
    widget.clicked.connect(lambda *_: slot())
    return widget


def set_row_visible(form, field: QWidget, visible: bool) -> None:
    """Show or hide a QFormLayout row by its field widget (Qt ≥ 6.4 has this built in)."""
    if hasattr(form, "setRowVisible"):
        form.setRowVisible(field, visible)
        return
    field.setVisible(visible)
    label = form.labelForField(field)
    if label is not None:
        label.setVisible(visible)


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
