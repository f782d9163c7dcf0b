"""Issue 14: damaged and hostile model files are refused when chosen in a widget's model picker, with
a notification saying what is wrong and what to do; never an exception, never black or garbage layers.

The files come from scripts/fuzz.py's own mutations (one per kind of damage); one viewer holds
Generate cells (over a display-less ViewerModel: choosing a model touches no layer), and Paint EM's
picker (the same ModelPicker, kind em-generator) gets the EM ones.
"""

import importlib.util
import random
import sys
from pathlib import Path

import pytest

from napari_biogans import checkpoints
from napari_biogans._widgets import _common, model_picker
from napari_biogans._widgets.generate import GenerateWidget

pytestmark = pytest.mark.gui

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz.py"
if "biogans_fuzz" not in sys.modules:
    spec = importlib.util.spec_from_file_location("biogans_fuzz", SCRIPT)
    sys.modules["biogans_fuzz"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["biogans_fuzz"])
fuzz = sys.modules["biogans_fuzz"]

# (mutation name in fuzz.py, a word the notification must hold)
FLUORESCENCE_CASES = [
    ("NaN or infinite weight", "NaN or infinite"),
    ("integer or bool weights", "expected floating point"),
    ("tensor of another shape", "shape"),
    ("metadata not JSON", "biogans"),
    ("config width", "width"),
    ("class_names", "class_names"),
    ("directory", "folder"),
]
EM_CASES = [("kind", "em-generator"), ("FIFO", "not a regular file")]


def mutated(base, mutations, name, folder: Path) -> Path:
    folder.mkdir()
    path = base(folder)
    mutation = next(m for m in mutations if m[0] == name)
    rng = random.Random(0)
    for _ in range(20):  # a mutation whose drawn value happens to be harmless is drawn again
        result = mutation[2](path, rng)
        if checkpoints.model_problem(result) is not None:
            return result
        path = base(folder)
    raise AssertionError(f"{name}: no damaging draw")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(_common.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    model_picker.clear_cache()


def test_bad_model_files_are_refused_at_selection(qtbot, tmp_path, monkeypatch, one_torch_thread):
    from napari.components import ViewerModel

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = ViewerModel()
    widget = GenerateWidget(viewer)
    good = fuzz.base_fluorescence_model(tmp_path)
    widget.model.set_path(good)
    assert widget.model.path() == good and not shown
    for k, (name, word) in enumerate(FLUORESCENCE_CASES):
        bad = mutated(fuzz.base_fluorescence_model, fuzz.FLUORESCENCE_MUTATIONS, name, tmp_path / f"f{k}")
        widget.model.set_path(bad)
        assert len(shown) == k + 1, name
        assert word in shown[-1] and " — choose another model" in shown[-1] and "\n" not in shown[-1], shown[-1]
        assert widget.model.path() == good and widget.run_button.isEnabled(), name  # the last good choice stays
    assert len(viewer.layers) == 0

    em_picker = model_picker.ModelPicker("paint_em/model", kind="em-generator")  # Paint EM's picker
    good_em = fuzz.base_em_model(tmp_path)
    em_picker.set_path(good_em)
    before = len(shown)
    for k, (name, word) in enumerate(EM_CASES):
        bad = mutated(fuzz.base_em_model, fuzz.EM_MUTATIONS, name, tmp_path / f"e{k}")
        em_picker.set_path(bad)
        assert len(shown) == before + k + 1 and word in shown[-1], (name, shown[before - 1:])
        assert em_picker.path() == good_em
