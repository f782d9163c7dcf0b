"""The ``biogans`` command line, in-process through ``cli.main`` (the console script calls the same)."""

import numpy as np
import pytest
import tifffile
from napari.components import ViewerModel

from napari_biogans import checkpoints, cli, ome
from napari_biogans.data import lin
from napari_biogans.data.simulator import simulate_stack


def test_simulate_writes_the_release_and_reads_back_identically(tmp_path, capsys):
    assert cli.main(["simulate", "--out", str(tmp_path), "--cells-per-class", "12", "--seed", "1"]) == 0
    train = tmp_path / "LIN_Simulated_WT_size-48-80_train"
    test = tmp_path / "LIN_Simulated_WT_size-48-80_test"
    assert lin.find_lin_splits(tmp_path) == {"train": train, "test": test}
    assert sorted(p.name for p in train.iterdir()) == [
        "Alp14", "Arp3", "Cki2", "Fim1", "Mkh1", "Sid2", "Tea1", "Tea4", "ground_truth.csv",
    ]
    assert (train / "Tea1" / "cell11.png").is_file()
    expected = simulate_stack(n_per_class=12, seed=1)
    back = lin.read_lin_folder(train)
    np.testing.assert_array_equal(back.images, expected.images)
    np.testing.assert_array_equal(back.class_index, expected.class_index)
    assert back.class_names == expected.class_names
    for key, values in expected.truth.items():
        if values.dtype.kind == "f":
            np.testing.assert_allclose(back.truth[key], values, rtol=1e-12)
        else:
            np.testing.assert_array_equal(back.truth[key], values)
    other = lin.read_lin_folder(test)
    assert not np.array_equal(other.images, back.images)  # a disjoint test split
    assert "96 simulated cells" in capsys.readouterr().out
    # a second run must not overwrite the first
    assert cli.main(["simulate", "--out", str(tmp_path), "--cells-per-class", "2"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_info_describes_folders_stacks_and_checkpoints(tmp_path, capsys):
    cli.main(["simulate", "--out", str(tmp_path), "--cells-per-class", "3", "--proteins", "Tea1,Cki2"])
    assert cli.main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out and "[test]" in out and "Cki2 (3), Tea1 (3)" in out and "SIMULATED" in out
    assert "ground truth: " in out and "phase" in out
    stack = lin.read_lin_folder(tmp_path / "LIN_Simulated_WT_size-48-80_test")
    lin.write_h5(stack, tmp_path / "cells.h5")
    cli.main(["info", str(tmp_path / "cells.h5")])
    assert "6 cells of 48x80 pixels" in capsys.readouterr().out
    assert cli.main(["info", str(tmp_path / "nothing.tif")]) == 2
    assert "no such file" in capsys.readouterr().err


# one architecture of each output layout (pooled, one red per protein, one shared red, conditional): the CLI
# path is the same for all; test_training trains and saves every architecture
@pytest.mark.parametrize("model", ["dcgan", "one-class-sep", "star", "multichannel", "projection"])
def test_train_resume_sample_open(tmp_path, model, monkeypatch, capsys):
    monkeypatch.setenv("BIOGANS_CACHE", str(tmp_path / "cache"))
    cli.main(["simulate", "--out", str(tmp_path / "data"), "--cells-per-class", "6", "--proteins", "Sid2,Tea1"])
    data = tmp_path / "data" / "LIN_Simulated_WT_size-48-80_train"
    run = tmp_path / "run"
    common = ["train", "--data", str(data), "--model", model, "--batch-size", "4", "--width", "4",
              "--device", "cpu", "--out", str(run)]
    if model == "multichannel":
        common += ["--nz", "60"]
    if model == "star":
        common += ["--lr", "3e-4"]
    assert cli.main(common + ["--iterations", "2"]) == 0
    assert cli.main(common + ["--iterations", "3", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "SIMULATED" in out and "finished at iteration 3" in out

    model_file = str(run / "generator.safetensors")
    assert cli.main(["info", model_file]) == 0
    assert "iterations: 3" in capsys.readouterr().out
    assert checkpoints.load(model_file)[1]["train_config"]["lr"] == (3e-4 if model == "star" else None)
    assert cli.main(["sample", "--model", model_file, "--n", "5", "--seed", "7", "--out", str(tmp_path / "s.tif")]) == 0
    assert cli.main(["sample", "--model", model_file, "--n", "5", "--seed", "7", "--out", str(tmp_path / "s.h5")]) == 0
    # pooled models: red + one green; one-class: each protein's own red before its green; the rest share one red
    n_channels = {"dcgan": 2, "separable": 2, "one-class": 4, "one-class-sep": 4}.get(model, 3)
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        pixels = tif.asarray()
    names = ome.read(tmp_path / "s.tif").channel_names
    assert pixels.shape == (5, n_channels, 48, 80) and pixels.dtype == np.uint8
    assert names[0].startswith("Bgs4") and len(names) == n_channels

    viewer = ViewerModel()
    viewer.open(str(tmp_path / "s.tif"))  # napari's own TIFF reader
    assert viewer.layers[0].data.shape == (5, n_channels, 48, 80)
    layers = viewer.open(str(tmp_path / "s.h5"), plugin="napari-biogans")
    assert [layer.name for layer in layers] == [f"s {name}" for name in names]
    np.testing.assert_array_equal(np.stack([layer.data for layer in layers], axis=1), pixels)
    assert layers[0].metadata["provenance"]["seed"] == 7
    if model == "one-class-sep":  # the separable baseline: new green noise, same red cells
        generator, _ = checkpoints.load_generator(model_file)
        assert generator.config["separable"] is True
        for seed in (1, 2):
            cli.main(["sample", "--model", model_file, "--n", "3", "--seed", str(seed), "--red-seed", "5",
                      "--out", str(tmp_path / f"r{seed}.tif")])
        first, second = (tifffile.imread(tmp_path / f"r{seed}.tif") for seed in (1, 2))
        np.testing.assert_array_equal(first[:, 0::2], second[:, 0::2])  # Bgs4 (Sid2), Bgs4 (Tea1)
        assert not np.array_equal(first[:, 1::2], second[:, 1::2])
        assert names == ["Bgs4 (Sid2)", "Sid2", "Bgs4 (Tea1)", "Tea1"]


def test_train_errors_are_clear(tmp_path, capsys):
    assert cli.main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert cli.main(["sample", "--model", "star-6000", "--out", str(tmp_path / "x.tif")]) == 2
    assert "unknown model 'star-6000'" in capsys.readouterr().err


def test_evaluate_and_interpolate_write_results(tmp_path, capsys):
    import json

    import torch

    from napari_biogans import checkpoints
    from napari_biogans.models import make_models

    cli.main(["simulate", "--out", str(tmp_path / "data"), "--cells-per-class", "8", "--proteins", "Sid2,Tea1"])
    train = str(tmp_path / "data" / "LIN_Simulated_WT_size-48-80_train")
    test = str(tmp_path / "data" / "LIN_Simulated_WT_size-48-80_test")
    torch.manual_seed(0)
    G, _ = make_models("star", n_classes=2, width=4, critic_bn=False)
    model = str(checkpoints.save_generator(tmp_path / "tiny.safetensors", G, {"class_names": ["Sid2", "Tea1"]}))
    quick = ["--device", "cpu", "--splits", "2", "--steps", "2", "--batch-size", "4", "--test-batches", "1", "--width", "4"]

    assert cli.main(["evaluate", "c2st", "--method", "critic", "--model", model, "--data", test, "--out",
                     str(tmp_path / "c2st")] + quick) == 0
    report = json.loads((tmp_path / "c2st" / "c2st.json").read_text())
    assert set(report["scores"]) == {"Sid2", "Tea1", "all"} and len(report["scores"]["all"]["scores"]) == 2
    assert (tmp_path / "c2st" / "c2st.png").stat().st_size > 1000

    assert cli.main(["evaluate", "reconstruct", "--model", model, "--data", test, "--train", train, "--out",
                     str(tmp_path / "rec"), "--device", "cpu", "--steps", "1", "--restarts", "2", "--max-cells", "4"]) == 0
    note, *rows = (tmp_path / "rec" / "reconstruction.csv").read_text().splitlines()
    assert note.startswith("# SIMULATED cells")  # the cells are the simulator's, and the table says so
    assert rows[0] == "file,protein,l2,nll,nll_start,nn_l2" and len(rows) == 5
    assert tifffile.imread(tmp_path / "rec" / "reconstructions.tif").shape == (4, 2, 48, 80)
    assert (tmp_path / "rec" / "reconstruction.png").is_file()

    assert cli.main(["evaluate", "real-vs-real", "--train", train, "--data", test, "--out", str(tmp_path / "rvr")] + quick) == 0
    matrix = json.loads((tmp_path / "rvr" / "real_vs_real.json").read_text())
    assert matrix["names"] == ["Sid2", "Tea1"] and np.array(matrix["scores"]).shape == (2, 2, 2)
    assert (tmp_path / "rvr" / "real_vs_real.png").is_file()

    assert cli.main(["interpolate", "--model", model, "--anchors", "0", "3", "--frames", "5", "--measure", "2",
                     "--device", "cpu", "--out", str(tmp_path / "cycle.tif")]) == 0
    frames = tifffile.imread(tmp_path / "cycle.tif")
    assert frames.shape == (5, 3, 48, 80)
    growth = json.loads((tmp_path / "cycle.growth.json").read_text())
    assert len(growth["rhos"]) == len(growth["rhos_through_grown"]) == 2
    assert "through a grown cell" in capsys.readouterr().out
    assert cli.main(["interpolate", "--model", model, "--cycle", "--frames", "5", "--device", "cpu",
                     "--out", str(tmp_path / "cycle3.tif")]) == 0
    assert tifffile.imread(tmp_path / "cycle3.tif").shape == (5, 3, 48, 80)
    assert "Spearman" in capsys.readouterr().out
    assert cli.main(["evaluate", "c2st", "--data", test, "--out", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("model", ["sgan", "dsgan"])
def test_train_em_and_render_any_size(tmp_path, model, capsys):
    from pathlib import Path

    import imageio.v3 as iio

    from napari_biogans.data import em

    fixture = Path(__file__).parent / "fixtures" / "vnc" / "stack1"
    run = tmp_path / "run"
    args = ["train-em", "--data", str(fixture), "--model", model, "--sections", "0", "1", "--iterations", "2",
            "--crop", "128", "--label-width", "4", "--image-width", "4", "--device", "cpu", "--out", str(run)]
    assert cli.main(args) == 0
    assert "iteration 2" in capsys.readouterr().out
    if model == "dsgan":  # a time limit stops at the next logged iteration, saved and resumable
        limited = args[:args.index("--iterations")] + ["--iterations", "100000"] + args[args.index("--crop"):]
        assert cli.main(limited + ["--resume", "--time-limit", "0.0001"]) == 0
        assert "stopped at iteration" in capsys.readouterr().out
    model_file = run / "em_model.safetensors"
    assert model_file.is_file()
    labels = em.read_sections(fixture, [10])[1][0, :100, :170]  # a real label map of an odd size
    em.write_label_map(labels, tmp_path / "labels.png")
    assert cli.main(["render-em", "--model", str(model_file), "--labels", str(tmp_path / "labels.png"),
                     "--device", "cpu", "--out", str(tmp_path / "em.png")]) == 0
    image = iio.imread(tmp_path / "em.png")
    assert image.shape == (100, 170) and image.dtype == np.uint8
    assert cli.main(["render-em", "--model", str(model_file), "--size", "128", "--device", "cpu",
                     "--out", str(tmp_path / "gen.tif")]) == 0
    assert tifffile.imread(tmp_path / "gen.tif").shape == (128, 128)
    assert set(np.unique(em.read_label_map(tmp_path / "gen.labels.png"))) <= {0, 1, 2}
    assert cli.main(["train-em", "--data", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "raw/ sub-folder" in capsys.readouterr().err


def test_sample_longer_moves_codes_along_the_length_vector(tmp_path, capsys):
    import h5py
    import torch

    from napari_biogans import checkpoints
    from napari_biogans.models import make_models

    torch.manual_seed(0)
    G, _ = make_models("star", n_classes=2, width=4, nz=16, critic_bn=False)
    model = checkpoints.save_generator(tmp_path / "tiny.safetensors", G, {"class_names": ["Sid2", "Tea1"]})
    codes = {}
    for longer in ("0", "2.5"):
        out = tmp_path / f"s{longer}.h5"
        assert cli.main(["sample", "--model", str(model), "--n", "4", "--seed", "3", "--longer", longer,
                         "--out", str(out)]) == 0
        with h5py.File(out) as f:
            codes[longer] = f["z"][()]
            provenance = f.attrs["provenance"]
    assert "long minus short" in capsys.readouterr().out and "long minus short" in provenance
    plain = checkpoints.load_generator(model)[0]
    from napari_biogans.sampling import latent_codes

    np.testing.assert_array_equal(codes["0"], latent_codes(4, 16, plain.nz_red, 3))  # 0: the identity
    assert not np.allclose(codes["2.5"], codes["0"])
    assert np.allclose(codes["2.5"] - codes["0"], (codes["2.5"] - codes["0"])[0])  # one vector added to every code
