"""Paint EM's live rendering: a Labels layer rendered by an EM model's image generator into the
"EM render" Image layer, following every edit.

A stroke or fill fires ``paint``, replacing ``.data`` fires ``data``, undo and redo fire
``set_data``. They restart a short single-shot timer (debounce); when it fires, the labels are
copied and rendered by :func:`napari_biogans.em_session.render_job` in a worker. One render runs
at a time: a request that arrives meanwhile only sets a flag, and the render that follows takes
the labels as they are then (latest wins). The renderer diffs the copy against the labels it
rendered last and re-renders only the tiles whose window changed; renderers are kept per (model
file, device, tile, noise seed, map shape), so switching between two label maps does not start over.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from ..em_session import render_job
from . import _common, model_picker
from .workers import start_job

RENDER_NAME = "EM render"
DEBOUNCE_MS = 200
KEPT_RENDERERS = 4  # a few maps' tile caches (a 1024² map with 256 px tiles holds ~6 MB)
SIDE_GAP_PX = 16  # between the labels and the render placed beside them


class LiveRender(QObject):
    """Renders ``target`` (a Labels layer) whenever it changes. ``settings()`` gives (model path or None,
    device, tile, noise seed, side by side). ``rendered`` fires with the number of tiles rendered once the
    render layer shows a new render; ``message`` says how many tiles and how long, or what went wrong."""

    rendered = Signal(int)
    message = Signal(str)

    def __init__(self, viewer, settings, parent=None):
        super().__init__(parent)
        self.viewer, self.settings = viewer, settings
        self.target = None
        self.render_layer = None
        self._renderers: OrderedDict[tuple, object] = OrderedDict()
        self._shown = None  # (target, renderer key) the render layer shows
        self._worker = None
        self._pending = False
        self._last_error = ""
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.render)

    def busy(self) -> bool:
        """True while a render is waiting or running."""
        return self._timer.isActive() or self._worker is not None

    def schedule(self, event=None) -> None:
        """Render after a short quiet spell (a burst of events gives one render)."""
        self._timer.start()

    def restart(self) -> None:
        """Model, device, tile or noise seed changed: renderers start over."""
        self._renderers.clear()
        self.schedule()

    @staticmethod
    def _events(layer):
        # a stroke or fill fires paint, a new .data fires data, undo and redo fire set_data
        return layer.events.paint, layer.events.data, layer.events.set_data

    def set_target(self, layer) -> None:
        """Render ``layer`` (a Labels layer, or None) and follow its edits."""
        if self.target is not None:
            self.forget(self.target)
        self.target, self._last_error = layer, ""
        if layer is not None:
            for emitter in self._events(layer):
                emitter.connect(self.schedule)
        self.schedule()

    def forget(self, layer) -> None:
        """Stop following ``layer``'s edits (napari outlives the widget: leave no callbacks behind)."""
        for emitter in self._events(layer):
            _common._disconnect(emitter, self.schedule)

    def layer_removed(self, layer) -> None:
        if layer is self.render_layer:
            self.render_layer = self._shown = None

    def render(self):
        """Render the target in a worker (or ask for another render after the running one)."""
        if self._worker is not None:
            self._pending = True  # latest wins: the next render copies the labels as they are then
            return None
        layer = self.target
        path, device, tile, noise_seed, _ = self.settings()
        if layer is None:
            return None
        if path is None:
            self.message.emit("Choose an EM model to render the labels.")
            return None
        try:
            stamp = path.stat().st_mtime_ns  # a re-trained file is a new model
        except OSError as err:
            self._failed(err)
            return None
        labels = np.array(layer.data, copy=True)  # painting goes on while the worker renders
        key = (str(path), stamp, device, tile, noise_seed, labels.shape)
        renderer = self._renderers.get(key)
        if renderer is None:
            self.message.emit("rendering every tile…")
        self._worker = start_job(render_job, renderer, path, device, tile, noise_seed, labels, what="Rendering EM",
                                 on_done=lambda result: self._show(result, key, layer), on_error=self._failed,
                                 on_finished=self._finished)
        return self._worker

    def _finished(self) -> None:
        self._worker = None
        if self._pending:
            self._pending = False
            self.render()

    def _failed(self, err) -> None:
        self.message.emit(f"render failed: {err}")
        if str(err) != self._last_error:  # once per problem, not once per stroke
            self._last_error = str(err)
            what = "paint with labels 0 (cytoplasm), 1 (membrane) or 2 (mitochondria) only" \
                if "not codes" in str(err) else "choose another model or labels layer, or the cpu device"
            _common.report_error(err, what)

    def _show(self, result, key, layer) -> None:
        from napari.layers import Image

        renderer, image, n, total, seconds = result
        self._renderers[key] = renderer
        self._renderers.move_to_end(key)
        while len(self._renderers) > KEPT_RENDERERS:
            self._renderers.popitem(last=False)
        self._last_error = ""
        if layer not in self.viewer.layers:
            return
        if n == 0 and self._shown == (layer, key) and self.render_layer is not None:
            return  # a refresh without edits: the render layer already shows this
        metadata = {"source_labels": layer.name, "model": model_picker.model_name(key[0]), "model_path": key[0],
                    "device": str(renderer.device), "noise_seed": renderer.noise_seed, "tile": renderer.tile,
                    "overlap": renderer.overlap}
        if self.render_layer is None:
            self.render_layer = Image(image, name=RENDER_NAME, colormap="gray", contrast_limits=(0, 255),
                                      metadata=metadata)
            self.place(layer)
            self.viewer.layers.insert(self.viewer.layers.index(layer), self.render_layer)
            self.viewer.layers.selection.active = layer  # an inserted layer becomes active: keep painting the labels
            self.viewer.reset_view()
        else:
            self.render_layer.metadata = metadata
            self.render_layer.data = image
            self.place(layer)
        self._shown = (layer, key)
        self.message.emit(f"{n} of {total} tiles rendered in {seconds * 1000:.0f} ms on {renderer.device} "
                          f"(tile {renderer.tile} px, noise seed {renderer.noise_seed})")
        self.rendered.emit(n)

    def place(self, layer=None) -> None:
        """The render at the labels' scale, beside them (to the right) or under them."""
        layer = layer or self.target
        render = self.render_layer
        if render is None or layer is None:
            return
        render.scale, render.units = layer.scale, layer.units
        translate = np.array(layer.translate, dtype=float)
        if self.settings()[4]:
            translate[-1] += (layer.data.shape[-1] + SIDE_GAP_PX) * layer.scale[-1]
        render.translate = translate
