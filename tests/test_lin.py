"""LIN readers and writers: round trips, the released layout, C2ST splits and bad input."""

import random
import warnings

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_biogans.data import lin


def make_stack(n_per_class=(3, 2), size=(48, 80), seed=0, truth=True):
    rng = np.random.default_rng(seed)
    n = sum(n_per_class)
    class_index = np.repeat(np.arange(len(n_per_class)), n_per_class)
    names = [f"P{i}" for i in range(len(n_per_class))]
    counters = [0] * len(names)
    files = []
    for c in class_index:
        files.append(f"{names[c]}/cell{counters[c]}.png")
        counters[c] += 1
    stack = lin.CellStack(
        images=rng.integers(0, 256, (n, 2) + size, dtype=np.uint8),
        class_index=class_index,
        class_names=names,
        file_names=files,
    )
    if truth:
        stack.truth = {"phase": rng.random(n), "growth_mode": np.array(["bipolar"] * n)}
    return stack


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, array)


stacks = st.builds(
    make_stack,
    n_per_class=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    size=st.sampled_from([(48, 80), (96, 160)]),
    seed=st.integers(0, 2**16),
    truth=st.booleans(),
)


def assert_same(a: lin.CellStack, b: lin.CellStack):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.class_index, b.class_index)
    assert a.class_names == b.class_names
    assert a.file_names == b.file_names
    assert sorted(a.truth) == sorted(b.truth)
    for key in a.truth:
        np.testing.assert_array_equal(a.truth[key], b.truth[key])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stack=stacks)
def test_folder_round_trip(tmp_path_factory, stack):
    folder = lin.write_lin_folder(stack, tmp_path_factory.mktemp("lin") / "X_train")
    back = lin.read_lin_folder(folder)
    assert_same(stack, back)
    assert back.simulated == bool(stack.truth)  # ground_truth.csv marks simulator output


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stack=stacks)
def test_h5_round_trip(tmp_path_factory, stack):
    path = lin.write_h5(stack, tmp_path_factory.mktemp("h5") / "cells.h5", scale=(0.2, 0.25))
    assert lin.is_cell_h5(path)
    assert_same(stack, lin.read_h5(path))
    assert lin.read_h5_scale(path) == (0.2, 0.25)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stack=stacks)
def test_tiff_round_trip(tmp_path_factory, stack):
    stack.truth = {}
    path = lin.write_tiff(stack, tmp_path_factory.mktemp("tif") / "cells.tif")
    assert_same(stack, lin.read_cells(path))


def test_released_layout_orders_by_integer_and_drops_blue(tmp_path):
    root = tmp_path / "LIN_Normalized_WT_size-48-80_test"
    for protein, values in {"Tea1": [10, 2, 1], "Alp14": [7]}.items():
        for n in values:
            rgb = np.zeros((48, 80, 3), np.uint8)
            rgb[..., 0], rgb[..., 1], rgb[..., 2] = n, 100 + n, 255
            write_png(root / protein / f"cell{n}.png", rgb)
    stack = lin.read_lin_folder(root)
    assert stack.class_names == ["Alp14", "Tea1"]
    assert stack.file_names == ["Alp14/cell7.png", "Tea1/cell1.png", "Tea1/cell2.png", "Tea1/cell10.png"]
    assert stack.images[:, 0, 0, 0].tolist() == [7, 1, 2, 10]
    assert stack.images[:, 1, 0, 0].tolist() == [107, 101, 102, 110]
    assert stack.class_index.tolist() == [0, 1, 1, 1]
    f = stack.as_float()
    assert f.dtype == np.float32 and f.min() >= -1 and f.max() <= 1
    assert np.isclose(f[0, 0, 0, 0], 7 / 127.5 - 1)
    np.testing.assert_array_equal(lin.to_uint8(f), stack.images)
    splits = lin.find_lin_splits(tmp_path)
    assert splits == {"test": root}


def test_resize_option(tmp_path):
    write_png(tmp_path / "A" / "cell0.png", np.full((96, 160, 3), 200, np.uint8))
    write_png(tmp_path / "A" / "cell1.png", np.full((60, 100, 3), 200, np.uint8))
    with pytest.raises(lin.LinFormatError, match="cell1.png.*expected 48x80 or 96x160"):
        lin.read_lin_folder(tmp_path)
    stack = lin.read_lin_folder(tmp_path, size=(48, 80))
    assert stack.images.shape == (2, 2, 48, 80)
    assert (stack.images[:, 0] == 200).all()


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((48, 80), np.uint8), "expected an RGB PNG"),
        (np.zeros((48, 80), np.uint16), "expected an 8-bit RGB PNG"),
        (np.zeros((40, 80, 3), np.uint8), "expected 48x80 or 96x160"),
    ],
)
def test_bad_png_names_the_file(tmp_path, bad, message):
    write_png(tmp_path / "Tea1" / "cell0.png", np.zeros((48, 80, 3), np.uint8))
    write_png(tmp_path / "Tea1" / "cell1.png", bad)
    with pytest.raises(lin.LinFormatError, match=f"cell1.png.*{message}"):
        lin.read_lin_folder(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        stack = lin.read_lin_folder(tmp_path, skip_bad=True)
    assert stack.file_names == ["Tea1/cell0.png"]


def test_truncated_png(tmp_path):
    write_png(tmp_path / "Tea1" / "cell0.png", np.random.default_rng(0).integers(0, 255, (48, 80, 3), np.uint8))
    data = (tmp_path / "Tea1" / "cell0.png").read_bytes()
    (tmp_path / "Tea1" / "cell0.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(lin.LinFormatError, match="cell0.png: not a readable PNG"):
        lin.read_lin_folder(tmp_path)


def test_non_cell_files_are_skipped_and_counted(tmp_path):
    write_png(tmp_path / "Tea1" / "cell0.png", np.zeros((48, 80, 3), np.uint8))
    (tmp_path / "Tea1" / "notes.txt").write_text("hello")
    (tmp_path / "Tea1" / ".DS_Store").write_bytes(b"\0")
    with pytest.warns(UserWarning, match="skipped 2 entries"):
        stack = lin.read_lin_folder(tmp_path)
    assert len(stack) == 1


@pytest.mark.parametrize("layout", ["missing", "empty", "file", "not_lin"])
def test_not_a_lin_folder(tmp_path, layout):
    target = tmp_path / "data"
    if layout == "empty":
        target.mkdir()
    elif layout == "file":
        target.write_text("x")
    elif layout == "not_lin":
        write_png(target / "images" / "photo.png", np.zeros((48, 80, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(lin.LinFormatError, match=str(target.name)):
            lin.read_lin_folder(target)
    assert not lin.is_lin_folder(target)


def test_foreign_h5_and_tiff(tmp_path):
    import h5py
    import tifffile

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    assert not lin.is_cell_h5(tmp_path / "other.h5")
    with pytest.raises(lin.LinFormatError, match="other.h5: no 'cells' dataset"):
        lin.read_h5(tmp_path / "other.h5")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    assert not lin.is_cell_h5(tmp_path / "broken.h5")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((48, 80, 3), np.uint8))
    with pytest.raises(lin.LinFormatError, match=r"rgb.tif: expected a cell stack of shape \(N, 2, H, W\)"):
        lin.read_cells(tmp_path / "rgb.tif")
    with pytest.raises(lin.LinFormatError, match="expected a LIN folder, an .h5 or a .tif"):
        (tmp_path / "cells.csv").write_text("a")
        lin.read_cells(tmp_path / "cells.csv")


def test_write_refuses_to_overwrite_and_leaves_no_partial(tmp_path):
    stack = make_stack()
    target = tmp_path / "out"
    lin.write_lin_folder(stack, target)
    with pytest.raises(FileExistsError):
        lin.write_lin_folder(stack, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_c2st_splits_follow_the_reference_procedure():
    stack = make_stack(n_per_class=(12, 7), truth=False)
    splits = lin.c2st_splits(stack)
    assert len(splits) == 10
    for s, split in enumerate(splits):
        both = np.concatenate([split["test"], split["train"]])
        assert sorted(both.tolist()) == list(range(len(stack)))  # a partition
        for label, n in enumerate((12, 7)):
            in_class = np.flatnonzero(stack.class_index == label)
            names = sorted(stack.file_names[i].split("/")[1] for i in in_class)
            random.seed(s + 1)  # the reference seeded the global generator
            random.shuffle(names)
            test_names = [stack.file_names[i].split("/")[1] for i in split["test"] if stack.class_index[i] == label]
            assert test_names == names[: n // 2]
    assert not np.array_equal(splits[0]["test"], splits[1]["test"])


def test_select_classes_reindexes():
    stack = make_stack(n_per_class=(2, 3, 1), truth=False)
    sub = stack.select_classes(["P2", "P0"])
    assert sub.class_names == ["P2", "P0"]
    assert sub.counts() == {"P2": 1, "P0": 2}
    with pytest.raises(lin.LinFormatError, match="not in this stack"):
        stack.select_classes(["Tea1"])
