"""ONNX and bioimage.io exports reproduce the product's own pixels (tiny models from the catalogue)."""

import socket
import zipfile

import numpy as np
import pytest

from napari_biogans import cli, export, jobs, rendering
from napari_biogans.models.architectures import build_em_module, make_models
from napari_biogans.sampling import latent_codes, sample

pytest.importorskip("onnxruntime")

META = {"name": "tiny", "class_names": ["Sid2", "Tea1"], "simulated_training_data": True}
EM_META = {"name": "tiny-em", "mode": "dsgan", "data": {"description": "VNC stack1 sections 00-09"}}


def tiny_generator(arch):
    import torch

    torch.manual_seed(0)
    generator, _ = make_models(arch, n_classes=2, image_size=(48, 80), width=8, nz=8, critic_bn=False)
    return generator.eval()


def tiny_em_generator():
    import torch

    torch.manual_seed(0)
    return build_em_module({"arch": "image-generator", "width": 4, "n_blocks": 2, "nz": 2}).eval()  # factor 4


@pytest.fixture
def offline(monkeypatch):
    """No network: the export and its checks must not fetch anything."""
    def refuse(*args, **kwargs):
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("arch", ["star", "one-class-sep", "projection"])
def test_onnx_cells_match_the_product_samples(tmp_path, arch, one_torch_thread):
    generator = tiny_generator(arch)
    ex = export.fluorescence_exportable(generator, META, n=3)
    result = export.write_onnx(ex, tmp_path / "g.onnx")
    assert result.max_abs_diff < 1e-2 and result.size_bytes > 0
    n = len(next(iter(ex.inputs.values())))  # 3, or 1 for the projection model's fixed batch
    codes = latent_codes(n, generator.nz, generator.nz_red, seed=5)  # not the codes it was traced with
    inputs = {"z_red": codes[:, : generator.nz_red], "z_green": codes[:, generator.nz_red :]} \
        if generator.nz_red else {"z": codes}
    assert list(inputs) == list(ex.inputs)  # the red code is its own input where the model has one
    got = export.run_onnx(result.path, inputs)
    expected = sample(generator, META, n=n, z=codes).images  # what biogans sample writes
    assert got.shape == expected.shape
    assert np.abs(np.rint(got) - expected).max() <= 1  # float error may cross a rounding boundary


def test_onnx_em_renders_any_allowed_size_like_the_product(tmp_path, one_torch_thread):
    generator = tiny_em_generator()
    ex = export.em_exportable(generator, EM_META, labels=np.zeros((16, 16), np.uint8), seed=3, max_side=64)
    path = export.write_onnx(ex, tmp_path / "em.onnx").path
    labels = np.random.default_rng(0).integers(0, 3, (12, 20)).astype(np.uint8)  # another size than traced
    got = export.run_onnx(path, {"labels": labels.astype(np.float32)[None, None]})
    expected = rendering.render(generator, labels, noise_seed=3)
    assert got.shape == (1, 1, 12, 20)
    assert np.abs(np.rint(got[0, 0]) - expected).max() <= 1


@pytest.mark.parametrize("kind", ["em", "fluorescence"])
def test_bioimageio_package_validates_offline_and_runs_with_bioimageio_core(tmp_path, kind, offline,
                                                                           one_torch_thread):
    pytest.importorskip("bioimageio.core")
    if kind == "em":
        generator = tiny_em_generator()
        ex = export.em_exportable(generator, EM_META, labels=np.ones((8, 8), np.uint8), seed=1, max_side=32)
        labels = np.random.default_rng(1).integers(0, 3, (16, 12)).astype(np.uint8)
        inputs = {"labels": labels.astype(np.float32)[None, None]}
        expected = rendering.render(generator, labels, noise_seed=1)[None, None]
    else:
        generator = tiny_generator("star")
        ex = export.fluorescence_exportable(generator, META, n=2)
        codes = latent_codes(2, generator.nz, generator.nz_red, seed=9)
        inputs = {"z_red": codes[:, : generator.nz_red], "z_green": codes[:, generator.nz_red :]}
        expected = sample(generator, META, n=2, z=codes).images
    result = export.write_bioimageio(ex, tmp_path / "model.zip", seed=1)
    descr = export.load_package(result.path)  # validation by bioimageio.spec; an ExportError if invalid
    assert str(descr.license) == "BSD-3-Clause" and descr.cite and descr.weights.onnx is not None
    got = export.run_bioimageio(result.path, inputs)
    assert np.abs(np.rint(got) - expected).max() <= 1
    with zipfile.ZipFile(result.path) as package:
        names = set(package.namelist())
        readme = package.read("README.md").decode()
    assert {"model.onnx", "cover.png", "README.md"} <= names and any(n.startswith("test_") for n in names)
    assert ("SIMULATED" in readme) is (kind == "fluorescence")  # the tiny EM model learned from VNC sections


def test_missing_export_libraries_are_one_clear_line(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else real(name))
    assert cli.main(["export", "--model", "star-6", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'napari-biogans[export]'" in err and "\n" not in err


def test_export_of_something_that_is_not_a_model_is_one_line(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a model")
    assert cli.main(["export", "--model", str(bad), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("biogans export: error:") and "model.safetensors" in err
    assert not (tmp_path / "x.onnx").exists()


def test_the_export_job_reports_progress(tmp_path, one_torch_thread):
    ex = export.fluorescence_exportable(tiny_generator("star"), META, n=2)
    updates = []
    result = jobs.run(export.export_job(ex, "onnx", tmp_path / "g.onnx"), updates.append)
    assert result.path.exists() and [u.done for u in updates] == [0, 1, 3]


def test_the_export_button_exports_the_chosen_model(qtbot, tmp_path, one_torch_thread):
    from qtpy.QtWidgets import QLabel

    from napari_biogans._widgets.export_model import ExportModelButton, format_for

    assert format_for("m.zip") == "bioimageio" and format_for("m.onnx") == "onnx"
    status = QLabel()
    tiny = export.fluorescence_exportable(tiny_generator("star"), META, n=2)
    button = ExportModelButton(lambda: tiny, status)
    qtbot.addWidget(button)
    out = tmp_path / "tiny.onnx"
    with qtbot.waitSignal(button.export(tiny, out).finished, timeout=60_000):
        pass
    assert out.exists() and "max |exported - torch|" in status.text() and button.isEnabled()
