"""Building blocks of the dock widgets' forms: fields with their tooltips, rows, and the red and
green cell-layer pair that Train and Diagnostics read cells from.

Qt glue only; the values go to the core unchanged.
"""

from __future__ import annotations

import weakref

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QSpinBox, QWidget

from . import _common

CELL_FILTER = "Cell stacks (*.h5 *.hdf5 *.tif *.tiff)"
RED = "Bgs4"  # the red channel's name, the end of a red cell layer's name as the readers make it

# --------------------------------------------------------------------------------------------
# Fields


def spin(lo: int, hi: int, value: int, tooltip: str) -> QSpinBox:
    """An integer spin box with its range, value and tooltip."""
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    box.setToolTip(tooltip)
    return box


def setting_spin(lo: int, hi: int, key: str, default: int, tooltip: str) -> QSpinBox:
    """A spin box that starts at the value remembered under ``key``; :func:`remember` saves it."""
    box = spin(lo, hi, _common.get_int_setting(key, default), tooltip)
    box.setProperty("settings_key", key)
    return box


def remember(*boxes: QSpinBox) -> None:
    """Save the values of :func:`setting_spin` boxes (when a job starts with them)."""
    for box in boxes:
        _common.set_setting(box.property("settings_key"), box.value())


def double_spin(lo: float, hi: float, value: float, tooltip: str, decimals: int | None = None,
                step: float | None = None, suffix: str = "") -> QDoubleSpinBox:
    """A floating-point spin box with its range, value and tooltip."""
    box = QDoubleSpinBox()
    box.setRange(lo, hi)
    if decimals is not None:  # before the value, which the box rounds to its decimals
        box.setDecimals(decimals)
    if step is not None:
        box.setSingleStep(step)
    box.setSuffix(suffix)
    box.setValue(value)
    box.setToolTip(tooltip)
    return box


def combo(items, tooltip: str, current: str | None = None) -> QComboBox:
    """A drop-down of ``items`` with a tooltip, showing ``current`` when it is one of them."""
    box = QComboBox()
    box.addItems(list(items))
    if current is not None:
        box.setCurrentText(current)
    box.setToolTip(tooltip)
    return box


def refill(box: QComboBox, names, choice: str) -> None:
    """Replace a drop-down's items and select ``choice``, without firing its change signals."""
    box.blockSignals(True)
    box.clear()
    box.addItems(list(names))
    box.setCurrentText(choice)
    box.blockSignals(False)


def button(text: str, tooltip: str, slot) -> QPushButton:
    """A push button with a tooltip that calls ``slot()`` when clicked."""
    widget = QPushButton(text)
    widget.setToolTip(tooltip)
    widget.clicked.connect(lambda *_: slot())
    return widget


def text_label(tooltip: str = "", selectable: bool = False) -> QLabel:
    """An empty, word-wrapped label for a status or a result line."""
    from qtpy.QtCore import Qt

    label = QLabel("")
    label.setWordWrap(True)
    if tooltip:
        label.setToolTip(tooltip)
    if selectable:
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


# --------------------------------------------------------------------------------------------
# Rows


def row(*widgets, stretch_last: bool = False) -> QWidget:
    """Widgets side by side without margins."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if (stretch_last and i == len(widgets) - 1) else 0)
    return box


def set_row_visible(form, field: QWidget, visible: bool) -> None:
    """Show or hide a QFormLayout row by its field widget (Qt ≥ 6.4 has this built in)."""
    if hasattr(form, "setRowVisible"):
        form.setRowVisible(field, visible)
        return
    field.setVisible(visible)
    label = form.labelForField(field)
    if label is not None:
        label.setVisible(visible)


def follow_layers(owner: QWidget, viewer, callback) -> None:
    """Call the bound method ``callback`` whenever a layer is added to or removed from the viewer,
    until ``owner`` is destroyed (the viewer outlives a closed dock widget)."""
    follower = _LayerFollower(viewer, callback)
    owner.__dict__.setdefault("_layer_followers", []).append(follower)  # lives as long as owner's wrapper
    owner.destroyed.connect(follower.unfollow)


class _LayerFollower:
    """Connected to ``destroyed`` as a bound method, never as a closure: PyQt holds a bound method's
    object weakly, so it is not called while the garbage collector tears its owner down (running
    a closure then crashes the interpreter)."""

    def __init__(self, viewer, callback):
        self.emitters = (viewer.layers.events.inserted, viewer.layers.events.removed)
        self.callback = weakref.WeakMethod(callback)
        for emitter in self.emitters:
            emitter.connect(callback)

    def unfollow(self, *_) -> None:
        callback = self.callback()
        if callback is not None:
            for emitter in self.emitters:
                _common._disconnect(emitter, callback)


# --------------------------------------------------------------------------------------------
# Cells from layers


class CellLayerPair:
    """Drop-downs of a red and a green image layer of cells, (cells, H, W), kept in step with the viewer.

    A red Bgs4 layer is chosen first, then a green layer of the same reader's set (same name before
    "Bgs4"), else one that is not red. ``skip_layer`` is never offered; layers of ``results_group``
    are offered but not chosen by default (a widget's own results are not its input).
    """

    def __init__(self, viewer, owner: QWidget, red_tooltip: str, green_tooltip: str, skip_layer: str = "",
                 results_group: str | None = None):
        self.viewer, self.skip_layer, self.results_group = viewer, skip_layer, results_group
        self.red, self.green = QComboBox(), QComboBox()
        self.red.setToolTip(red_tooltip)
        self.green.setToolTip(green_tooltip)
        follow_layers(owner, viewer, self.refresh)
        self.refresh()

    def _image_layers(self) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 3
                and not layer.rgb and layer.name != self.skip_layer]

    def refresh(self, *_) -> None:
        """List the layers; keep the choices that are still there, choose the others afresh."""
        try:
            red_now, green_now = self.red.currentText(), self.green.currentText()
        except RuntimeError:  # the widget is gone, the viewer is not
            return
        layers = self._image_layers()
        names = [layer.name for layer in layers]
        inputs = [layer.name for layer in layers
                  if self.results_group is None or layer.metadata.get("biogans_group") != self.results_group]
        reds = [n for n in inputs if n.endswith(RED)]
        red = red_now if red_now in names else (reds or inputs or names or [""])[0]
        greens = [n for n in names if n != red]
        prefix = red[: -len(RED)] if red.endswith(RED) else None
        same_set = [n for n in greens if prefix is not None and n.startswith(prefix) and not n.endswith(RED)]
        green = green_now if green_now in greens else (same_set + [n for n in greens if not n.endswith(RED)]
                                                       + greens + [""])[0]
        refill(self.red, names, red)
        refill(self.green, names, green)

    def layers(self):
        """The chosen ``(red, green)`` layers; a ValueError when one is missing."""
        red, green = self.red.currentText(), self.green.currentText()
        if not red or not green:
            raise ValueError("choose a red and a green image layer of cells (cells, H, W)")
        return self.viewer.layers[red], self.viewer.layers[green]

    def stack(self):
        """The chosen layers' cells as a CellStack (a copy, taken on the GUI thread)."""
        return _common.stack_from_layers(*self.layers())
