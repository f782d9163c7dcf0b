"""The widgets' view of the model loader: model and device pickers, trained models, cached models.

Thin over the core: :mod:`napari_biogans.models.loader` loads and caches every model (the CLI's
loader too), :mod:`napari_biogans.checkpoints` resolves names and reads cards; this module adds
only what is Qt's.

* :data:`model_registry` — models trained in this session or earlier (kept in the settings);
  the Train widget registers a finished run, every :class:`ModelPicker` lists it at once.
* :func:`load_generator_cached` / :func:`load_em_model_cached` — the core loader's cached model
  for a file and device, safe to call from worker threads; a changed file is loaded again.
* :class:`ModelPicker` — catalogue, trained and browsed models of one kind; :class:`DeviceCombo`.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QSizePolicy, QWidget

from ..models.loader import load_em_model_cached, load_generator_cached  # noqa: F401  (re-exported)
from ..checkpoints import RUN_FILE_STEMS, canonical_path, card_kind, catalogue, model_name, model_problem, read_card
from ._common import get_list_setting, get_setting, report_error, set_list_setting, set_setting

__all__ = ["RUN_FILE_STEMS", "DeviceCombo", "ModelPicker", "ModelRegistry", "card_kind", "clear_cache",
           "load_em_model_cached", "load_generator_cached", "model_name", "model_registry", "read_card"]

BROWSE = "Browse…"


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
                out[f"{model_name(path)} (trained)" if path.stem in RUN_FILE_STEMS else path.stem] = path
        return out

    def register(self, path) -> str:
        path = str(canonical_path(path))
        files = [p for p in get_list_setting(self.KEY) if p != path] + [path]
        set_list_setting(self.KEY, files[-50:])
        self.changed.emit()
        return path


model_registry = ModelRegistry()


def clear_cache() -> None:
    from ..models import loader

    loader.clear_cache()


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
        entries, seen = [], set()
        groups = (catalogue().items(), model_registry.files().items(),
                  ((f"{model_name(p)} ({p.name})", p) for p in self._browsed))
        for group in groups:
            for name, path in group:
                key = str(canonical_path(path))
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
            target = str(canonical_path(path))
        except OSError:
            return -1
        for i in range(self.combo.count()):
            data = self.combo.itemData(i)
            if data and str(canonical_path(data)) == target:
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
        if not self._usable(path):
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
        if not self._usable(self.path()):
            self.refresh(select=self._last)  # back to the last usable choice
            return
        self._remember()
        new = self.path()
        if new != self._last:
            self._last = new
            self.changed.emit(new)

    def _usable(self, path) -> bool:
        """Check a chosen model file whole (card, config bounds, tensors, finite weights) before it is
        used; a broken one is refused here with a notification, never later with black layers."""
        problem = model_problem(path, self.kind)
        if problem is not None:
            report_error(problem, "choose another model, or retrain or re-download this one")
        return problem is None

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
