"""The fission-yeast simulator: determinism, layout, ground truth and measurable biology."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from skimage.measure import label, regionprops

from napari_biogans.data import lin
from napari_biogans.data.montage import make_montage
from napari_biogans.data.simulator import (
    GROWTH_MODES,
    GROWTH_STOP,
    PIXEL_SIZE_UM,
    PROTEINS,
    SEPTUM_START,
    simulate_cells,
    simulate_lineage,
    simulate_stack,
)


def axis_projection(cell: np.ndarray):
    """Pixels of the red mask and their position (px) along the mask's major axis."""
    mask = cell[0] > 0
    props = regionprops(mask.astype(np.uint8))[0]
    rows, cols = np.nonzero(mask)
    r0, c0 = props.centroid
    along = (rows - r0) * np.cos(props.orientation) + (cols - c0) * np.sin(props.orientation)
    return rows, cols, along, props


def end_enrichment(cell: np.ndarray, end_um: float = 1.5) -> float:
    """Share of green in the last ``end_um`` at both ends over the share of area there (1 = uniform)."""
    rows, cols, along, _ = axis_projection(cell)
    green = cell[1][rows, cols].astype(float)
    end = np.abs(along) > np.abs(along).max() - end_um / PIXEL_SIZE_UM
    return (green[end].sum() / green.sum()) / end.mean()


def medial_red(cell: np.ndarray) -> float:
    """Mean red within 1.5 px of the cell middle over the mean red of the whole cell."""
    rows, cols, along, _ = axis_projection(cell)
    red = cell[0][rows, cols].astype(float)
    return red[np.abs(along) < 1.5].mean() / red.mean()


@pytest.fixture(scope="module")
def cells():
    return simulate_cells(12, seed=11)


def test_same_seed_same_cells_other_seed_other_cells(cells):
    again = simulate_cells(12, seed=11)
    np.testing.assert_array_equal(again.images, cells.images)
    for key, values in cells.truth.items():
        np.testing.assert_array_equal(again.truth[key], values)
    other = simulate_cells(12, seed=12)
    assert not np.array_equal(other.images, cells.images)
    assert not np.array_equal(other.truth["phase"], cells.truth["phase"])


def test_a_cell_depends_only_on_seed_protein_and_index(cells):
    alone = simulate_cells(5, proteins=["Tea1"], seed=11)
    tea1 = cells.class_names.index("Tea1")
    np.testing.assert_array_equal(alone.images, cells.images[cells.class_index == tea1][:5])
    # forcing a cell's own phase reproduces it exactly, and the lineage helper renders that cell
    phases = cells.truth["phase"][cells.class_index == tea1][:5]
    forced = simulate_cells(5, proteins=["Tea1"], seed=11, phase=phases)
    np.testing.assert_array_equal(forced.images, alone.images)
    lineage = simulate_lineage("Tea1", [phases[3]], seed=11, index=3)
    np.testing.assert_array_equal(lineage.images[0], alone.images[3])


def test_layout_shapes_dtypes_and_class_order(cells):
    assert cells.images.shape == (8 * 12, 2, 48, 80)
    assert cells.images.dtype == np.uint8
    assert cells.class_names == sorted(PROTEINS) == list(PROTEINS)
    assert cells.class_index.dtype == np.int64
    np.testing.assert_array_equal(cells.class_index, np.repeat(np.arange(8), 12))
    for key in ("phase", "length_um", "width_um", "growth_mode", "angle_deg"):
        assert cells.truth[key].shape == (len(cells.images),)
    some = simulate_cells(2, proteins=["Tea1", "Alp14"], seed=0)
    assert some.class_names == ["Alp14", "Tea1"]
    np.testing.assert_array_equal(some.class_index, [0, 0, 1, 1])


def test_background_is_zero_outside_one_red_cell(cells):
    mask = cells.images[:, 0] > 0
    assert np.all(cells.images[:, 1][~mask] == 0)
    for m in mask:
        assert label(m).max() == 1  # one cell, in one piece
        assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())  # inside the frame
    assert cells.images[:, 0].max() >= 200  # bright Bgs4 tips or septa use the top of the range
    assert np.percentile(cells.images[:, 0].max(axis=(1, 2)), 50) > 180


def test_ground_truth_ranges_and_growth_modes(cells):
    t = cells.truth
    assert np.all((t["phase"] >= 0) & (t["phase"] <= 1))
    assert np.all((t["length_um"] >= 6.0) & (t["length_um"] <= 15.0))
    assert np.all((t["width_um"] >= 3.5) & (t["width_um"] <= 4.5))
    assert np.all(np.abs(t["angle_deg"]) <= 10)
    assert set(t["growth_mode"]) <= set(GROWTH_MODES) == {"monopolar", "bipolar", "septating"}
    np.testing.assert_array_equal(t["growth_mode"] == "septating", t["phase"] >= GROWTH_STOP)
    np.testing.assert_array_equal(t["growth_mode"] == "monopolar", t["phase"] < t["neto_phase"])
    lineage = simulate_lineage("Cki2", np.linspace(0, 1, 21), seed=2)
    lengths = lineage.truth["length_um"]
    assert np.all(np.diff(lengths) >= 0)
    assert 1.8 < lengths[-1] / lengths[0] < 2.2  # born about half the length it divides at


def test_measured_length_follows_true_length():
    cells = simulate_cells(10, seed=5)
    measured = [regionprops((c[0] > 0).astype(np.uint8))[0].axis_major_length for c in cells.images]
    measured = np.array(measured) * PIXEL_SIZE_UM
    assert spearmanr(measured, cells.truth["length_um"]).statistic > 0.9
    np.testing.assert_allclose(measured, cells.truth["length_um"], rtol=0.15)


def test_tea1_sits_at_the_cell_ends_cki2_fills_the_cell():
    cells = simulate_cells(25, proteins=["Cki2", "Mkh1", "Tea1"], seed=6)
    enrichment = {name: np.array([end_enrichment(c) for c in cells.images[cells.class_index == k]])
                  for k, name in enumerate(cells.class_names)}  # fmt: skip
    assert np.all(enrichment["Tea1"] > 1.5)
    assert np.all(enrichment["Cki2"] < 1.2)
    # Mkh1 marks the tips too, but weaker and more diffuse than Tea1
    assert np.median(enrichment["Cki2"]) < np.median(enrichment["Mkh1"]) < np.median(enrichment["Tea1"])


def test_septating_cells_show_a_medial_red_peak():
    septating = simulate_cells(10, proteins=["Sid2", "Tea1"], seed=7, phase=0.92)
    growing = simulate_cells(10, proteins=["Sid2", "Tea1"], seed=7, phase=0.5)
    assert np.all(septating.truth["growth_mode"] == "septating")
    assert np.all(septating.truth["septum_closure"] > 0)
    assert all(medial_red(c) > 2.0 for c in septating.images)
    assert all(medial_red(c) < 1.2 for c in growing.images)


def test_monopolar_cells_grow_at_the_old_end():
    cells = simulate_cells(16, proteins=["Cki2"], seed=8, phase=0.1)
    assert np.all(cells.truth["growth_mode"] == "monopolar")
    for cell, old_end in zip(cells.images, cells.truth["old_end"]):
        rows, cols, along, props = axis_projection(cell)
        red = cell[0][rows, cols].astype(float)
        x = cols - props.centroid[1]  # old_end +1 means the right-hand end
        tip = 0.5 * props.axis_major_length - 1.0 / PIXEL_SIZE_UM
        assert red[x * old_end > tip].mean() > 1.5 * red[-x * old_end > tip].mean()


def test_sid2_ring_and_alp14_spindle_appear_in_division():
    sid2 = simulate_lineage("Sid2", [0.5, 0.95], seed=1)
    ratios = [medial_red(np.stack([c[1], c[1]])) for c in sid2.images]  # green medial peak
    assert ratios[1] > 2.0 > ratios[0]
    alp14 = simulate_lineage("Alp14", [0.5, (GROWTH_STOP + SEPTUM_START) / 2], seed=1)
    assert alp14.truth["spindle_um"][0] == 0 and alp14.truth["spindle_um"][1] > 1.0
    rows, cols, along, _ = axis_projection(alp14.images[1])
    green = alp14.images[1, 1][rows, cols]
    brightest = np.abs(along[green >= np.percentile(green, 98)])
    reach = alp14.truth["spindle_um"][1] / 2 / PIXEL_SIZE_UM + 3
    assert brightest.max() < reach < 0.5 * np.abs(along).max()  # the bar in the middle


def test_unknown_protein_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="Tea1") as info:
        simulate_cells(2, proteins=["Tea1", "Bgs4"])
    assert "Bgs4" in str(info.value) and "Alp14" in str(info.value)
    with pytest.raises(ValueError, match="size"):
        simulate_cells(2, size=(64, 64))
    with pytest.raises(ValueError, match="phase"):
        simulate_cells(2, phase=1.5)
    with pytest.raises(ValueError, match="phase"):
        simulate_cells(2, phase=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="Alp14"):
        simulate_lineage("GFP", [0.5])
    assert simulate_cells(1, proteins="Tea1").class_names == ["Tea1"]
    assert simulate_cells(1, proteins=None).class_names == list(PROTEINS)


def test_large_frames_scale_the_geometry():
    small = simulate_cells(3, proteins=["Tea1"], seed=9)
    big = simulate_cells(3, proteins=["Tea1"], seed=9, size=(96, 160))
    assert big.images.shape == (3, 2, 96, 160)
    assert big.pixel_size_um == PIXEL_SIZE_UM / 2
    np.testing.assert_array_equal(big.truth["length_um"], small.truth["length_um"])
    mask = big.images[:, 0] > 0
    assert np.all(big.images[:, 1][~mask] == 0)
    for cell, length in zip(big.images, big.truth["length_um"]):
        measured = regionprops((cell[0] > 0).astype(np.uint8))[0].axis_major_length * big.pixel_size_um
        assert abs(measured / length - 1) < 0.15


def test_simulate_stack_is_a_simulated_lin_stack():
    stack = simulate_stack(n_per_class=2, proteins=["Tea1", "Cki2"], seed=3)
    assert isinstance(stack, lin.CellStack) and stack.simulated
    assert stack.file_names == ["Cki2/cell0.png", "Cki2/cell1.png", "Tea1/cell0.png", "Tea1/cell1.png"]
    assert stack.pixel_size_um == PIXEL_SIZE_UM
    np.testing.assert_array_equal(stack.images, simulate_cells(2, ["Cki2", "Tea1"], seed=3).images)


def test_montage_tiles_red_and_green_row_major():
    cells = simulate_cells(5, proteins=["Tea1"], seed=4)
    montage = make_montage(cells.images, ncols=3, pad=2)
    assert montage.shape == (2 * 50 + 2, 3 * 82 + 2, 3) and montage.dtype == np.uint8
    tile = montage[2 + 50 : 2 + 50 + 48, 2 + 82 : 2 + 82 + 80]  # cell 4: row 1, column 1
    np.testing.assert_array_equal(tile[..., 0], cells.images[4, 0])
    np.testing.assert_array_equal(tile[..., 1], cells.images[4, 1])
    assert np.all(tile[..., 2] == 0)
    with pytest.raises(ValueError):
        make_montage(cells.images[:, :1], ncols=3)
