"""Simulated fields of view: many simulator cells, any orientation, ground-truth labels and truth."""

import numpy as np
import pytest

from napari_biogans.data import fields, simulator
from napari_biogans.data.prepare import PrepareParams, measure_cells


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (12, np.uint16), (16, np.uint16)])
def test_field_shapes_dtypes_and_range(bit_depth, dtype):
    sim = simulator.simulate_field(seed=1, shape=(256, 320), n_cells=5, bit_depth=bit_depth)
    assert sim.image.shape == (2, 256, 320) and sim.image.dtype == dtype
    assert sim.image.max() <= 2**bit_depth - 1
    n = len(sim.cells)
    assert n >= 3 and sim.labels.max() == n and set(np.unique(sim.labels)) == set(range(n + 1))
    assert all(len(values) == n for values in sim.truth.values())
    # cells are brighter than the background in both channels
    for channel in sim.image:
        assert channel[sim.labels > 0].mean() > 1.5 * np.median(channel[sim.labels == 0])


def test_z_stack_is_sharpest_in_the_middle():
    sim = simulator.simulate_field(seed=2, shape=(128, 128), n_cells=3, z_planes=5)
    assert sim.image.shape == (5, 2, 128, 128)
    sharpness = [np.abs(np.diff(plane[0].astype(float), axis=1)).mean() for plane in sim.image]
    assert np.argmax(sharpness) == 2


def test_fields_have_touching_border_and_isolated_cells():
    touching = border = isolated = 0
    for seed in range(3):
        truth = simulator.simulate_field(seed=seed, n_cells=14).truth
        touching += int((truth["gap_um"] <= 0.0).sum())
        border += int(truth["touches_border"].sum())
        isolated += int(((truth["gap_um"] > 1.0) & ~truth["touches_border"]).sum())
    assert touching >= 4 and border >= 4 and isolated >= 10


def test_truth_matches_the_label_image():
    """The recorded angle and length are those of the drawn labels (measured independently)."""
    sim = simulator.simulate_field(seed=4, n_cells=10, touching=0.0)
    records = {r.label: r for r in measure_cells(sim.labels, sim.pixel_size_um, "sim", PrepareParams())}
    inside = ~sim.truth["touches_border"]
    for k in np.flatnonzero(inside):
        record = records[k + 1]
        error = (record.angle_deg - sim.truth["angle_deg"][k] + 90) % 180 - 90
        assert abs(error) < 2.0
        assert abs(record.length_um - sim.truth["length_um"][k]) < 0.25


def test_render_aligned_is_horizontal_centred_and_to_scale():
    sim = simulator.simulate_field(seed=0, n_cells=4)
    for cell in sim.cells:
        ref = simulator.render_aligned(cell, (96, 160))
        mask = ref[0] > 0
        rows, cols = np.nonzero(mask)
        assert abs(rows.mean() - 47.5) < 0.6 and abs(cols.mean() - 79.5) < 0.6  # centred on its centroid
        length = (np.ptp(cols) + 1) * simulator.pixel_size_um((96, 160))
        assert abs(length - cell.length) < 0.25
        assert np.ptp(rows) < np.ptp(cols)


def test_same_seed_same_field_and_written_files_read_back(tmp_path):
    a = simulator.simulate_field(seed=3, shape=(128, 160), n_cells=3)
    b = simulator.simulate_field(seed=3, shape=(128, 160), n_cells=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    paths = simulator.write_simulated_fields(tmp_path, 2, seed=3, shape=(128, 160), n_cells=3, z_planes=3)
    assert [p.name for p in paths] == ["field_0.tif", "field_1.tif"]
    fov = fields.read_field(paths[0], labels=fields.labels_for(paths[0], tmp_path))
    assert fov.pixel_size_um == pytest.approx(0.1) and fov.channel_names == ("Bgs4", "Tea1")
    assert fov.shape == (128, 160) and np.array_equal(fov.labels, a.labels)
    assert (tmp_path / "field_0_truth.csv").read_text().splitlines()[0].startswith("label,protein,phase")
