"""Prepare cells: fields of view -> aligned LIN-style cells, measured on simulated fields."""

import csv

import numpy as np
import pytest
import tifffile

from napari_biogans import cli, jobs
from napari_biogans.data import fields, lin, prepare, simulator

SEEDS = (0, 1, 2)


def _prepare(sim, labels=True, **params):
    fov = fields.field_from_arrays(sim.image[0], sim.image[1], "sim", sim.pixel_size_um,
                                   labels=sim.labels if labels else None)
    return jobs.run(prepare.prepare_field(fov, prepare.PrepareParams(**params)))


def _corr(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


def test_with_true_labels_every_inner_cell_is_cropped_aligned_and_to_scale():
    angle_errors, length_errors, correlations = [], [], []
    for seed in SEEDS:
        sim = simulator.simulate_field(seed=seed, n_cells=14)
        result = _prepare(sim)
        by_label = {r.label: (i, r) for i, r in enumerate(result.accepted)}
        inner = np.flatnonzero(~sim.truth["touches_border"])
        assert {k + 1 for k in inner} == set(by_label)  # every cell off the border, and only those
        for k in inner:
            i, record = by_label[k + 1]
            angle_errors.append(abs((record.angle_deg - sim.truth["angle_deg"][k] + 90) % 180 - 90))
            length_errors.append(abs(record.length_um / sim.truth["length_um"][k] - 1))
            crop = result.float_crops[i].copy()
            inside = crop[0] > 0
            crop[0][inside] -= record.low_red
            crop[1][inside] -= record.low_green
            ref = simulator.render_aligned(sim.cells[k], (48, 80))
            # the crop is the cell turned horizontal, so it is the reference or the reference turned by 180°
            correlations.append(max(_corr(crop, ref), _corr(crop, ref[:, ::-1, ::-1])))
    assert len(correlations) >= 20
    assert np.median(angle_errors) < 2.0
    assert np.median(length_errors) < 0.03
    assert min(correlations) >= 0.9


def test_crops_are_lin_like():
    sim = simulator.simulate_field(seed=0, n_cells=8)
    result = _prepare(sim, size=(96, 160))
    assert result.crops.shape[1:] == (2, 96, 160) and result.crops.dtype == np.uint8
    assert result.crop_pixel_size_um == pytest.approx(0.1)
    for crop in result.crops:
        mask = crop[0] > 0  # red >= 1 inside, 0 outside: the LIN convention
        assert mask.sum() > 500 and not crop[1][~mask].any()
        rows, cols = np.nonzero(mask)
        assert np.ptp(cols) > np.ptp(rows)  # horizontal
        assert abs(rows.mean() - 47.5) < 3 and abs(cols.mean() - 79.5) < 3  # centred
        half = crop.shape[2] // 2
        assert crop[0][:, :half].astype(int).sum() >= crop[0][:, half:].astype(int).sum()  # brighter red left


def test_segmentation_finds_isolated_cells_and_never_crops_two_as_one():
    found, isolated, touching_pairs = 0, 0, 0
    for seed in range(6):
        sim = simulator.simulate_field(seed=seed, n_cells=14)
        result = _prepare(sim, labels=False)
        segmented = result.labels
        touching_pairs += int((sim.truth["gap_um"] <= 0).sum())
        accepted = [segmented == r.label for r in result.accepted]
        for k in range(len(sim.cells)):
            if sim.truth["touches_border"][k] or sim.truth["gap_um"][k] < 1.0:
                continue
            isolated += 1
            truth = sim.labels == k + 1
            found += any((s & truth).sum() / (s | truth).sum() > 0.7 for s in accepted)
        for s in accepted:
            ids, counts = np.unique(sim.labels[s], return_counts=True)
            areas = np.bincount(sim.labels.ravel())
            covered = [i for i, c in zip(ids, counts) if i > 0 and c > 0.2 * areas[i]]
            assert len(covered) <= 1, f"seed {seed}: one accepted crop holds cells {covered}"
    assert touching_pairs >= 8 and isolated >= 20
    assert found / isolated >= 0.95


def test_rejections_keep_their_reasons():
    sim = simulator.simulate_field(seed=1, n_cells=14)
    result = _prepare(sim, labels=False)
    reasons = prepare.rejection_summary([result])
    assert reasons["touches the border"] >= 1
    assert sum(reasons.values()) == len(result.records)
    tight = _prepare(sim, filters=prepare.FilterParams(max_length_um=9.0))
    assert any(r.reason.startswith("longer than 9") for r in tight.records)


def _two_cell_field(brightness, bit_depth=12):
    """Two copies of one cell, the second's green ``brightness`` times the first's, in 12-bit counts."""
    rng = np.random.default_rng(0)
    cell = simulator.draw_field_cell("Cki2", rng, (0, 1))
    red, green, mask = simulator.render_cell_signals(cell, (160, 160), (79.5, 79.5), 20.0, 0.1)
    image = np.zeros((2, 160, 330))
    labels = np.zeros((160, 330), np.int32)
    for k, scale in enumerate((1.0, brightness)):
        image[0, :, k * 170 : k * 170 + 160] = red
        image[1, :, k * 170 : k * 170 + 160] = green * scale
        labels[:, k * 170 : k * 170 + 160][mask] = k + 1
    adu = 100 + (image + 5) * 12 + rng.normal(0, 3, image.shape)  # 12 ADU per count: a 12-bit camera
    return np.clip(np.rint(adu), 0, 2**bit_depth - 1).astype(np.uint16), labels


@pytest.mark.parametrize("brightness", [1.1, 0.9])
def test_a_ten_percent_difference_in_12_bit_data_survives(brightness):
    image, labels = _two_cell_field(brightness)
    assert image.max() < 4096
    fov = fields.field_from_arrays(image[0], image[1], "two cells", 0.1, labels=labels)
    result = jobs.run(prepare.prepare_field(fov))
    greens = [crop[1][crop[0] > 0].mean() for crop in result.crops]
    assert greens[1] / greens[0] == pytest.approx(brightness, abs=0.03)  # per field: kept
    floats = [c[1][c[0] > 0].mean() - r.low_green for c, r in zip(result.float_crops, result.accepted)]
    assert floats[1] / floats[0] == pytest.approx(brightness, abs=0.02)
    per_cell = jobs.run(prepare.prepare_field(fov, prepare.PrepareParams(normalise="cell")))
    greens = [crop[1][crop[0] > 0].mean() for crop in per_cell.crops]
    assert greens[1] / greens[0] == pytest.approx(1.0, abs=0.02)  # per cell: equalised, as documented


# --------------------------------------------------------------------------------------------
# Readers


def test_ome_z_stack_metadata_and_projection(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 60000, (3, 3, 20, 24), dtype=np.uint16)  # Z, C, Y, X
    path = fields.write_field_tiff(tmp_path / "fov.tif", stack, 0.065, ["GFP", "mCherry", "DAPI"], 0.3)
    fov = fields.read_field(path, red_channel=1, green_channel=0)
    assert fov.pixel_size_um == pytest.approx(0.065) and fov.channel_names == ("mCherry", "GFP")
    assert np.array_equal(fov.red, stack[:, 1].max(axis=0).astype(np.float32))
    summed = fields.read_field(path, red_channel=1, green_channel=0, project_how="sum")
    assert np.array_equal(summed.green, stack[:, 0].astype(np.float64).sum(axis=0).astype(np.float32))
    assert fields.read_field(path, pixel_size_um=0.2).pixel_size_um == 0.2  # given beats metadata


def test_imagej_tiff_and_separate_channel_files(tmp_path):
    red = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    tifffile.imwrite(tmp_path / "r.tif", red, imagej=True, resolution=(1 / 0.11, 1 / 0.11),
                     metadata={"unit": "micron"})
    tifffile.imwrite(tmp_path / "g.tif", red * 2)
    fov = fields.read_field(red=tmp_path / "r.tif", green=tmp_path / "g.tif")
    assert fov.pixel_size_um == pytest.approx(0.11)
    assert np.array_equal(fov.green, red * 2)


@pytest.mark.parametrize("case, message", [
    ("channel", "no green channel 4"),
    ("labels", r"the label image is \(5, 5\)"),
    ("broken", "not a readable TIFF"),
    ("time", "a time series"),
])
def test_bad_fields_get_one_clear_line(tmp_path, case, message):
    path = tmp_path / "fov.tif"
    tifffile.imwrite(path, np.zeros((2, 30, 40), np.uint16), metadata={"axes": "CYX"})
    kwargs = {"image": path}
    if case == "channel":
        kwargs["green_channel"] = 4
    elif case == "labels":
        tifffile.imwrite(tmp_path / "l.tif", np.zeros((5, 5), np.uint16))
        kwargs["labels"] = tmp_path / "l.tif"
    elif case == "broken":
        path.write_bytes(b"II*\x00garbage")
    else:
        tifffile.imwrite(path, np.zeros((3, 2, 30, 40), np.uint16), metadata={"axes": "TCYX"})
    with pytest.raises(fields.FieldError, match=message) as err:
        fields.read_field(**kwargs)
    assert "fov.tif" in str(err.value) or "l.tif" in str(err.value)


def test_a_field_without_pixel_size_asks_for_it():
    fov = fields.field_from_arrays(np.zeros((20, 20)), np.zeros((20, 20)), "plain.tif")
    with pytest.raises(fields.FieldError, match="plain.tif: no pixel size"):
        jobs.run(prepare.prepare_field(fov))


# --------------------------------------------------------------------------------------------
# Writing and the command line


def test_written_layout_split_and_provenance(tmp_path):
    sim = simulator.simulate_field(seed=0, n_cells=14)
    result = _prepare(sim)
    written = prepare.write_prepared([result], tmp_path / "out", "Tea1", test_fraction=0.25, seed=5)
    train, test = lin.read_lin_folder(written["train"]), lin.read_lin_folder(written["test"])
    n = len(result.accepted)
    assert len(train) + len(test) == n and len(test) == round(0.25 * n) and train.class_names == ["Tea1"]
    assert not train.simulated  # no ground_truth.csv: the cells are the user's, not the simulator's
    h5 = lin.read_h5(written["h5"])
    assert np.array_equal(h5.images, result.crops) and h5.pixel_size_um == pytest.approx(0.2)
    assert tifffile.imread(written["float"]).shape == (n, 2, 48, 80)
    with open(written["provenance"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.records)
    for row in rows:
        assert (row["accepted"] == "True") == (row["reason"] == "")
        if row["accepted"] == "True":
            assert (written["train"].parent / row["lin_file"]).is_file()
    again = prepare.write_prepared([result], tmp_path / "again", "Tea1", test_fraction=0.25, seed=5)
    assert lin.read_lin_folder(again["test"]).file_names == test.file_names
    with pytest.raises(FileExistsError):
        prepare.write_prepared([result], tmp_path / "out", "Tea1")


def test_cli_fields_prepare_train_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIOGANS_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "fields"
    assert cli.main(["simulate", "--fields", "2", "--z-planes", "3", "--cells-per-field", "14",
                     "--out", str(raw)]) == 0
    out = tmp_path / "prepared"
    assert cli.main(["prepare-cells", "--image", str(raw), "--labels", str(raw), "--protein", "Tea1",
                     "--out", str(out), "--split", "0.2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "field_0.tif" in printed and "touches the border" in printed and "accepted" in printed
    data = out / "LIN_Prepared_size-48-80_train"
    assert len(lin.read_lin_folder(data)) >= 8
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(data), "--model", "dcgan", "--batch-size", "4", "--width", "4",
                     "--iterations", "2", "--device", "cpu", "--out", str(run)]) == 0
    assert cli.main(["sample", "--model", str(run / "generator.safetensors"), "--n", "3",
                     "--out", str(tmp_path / "s.tif")]) == 0
    assert tifffile.imread(tmp_path / "s.tif").shape[0] == 3


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "notes.tif"
    bad.write_text("not an image")
    assert cli.main(["prepare-cells", "--image", str(bad), "--protein", "X", "--out", str(tmp_path / "o"),
                     "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "notes.tif" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
