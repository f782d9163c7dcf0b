"""Readers, writer and sample data through napari: ViewerModel for layer logic, one real viewer."""

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_biogans import _io
from napari_biogans.data import lin
from napari_biogans.data.simulator import simulate_stack


@pytest.fixture(scope="module")
def lin_folder(tmp_path_factory):
    stack = simulate_stack(n_per_class=3, proteins=["Cki2", "Tea1"], seed=5)
    return lin.write_lin_folder(stack, tmp_path_factory.mktemp("sim") / "LIN_Simulated_test"), stack


def test_lin_folder_opens_as_two_channel_layers(lin_folder):
    folder, stack = lin_folder
    viewer = ViewerModel()
    layers = viewer.open(str(folder), plugin="napari-biogans")
    assert [layer.name for layer in layers] == ["LIN_Simulated_test Bgs4", "LIN_Simulated_test protein"]
    red, green = layers
    np.testing.assert_array_equal(red.data, stack.images[:, 0])
    np.testing.assert_array_equal(green.data, stack.images[:, 1])
    assert red.colormap.name == "red" and green.colormap.name == "green"
    assert red.blending == "additive"
    meta = green.metadata
    assert meta["class_names"] == ["Cki2", "Tea1"]
    assert meta["class_index"] == [0, 0, 0, 1, 1, 1]
    assert meta["simulated"] is True
    assert len(meta["truth"]["phase"]) == 6
    assert viewer.dims.axis_labels[0] == "cell"


def test_reader_declines_foreign_paths(tmp_path):
    import h5py

    (tmp_path / "photo.png").write_bytes(b"x")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros(2)
    assert _io.get_lin_reader(str(tmp_path)) is None
    assert _io.get_lin_reader(str(tmp_path / "photo.png")) is None
    assert _io.get_h5_reader(str(tmp_path / "other.h5")) is None
    assert _io.get_h5_reader(str(tmp_path / "photo.png")) is None


def test_h5_writer_keeps_channel_names_scale_and_classes(lin_folder, tmp_path):
    folder, stack = lin_folder
    layer_data = _io.read_lin_layers(folder)
    layer_data[0][1]["scale"] = (1.0, 0.2, 0.2)
    paths = _io.write_cells_h5(str(tmp_path / "cells"), layer_data[:2])
    assert paths == [str(tmp_path / "cells.h5")]
    back = lin.read_h5(paths[0])
    np.testing.assert_array_equal(back.images, stack.images)
    assert back.channel_names == ("LIN_Simulated_test Bgs4", "LIN_Simulated_test protein")
    assert back.class_names == stack.class_names and back.simulated
    np.testing.assert_allclose(back.truth["phase"], stack.truth["phase"])
    assert lin.read_h5_scale(paths[0]) == (0.2, 0.2)
    # and napari reads it back through the plugin's HDF5 reader
    viewer = ViewerModel()
    layers = viewer.open(paths[0], plugin="napari-biogans")
    assert layers[0].scale[1:].tolist() == [0.2, 0.2]
    with pytest.raises(ValueError, match="exactly two image layers"):
        _io.write_cells_h5(str(tmp_path / "x.h5"), layer_data[:1])


def test_sample_data_is_offline_and_labelled():
    viewer = ViewerModel()
    viewer.open_sample("napari-biogans", "vnc_em")
    image, labels = viewer.layers
    assert image.data.shape == labels.data.shape == (512, 512)
    assert set(np.unique(labels.data)) == {0, 1, 2}
    # membranes are dark in EM: the labels line up with the real pixels
    assert image.data[labels.data == 1].mean() < image.data[labels.data == 0].mean() - 20
    viewer.open_sample("napari-biogans", "simulated_lin")
    assert viewer.layers[-1].data.shape == (96, 48, 80)
    assert viewer.layers[-1].metadata["simulated"] is True


@pytest.mark.gui
def test_real_viewer_opens_simulated_folder_and_screenshots(make_napari_viewer, lin_folder):
    folder, _ = lin_folder
    viewer = make_napari_viewer(show=True)  # a hidden canvas renders nothing
    viewer.open(str(folder), plugin="napari-biogans")
    viewer.dims.set_current_step(0, 4)  # a Tea1 cell
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.ndim == 3 and shot.shape[2] == 4
    assert shot[..., 0].max() > 100 and shot[..., 1].max() > 100  # red and green both on screen


def test_h5_writer_refuses_layer_metadata_that_is_not_a_stack_with_one_line(tmp_path):
    cells = np.zeros((2, 48, 80), np.uint8)
    meta = {"metadata": {"class_index": [0, 3], "class_names": ["Tea1"]}}
    with pytest.raises(lin.LinFormatError, match=r"cells.h5: cannot save these layers .*class index outside 0..0"):
        _io.write_cells_h5(str(tmp_path / "cells.h5"), [(cells, meta, "image"), (cells, {}, "image")])
    assert not list(tmp_path.iterdir())
