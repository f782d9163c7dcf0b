"""OME-TIFF and OME-Zarr: every image the product writes keeps its axes, channel names, pixel size and
provenance, and the readers give all of it back."""

import numpy as np
import pytest
import tifffile

from napari_biogans import _io, cli, ome
from napari_biogans.data import em, fields, lin
from napari_biogans.sampling import SIMULATED_NOTE, Samples, write_samples

pytest.importorskip("ome_zarr")

SUFFIXES = [".tif", ".ome.zarr"]


def small_stack():
    rng = np.random.default_rng(1)
    return lin.CellStack(images=rng.integers(0, 256, (3, 2, 12, 20), dtype=np.uint8), class_index=[0, 1, 1],
                         class_names=["Sid2", "Tea1"], file_names=["a.png", "b.png", "c.png"],
                         channel_names=("Bgs4", "Tea1-GFP"), truth={}, description="µ test", simulated=True,
                         pixel_size_um=0.2)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_write_and_read_keep_axes_names_pixel_size_and_json(tmp_path, suffix):
    data = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)
    path = ome.write(tmp_path / f"x{suffix}", data, "TCYX", ["a", "b", "c"], 0.065, {"provenance": {"seed": 3}})
    image = ome.read(path)
    assert image.axes == "TCYX" and image.channel_names == ["a", "b", "c"]
    assert image.pixel_size_um == pytest.approx(0.065) and image.metadata == {"provenance": {"seed": 3}}
    np.testing.assert_array_equal(image.data, data)
    assert not list(tmp_path.glob(".*partial*"))  # written atomically


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_cell_stacks_round_trip_through_read_cells(tmp_path, suffix):
    stack = small_stack()
    back = lin.read_cells(lin.write_tiff(stack, tmp_path / f"cells{suffix}"))
    np.testing.assert_array_equal(back.images, stack.images)
    assert back.class_names == stack.class_names and back.class_index.tolist() == [0, 1, 1]
    assert back.file_names == stack.file_names and back.channel_names == stack.channel_names
    assert back.simulated and back.description == "µ test" and back.pixel_size_um == pytest.approx(0.2)


def test_the_ome_tiff_declares_its_axes_and_channels_for_bio_formats(tmp_path):
    path = lin.write_tiff(small_stack(), tmp_path / "cells.tif")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.series[0].axes == "TCYX"
        xml = tif.ome_metadata
    assert 'Name="Tea1-GFP"' in xml and 'PhysicalSizeX="0.2"' in xml and 'SizeT="3"' in xml and 'SizeC="2"' in xml


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_samples_open_in_napari_as_one_layer_per_channel_with_provenance(tmp_path, suffix):
    samples = Samples(images=np.full((2, 3, 6, 8), 7, np.uint8), channel_names=["Bgs4", "Sid2", "Tea1"],
                      z=np.zeros((2, 4), np.float32), provenance={"model": "m", "simulated_training_data": True})
    path = tmp_path / f"s{suffix}"
    write_samples(samples, path, stack_axis="frame")
    meta = ome.read(path).metadata
    assert meta["note"] == SIMULATED_NOTE and meta["provenance"]["model"] == "m"
    reader = _io.get_ome_reader(str(path))
    layers = reader(str(path))
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["s Bgs4", "s Sid2", "s Tea1"]
    assert layers[1][1]["axis_labels"] == ("frame", "y", "x") and layers[1][1]["metadata"]["provenance"]["model"] == "m"
    assert layers[0][1]["metadata"]["simulated_training_data"] is True


def test_the_reader_leaves_foreign_tiffs_to_napari(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "other.ome.tif", np.zeros((4, 4), np.uint8), ome=True)
    assert _io.get_ome_reader(str(tmp_path / "plain.tif")) is None
    assert _io.get_ome_reader(str(tmp_path / "other.ome.tif")) is None


def test_damaged_provenance_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), ome=True, metadata={"axes": "YX", "Description": "{oops"})
    with pytest.raises(ome.OmeError, match=r"x.tif: its metadata \(provenance\) is damaged") as err:
        ome.read(path)
    assert "\n" not in str(err.value)


def test_an_ome_zarr_field_of_view_is_read_with_its_pixel_size_and_names(tmp_path):
    zstack = np.random.default_rng(0).integers(0, 4000, (3, 2, 32, 40), dtype=np.uint16)  # (Z, C, Y, X)
    path = fields.write_field_tiff(tmp_path / "fov.ome.zarr", zstack, 0.1, ["Bgs4", "GFP"], z_step_um=0.3)
    assert fields.find_fields(tmp_path) == [path]
    field = fields.read_field(image=path)
    assert field.pixel_size_um == pytest.approx(0.1) and field.channel_names == ("Bgs4", "GFP")
    np.testing.assert_array_equal(field.green, zstack[:, 1].max(axis=0))


def test_render_em_writes_an_ome_zarr_with_its_label_map(tmp_path, one_torch_thread):
    out = tmp_path / "em.ome.zarr"
    assert cli.main(["render-em", "--model", "vnc-dsgan", "--size", "64", "--device", "cpu", "--out", str(out)]) == 0
    image = ome.read(out)
    assert image.axes == "YX" and image.data.shape == (64, 64) and image.pixel_size_um == pytest.approx(0.0046)
    assert image.metadata["provenance"]["model"] == "vnc-dsgan"
    labels = ome.read_labels(out)
    assert labels.shape == (64, 64) and set(np.unique(labels)) <= {0, 1, 2}
    np.testing.assert_array_equal(em.read_label_map(out), labels)  # render-em --labels takes it back
    layers = _io.get_ome_reader(str(out))(str(out))
    assert [kind for _, _, kind in layers] == ["image", "labels"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_napari_writer_saves_layers_as_named_channels_and_reads_them_back(tmp_path, suffix):
    samples = Samples(images=np.arange(2 * 2 * 3 * 4, dtype=np.uint8).reshape(2, 2, 3, 4),
                      channel_names=["Bgs4", "Sid2"], z=np.zeros((2, 4), np.float32), provenance={"seed": 8})
    layers = _io.sample_layers(samples.images, samples.channel_names, "g",
                               {"provenance": samples.provenance, "codes": samples.z})
    [written] = _io.write_ome(str(tmp_path / f"saved{suffix}"), layers)
    back = _io.read_ome_layers(written)
    assert [kwargs["name"] for _, kwargs, _ in back] == ["saved g Bgs4", "saved g Sid2"]
    np.testing.assert_array_equal(back[1][0], samples.images[:, 1])
    assert back[0][1]["metadata"]["provenance"] == {"seed": 8}


def test_a_folder_that_is_not_an_ome_zarr_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "bad.ome.zarr"
    folder.mkdir()
    (folder / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    with pytest.raises(lin.LinFormatError, match="bad.ome.zarr: not a readable OME-Zarr") as err:
        lin.read_cells(folder)
    assert "\n" not in str(err.value)
    assert _io.get_ome_reader(str(folder)) is None
