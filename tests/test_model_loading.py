"""One model loader for the CLI and the widgets: catalogue names, model files and run folders, the
same provenance name and hash check everywhere, clear errors for the wrong kind of model, and
sample files that say when the model learned from simulated cells."""

import json
import shutil

import h5py
import numpy as np
import pytest
import tifffile

from napari_biogans import checkpoints, cli, ome
from napari_biogans.models import loader
from napari_biogans.sampling import SIMULATED_NOTE, Samples, write_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as ``biogans train --out RUN`` leaves it (2 iterations of a width-4 star model)."""
    root = tmp_path_factory.mktemp("trained")
    assert cli.main(["simulate", "--out", str(root / "data"), "--cells-per-class", "4", "--proteins", "Sid2,Tea1"]) == 0
    run = root / "my-run"
    assert cli.main(["train", "--data", str(root / "data" / "LIN_Simulated_WT_size-48-80_train"), "--model", "star",
                     "--batch-size", "2", "--width", "4", "--nz", "16", "--iterations", "2", "--device", "cpu",
                     "--out", str(run)]) == 0
    return run


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("BIOGANS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(checkpoints.MODELS_ENV, raising=False)
    loader.clear_cache()


def tiff_metadata(path) -> dict:
    return ome.read(path).metadata


def test_sample_and_interpolate_take_the_run_folder_that_train_wrote(run_dir, tmp_path, capsys):
    model_file = run_dir / "generator.safetensors"
    assert cli.main(["sample", "--model", str(run_dir), "--n", "3", "--seed", "4", "--out", str(tmp_path / "a.tif")]) == 0
    assert "SIMULATED" in capsys.readouterr().out
    assert cli.main(["sample", "--model", str(model_file), "--n", "3", "--seed", "4", "--out",
                     str(tmp_path / "b.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif"))
    meta = tiff_metadata(tmp_path / "a.tif")
    # named after the run folder, whichever way it was given, with the file's own hash
    assert meta["provenance"]["model"] == "my-run" == tiff_metadata(tmp_path / "b.tif")["provenance"]["model"]
    assert meta["provenance"]["weights_sha256"] == checkpoints.file_sha256(model_file)
    assert meta["simulated_training_data"] is True and meta["note"] == SIMULATED_NOTE

    out = tmp_path / "cycle.h5"
    assert cli.main(["interpolate", "--model", str(run_dir), "--anchors", "0", "1", "--frames", "3", "--device", "cpu",
                     "--out", str(out)]) == 0
    with h5py.File(out, "r") as f:
        assert bool(f.attrs["simulated_training_data"]) and f.attrs["note"] == SIMULATED_NOTE
        assert json.loads(f.attrs["provenance"])["model"] == "my-run"

    assert cli.main(["info", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert f"model name: my-run, sha256 {checkpoints.file_sha256(model_file)}" in text and "iterations: 2" in text


def test_cli_and_widget_loaders_give_the_same_name_and_hash(run_dir):
    from napari_biogans._widgets import model_picker

    for name in ("star-6", str(run_dir)):
        generator, meta = cli._model(name, "cpu")
        path = checkpoints.resolve_model(name)
        widget_generator, widget_meta, device = model_picker.load_generator_cached(path, "cpu")
        assert widget_generator is generator  # one cache: the widget gets the model the CLI loaded
        assert (widget_meta["name"], widget_meta["sha256"]) == (meta["name"], meta["sha256"])
        assert meta["sha256"] == checkpoints.file_sha256(path) and str(device) == "cpu"
    assert meta["name"] == "my-run"


def test_info_takes_catalogue_names(capsys):
    for name in ("star-6", "vnc-dsgan"):
        assert cli.main(["info", name]) == 0
        out = capsys.readouterr().out
        card = json.loads(checkpoints.catalogue()[name].with_suffix(".json").read_text())
        assert f"model name: {name}, sha256 {card['sha256']}" in out
    assert "mode" in out and "label-generator" in out  # the EM model's architecture


@pytest.mark.parametrize("command, model, wanted", [
    (["sample"], "vnc-dsgan", "needs a fluorescence generator"),
    (["interpolate"], "vnc-dsgan", "needs a fluorescence generator"),
    (["render-em", "--size", "64"], "star-6", "needs an EM model"),
])
def test_a_model_of_the_wrong_kind_is_one_clear_line(command, model, wanted, tmp_path, capsys):
    assert cli.main([*command, "--model", model, "--out", str(tmp_path / "out.tif")]) == 2
    err = capsys.readouterr().err.strip()
    assert wanted in err and f"{model}.safetensors" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_training_state_or_an_empty_folder_is_not_a_model(run_dir, tmp_path, capsys):
    assert cli.main(["sample", "--model", str(run_dir / "train_state.safetensors"), "--out", str(tmp_path / "x.tif")]) == 2
    assert "'train-state' checkpoint, not a model" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["sample", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "x.tif")]) == 2
    assert "a folder without a model file" in capsys.readouterr().err


def test_the_hash_is_checked_by_name_and_by_path(tmp_path, monkeypatch, capsys):
    shipped = checkpoints.catalogue()["star-6"]
    folder = tmp_path / "models"
    folder.mkdir()
    copy = folder / "damaged.safetensors"
    data = bytearray(shipped.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    shutil.copy(shipped.with_suffix(".json"), folder / "damaged.json")
    monkeypatch.setenv(checkpoints.MODELS_ENV, str(folder))
    for model in ("damaged", str(copy)):
        assert cli.main(["sample", "--model", model, "--out", str(tmp_path / "x.tif")]) == 2
        assert "SHA-256 does not match" in capsys.readouterr().err
        with pytest.raises(checkpoints.CheckpointError, match="SHA-256"):
            loader.load(model, "cpu")


def test_one_model_of_each_kind_stays_loaded():
    loads = loader.load_count
    star = loader.load("star-6", "cpu")
    em = loader.load("vnc-dsgan", "cpu", kind="em-generator")
    assert loader.load(checkpoints.catalogue()["star-6"], "cpu") is star
    assert loader.load("vnc-dsgan", "cpu").model is em.model
    assert loader.load_count == loads + 2
    assert em.model.meta["name"] == "vnc-dsgan" and em.meta["sha256"] == checkpoints.file_sha256(em.meta["path"])
    assert loader.load("one-class-sep-6", "cpu").kind == "generator"
    assert loader.load("star-6", "cpu") is not star and loader.load_count == loads + 4  # replaced, then read again


@pytest.mark.parametrize("simulated", [True, False])
@pytest.mark.parametrize("suffix", [".tif", ".h5"])
def test_sample_files_record_the_simulated_flag(simulated, suffix, tmp_path):
    samples = Samples(images=np.zeros((2, 2, 4, 6), np.uint8), channel_names=["Bgs4", "Sid2"],
                      z=np.zeros((2, 3), np.float32), provenance={"simulated_training_data": simulated})
    write_samples(samples, tmp_path / f"s{suffix}")
    if suffix == ".tif":
        attrs = tiff_metadata(tmp_path / "s.tif")
    else:
        with h5py.File(tmp_path / "s.h5", "r") as f:
            attrs = dict(f.attrs)
    assert bool(attrs["simulated_training_data"]) is simulated
    assert (attrs.get("note") == SIMULATED_NOTE) is simulated
