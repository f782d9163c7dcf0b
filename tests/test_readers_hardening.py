"""Issue 14, "Readers": every case found by the hostile-input survey, as a regression test.

Each bad input is refused with one line of the product's own error type that names the file,
before pixels are read or memory is allocated; harmless variants read exactly.
"""

import os
import signal
from contextlib import contextmanager

import h5py
import numpy as np
import pytest
import tifffile

from napari_biogans import _io, ome
from napari_biogans.data import em, guards, lin

from png_forge import png_bytes
from test_lin import make_stack, write_png


@contextmanager
def within(seconds=20):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def fail(*_):
        raise AssertionError(f"still reading after {seconds} s: the reader blocked")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def one_line_naming(err, path):
    message = str(err.value)
    assert "\n" not in message
    assert os.path.basename(path) in message, message
    return message


@pytest.fixture
def h5_file(tmp_path):
    return lin.write_h5(make_stack(), tmp_path / "cells.h5")


def set_attr(path, key, value):
    with h5py.File(path, "r+") as f:
        if key in f.attrs:
            del f.attrs[key]
        f.attrs[key] = value


def replace(path, name, make):
    with h5py.File(path, "r+") as f:
        del f[name]
        make(f)


# --------------------------------------------------------------------------------------------
# .h5 cell stacks


def test_h5_flipped_byte_in_the_pixels_is_refused(h5_file):
    with h5py.File(h5_file) as f:
        info = f["cells"].id.get_chunk_info(0)
    data = bytearray(h5_file.read_bytes())
    data[info.byte_offset + info.size // 2] ^= 0x10
    h5_file.write_bytes(bytes(data))
    with pytest.raises(lin.LinFormatError) as err:
        lin.read_h5(h5_file)
    one_line_naming(err, h5_file)


def test_h5_flipped_byte_in_an_old_file_without_checksums(tmp_path):
    # files written before the checksums: gzip's own failure becomes a clear line
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("cells", data=make_stack().images, compression="gzip")
    with h5py.File(path) as f:
        info = f["cells"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    for k in range(8):
        data[info.byte_offset + 10 + k] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(lin.LinFormatError, match="damaged HDF5 file") as err:
        lin.read_h5(path)
    one_line_naming(err, path)


def test_h5_header_declaring_a_huge_stack_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("cells", shape=(1, 2, 100000, 100000), dtype=np.uint8, chunks=(1, 1, 64, 64))
    assert path.stat().st_size < 10_000
    with pytest.raises(lin.LinFormatError, match="100000 pixels") as err:
        lin.read_h5(path)
    one_line_naming(err, path)


def test_h5_stack_beyond_the_memory_budget_is_refused(h5_file, monkeypatch):
    monkeypatch.setattr(guards, "available_memory", lambda: 10_000)
    with pytest.raises(lin.LinFormatError, match="GiB of memory") as err:
        lin.read_h5(h5_file)
    one_line_naming(err, h5_file)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("class_names", 5, "'class_names' must be text"),
        ("class_names", '"abc"', "'class_names' must be a list"),
        ("class_names", "abc", "'class_names' is not valid JSON"),
        ("class_names", "[]", "1 to"),
        ("class_names", '["P0", "P0"]', "distinct"),
        ("class_names", '["P0"]', "class_index' outside 0..0"),
        ("channel_names", '["a", "b", "c"]', "'channel_names' has 3 names"),
        ("file_names", '["a"]', "'file_names' has 1 names; expected 5"),
        ("simulated", "no", "'simulated' must be true or false"),
        ("simulated", 2, "'simulated' must be true or false"),
        ("description", b"\xff\xfe", "not UTF-8"),
        ("pixel_size_um", -1.0, "finite positive"),
    ],
)
def test_h5_attributes_of_the_wrong_type(h5_file, key, value, message):
    set_attr(h5_file, key, value)
    with pytest.raises(lin.LinFormatError, match=message) as err:
        lin.read_h5(h5_file)
    one_line_naming(err, h5_file)


@pytest.mark.parametrize("scale", ["a", np.array([0.0, 1.0]), np.array([np.nan, 1.0]), np.array([1.0, 2.0, 3.0])])
def test_h5_bad_scale(h5_file, scale):
    set_attr(h5_file, "scale", scale)
    with pytest.raises(lin.LinFormatError, match="'scale' must be 2 finite positive numbers"):
        lin.read_h5_scale(h5_file)


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("cells", lambda f: f.create_group("cells"), "'cells' is a Group; expected a Dataset"),
        ("cells", lambda f: f.__setitem__("cells", h5py.SoftLink("/nowhere")), "'cells' is a SoftLink"),
        ("cells", lambda f: f.__setitem__("cells", h5py.ExternalLink("other.h5", "/x")), "'cells' is a ExternalLink"),
        ("cells", lambda f: f.create_dataset("cells", data=np.zeros((2, 2, 48, 80), np.float32)), "must be uint8"),
        ("cells", lambda f: f.create_dataset("cells", shape=(0, 2, 48, 80), dtype=np.uint8), "holds 0 cells"),
        ("cells", lambda f: f.create_dataset("cells", shape=(5, 2, 0, 0), dtype=np.uint8), "height is 0 pixels"),
        ("cells", lambda f: f.create_dataset("cells", data=np.zeros((5, 3, 48, 80), np.uint8)), "3 channels"),
        ("truth", lambda f: f.create_dataset("truth", data=np.zeros(5)), "'truth' is a Dataset; expected a Group"),
        ("class_index", lambda f: f.create_dataset("class_index", data=np.zeros(5)), "must be 5 integers"),
        ("class_index", lambda f: f.create_group("class_index"), "'class_index' is a Group"),
    ],
)
def test_h5_objects_of_the_wrong_kind(h5_file, name, make, message):
    replace(h5_file, name, make)
    with pytest.raises(lin.LinFormatError, match=message) as err:
        lin.read_h5(h5_file)
    one_line_naming(err, h5_file)


def test_h5_truth_column_of_the_wrong_length(h5_file):
    with h5py.File(h5_file, "r+") as f:
        del f["truth/phase"]
        f["truth"].create_dataset("phase", data=np.zeros(3))
    with pytest.raises(lin.LinFormatError, match="truth 'phase' must be 5"):
        lin.read_h5(h5_file)


def test_float_stack_error_names_the_file(tmp_path):
    path = tmp_path / "floats.h5"
    with h5py.File(path, "w") as f:
        f["cells"] = np.zeros((1, 2, 48, 80), np.float32)
    with pytest.raises(lin.LinFormatError, match="floats.h5: 'cells' must be uint8"):
        lin.read_h5(path)


def test_h5_round_trip_keeps_non_ascii_truth(tmp_path):
    stack = make_stack()
    stack.truth["note"] = np.array(["µm"] * len(stack))
    back = lin.read_h5(lin.write_h5(stack, tmp_path / "cells.h5"))
    assert back.truth["note"].tolist() == ["µm"] * len(stack)


# --------------------------------------------------------------------------------------------
# .tif cell stacks


def tiff_with(tmp_path, images=None, **meta):
    stack = make_stack(truth=False)
    metadata = {"axes": "QCYX", "class_names": stack.class_names, "class_index": stack.class_index.tolist(),
                "file_names": stack.file_names, **meta}
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, stack.images if images is None else images, metadata=metadata)
    return path


def label_map_tiff(tmp_path):
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, np.zeros((2, 2), np.uint8))
    return path


@pytest.mark.parametrize(
    "write, read, error",
    [(tiff_with, lin.read_tiff, lin.LinFormatError), (label_map_tiff, em.read_label_map, em.EMFormatError)],
    ids=["cell stack", "label map"],
)
def test_tiff_header_claiming_0x0_is_refused(tmp_path, write, read, error):
    path = write(tmp_path)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(0)
        tif.pages[0].tags["ImageLength"].overwrite(0)
    with pytest.raises(error) as err:
        read(path)
    one_line_naming(err, path)


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"class_names": 5}, "'class_names' must be a list"),
        ({"class_names": "abc"}, "'class_names' must be a list"),
        ({"channel_names": "ab"}, "'channel_names' must be a list"),
        ({"channel_names": ["a", "b", "c"]}, "'channel_names' has 3 names"),
        ({"simulated": "no"}, "'simulated' must be true or false"),
        ({"class_index": [0, 9, 0, 0, 0]}, "outside 0..1"),
        ({"file_names": ["a"]}, "'file_names' has 1 names"),
    ],
)
def test_tiff_metadata_of_the_wrong_type(tmp_path, meta, message):
    path = tiff_with(tmp_path, **meta)
    with pytest.raises(lin.LinFormatError, match=message) as err:
        lin.read_tiff(path)
    one_line_naming(err, path)


def test_tiff_metadata_changed_after_writing_is_refused(tmp_path):
    path = lin.write_tiff(make_stack(truth=False), tmp_path / "cells.tif")
    image = ome.read(path)
    image.metadata["file_names"][0] = "P0/cell9.png"  # valid, but not what was written
    ome.write(path, image.data, image.axes, image.channel_names, None, image.metadata)
    with pytest.raises(lin.LinFormatError, match="cells.tif: its metadata .* is damaged"):
        lin.read_tiff(path)


def test_tiff_with_three_channels_is_refused(tmp_path):
    path = tiff_with(tmp_path, images=np.zeros((5, 3, 48, 80), np.uint8))
    with pytest.raises(lin.LinFormatError, match=r"shape \(N, 2, H, W\), got \(5, 3, 48, 80\)"):
        lin.read_tiff(path)


def test_tiff_beyond_the_memory_budget_is_refused(tmp_path, monkeypatch):
    path = tiff_with(tmp_path)
    monkeypatch.setattr(guards, "available_memory", lambda: 10_000)
    with pytest.raises(lin.LinFormatError, match="GiB of memory"):
        lin.read_tiff(path)


# --------------------------------------------------------------------------------------------
# LIN folders: ground_truth.csv and PNG kinds


@pytest.fixture
def lin_folder(tmp_path):
    return lin.write_lin_folder(make_stack(), tmp_path / "X_train")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: "\n".join(line.split(",", 1)[1] for line in t.splitlines()) + "\n", "expected a header 'file"),
        (lambda t: t.replace("\n", ",1\n", 2).replace(",1\n", "\n", 1), "fields, the header has"),  # a long row
        (lambda t: "\n".join(t.splitlines()[:2] + [t.splitlines()[2].rsplit(",", 1)[0]] + t.splitlines()[3:]),
         "fields, the header has"),  # a short row
        (lambda t: t + "P0/cell9.png,P0," + "x" * 140_000 + ",1\n", "not a readable CSV"),  # a 140 KB field
        (lambda t: t + t.splitlines()[1] + "\n", "listed twice"),
        (lambda t: t.replace("P1/cell0.png,P1", "P1/cell0.png,P0"), "differs from their folder"),
        (lambda t: "", "expected a header"),
        (lambda t: "\n".join(t.splitlines()[:-1]) + "\n", "no ground truth for 1 cells"),
    ],
)
def test_bad_ground_truth_csv(lin_folder, edit, message):
    csv_path = lin_folder / "ground_truth.csv"
    csv_path.write_text(edit(csv_path.read_text()))
    with pytest.raises(lin.LinFormatError, match=message) as err:
        lin.read_lin_folder(lin_folder)
    one_line_naming(err, csv_path)


def test_non_utf8_ground_truth_names_the_file(lin_folder):
    csv_path = lin_folder / "ground_truth.csv"
    csv_path.write_bytes(csv_path.read_bytes().replace(b"phase", b"ph\xe4se"))
    with pytest.raises(lin.LinFormatError, match="ground_truth.csv: not UTF-8 text"):
        lin.read_lin_folder(lin_folder)


def test_16_bit_png_is_refused_not_read_as_its_high_byte(tmp_path):
    twelve_bit = np.full((48, 80, 3), 0x0F70, np.uint16)  # 12-bit values: as 8-bit they would read as 15, 7
    (tmp_path / "Tea1").mkdir()
    (tmp_path / "Tea1" / "cell0.png").write_bytes(png_bytes(twelve_bit, depth=16))
    with pytest.raises(lin.LinFormatError, match="cell0.png: expected an 8-bit RGB PNG, got a 16-bit RGB PNG"):
        lin.read_lin_folder(tmp_path)


def test_rgba_png_reads_only_when_fully_opaque(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (48, 80, 3), np.uint8)
    rgba = np.concatenate([rgb, np.full((48, 80, 1), 255, np.uint8)], axis=2)
    write_png(tmp_path / "Tea1" / "cell0.png", rgba)
    stack = lin.read_lin_folder(tmp_path)
    np.testing.assert_array_equal(stack.images[0], np.moveaxis(rgb[..., :2], -1, 0))
    rgba[3, 4, 3] = 128
    write_png(tmp_path / "Tea1" / "cell0.png", rgba)
    with pytest.raises(lin.LinFormatError, match="cell0.png: has transparent pixels"):
        lin.read_lin_folder(tmp_path)


def test_palette_png_is_expanded_through_its_palette(tmp_path):
    from PIL import Image

    colours = np.array([[0, 0, 0], [200, 10, 0], [30, 250, 0]], np.uint8)
    index = np.random.default_rng(1).integers(0, 3, (48, 80))
    image = Image.fromarray(index.astype(np.uint8), mode="P")
    image.putpalette(colours.ravel().tolist())
    (tmp_path / "Tea1").mkdir()
    image.save(tmp_path / "Tea1" / "cell0.png")
    stack = lin.read_lin_folder(tmp_path)
    np.testing.assert_array_equal(stack.images[0], np.moveaxis(colours[index][..., :2], -1, 0))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: png_bytes(np.zeros((0, 0, 3), np.uint8)), "height is 0 pixels"),
        (lambda: png_bytes(np.zeros((1, 100000, 3), np.uint8)), "width is 100000 pixels"),
        (lambda: b"GIF89a" + bytes(100), "not a PNG file"),
        (lambda: png_bytes(np.zeros((48, 80, 3), np.uint8))[:-6], "no intact IEND chunk at its end"),
    ],
)
def test_png_header_checked_before_decoding(tmp_path, make, message):
    (tmp_path / "Tea1").mkdir()
    (tmp_path / "Tea1" / "cell0.png").write_bytes(make())
    with pytest.raises(lin.LinFormatError, match=f"cell0.png: .*{message}"):
        lin.read_lin_folder(tmp_path)


def test_png_with_a_flipped_byte_is_refused(tmp_path):
    write_png(tmp_path / "Tea1" / "cell0.png", np.random.default_rng(0).integers(0, 256, (48, 80, 3), np.uint8))
    path = tmp_path / "Tea1" / "cell0.png"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the pixel data, which a decoder may not notice
    path.write_bytes(bytes(data))
    with pytest.raises(lin.LinFormatError, match="cell0.png: not a readable PNG"):
        lin.read_lin_folder(tmp_path)


def test_lin_folder_beyond_the_memory_budget_is_refused(lin_folder, monkeypatch):
    monkeypatch.setattr(guards, "available_memory", lambda: 10_000)
    with pytest.raises(lin.LinFormatError, match="5 cells would need"):
        lin.read_lin_folder(lin_folder)


def test_non_utf8_protein_folder_is_refused_and_root_name_is_shown(tmp_path):
    root = tmp_path / "X_train"
    write_png(root / "Tea1" / "cell0.png", np.zeros((48, 80, 3), np.uint8))
    os.rename(bytes(root / "Tea1"), bytes(root) + b"/Tea\xff")
    with pytest.raises(lin.LinFormatError, match="folder name is not printable UTF-8"):
        lin.read_lin_folder(root)
    odd_root = os.fsdecode(bytes(tmp_path) + b"/Odd\xfe_train")
    os.mkdir(odd_root)
    write_png(lin.Path(odd_root) / "Tea1" / "cell0.png", np.zeros((48, 80, 3), np.uint8))
    stack = lin.read_lin_folder(odd_root)
    stack.description.encode("utf-8")  # what model files and tables record must be encodable
    assert stack.class_names == ["Tea1"]
    os.rename(bytes(root) + b"/Tea\xff", bytes(root) + b"/Tea\n1")  # one line, even for such a name
    with pytest.raises(lin.LinFormatError, match=r"Tea\\n1: folder name is not printable") as err:
        lin.read_lin_folder(root)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# Non-regular files


@pytest.mark.parametrize("name", ["x.h5", "x.tif", "x.png"])
def test_fifo_is_refused_at_once(tmp_path, name):
    path = tmp_path / name
    os.mkfifo(path)
    with within():
        with pytest.raises((lin.LinFormatError, em.EMFormatError), match="not a regular file|expected a LIN folder"):
            lin.read_cells(path)
        with pytest.raises(em.EMFormatError, match=f"{name}: not a regular file"):
            em.read_label_map(path)
        if name.endswith(".h5"):
            assert _io.get_h5_reader(str(path)) is None
            with pytest.raises(lin.LinFormatError, match="not a regular file"):
                lin.read_h5_scale(path)


def test_fifo_as_ground_truth_is_refused(lin_folder):
    csv_path = lin_folder / "ground_truth.csv"
    csv_path.unlink()
    os.mkfifo(csv_path)
    with within():
        with pytest.raises(lin.LinFormatError, match="ground_truth.csv: not a regular file"):
            lin.read_lin_folder(lin_folder)


# --------------------------------------------------------------------------------------------
# VNC folders and label maps


def vnc(tmp_path, membranes):
    (tmp_path / "raw").mkdir()
    (tmp_path / "membranes").mkdir()
    tifffile.imwrite(tmp_path / "raw" / "00.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "membranes" / "00.tif", membranes)
    return tmp_path


@pytest.mark.parametrize(
    "membranes, message",
    [
        (np.full((8, 8), np.nan, np.float32), "float32"),
        (-np.ones((8, 8), np.int16), "with negative values"),
        (np.zeros((8, 8, 3), np.uint8), r"\(8, 8, 3\)"),
    ],
)
def test_vnc_membranes_that_are_not_a_mask_are_refused(tmp_path, membranes, message):
    stack = vnc(tmp_path, membranes)
    with pytest.raises(em.EMFormatError, match=f"00.tif: expected a 2-D mask.*{message}"):
        em.read_section(stack, 0)


def test_vnc_sections_of_different_sizes(tmp_path):
    (tmp_path / "raw").mkdir()
    tifffile.imwrite(tmp_path / "raw" / "00.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "raw" / "01.tif", np.zeros((4, 8), np.uint8))
    with pytest.raises(em.EMFormatError, match=r"section .*/01 is \(4, 8\), unlike"):
        em.read_sections(tmp_path, [0, 1])


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.full((4, 4), np.nan, np.float32), r"label values \[nan\]"),
        (-np.ones((4, 4), np.int16), r"label values \[-1\]"),
        (np.zeros((2, 8, 8), np.uint8), "expected a 2-D label map"),
    ],
)
def test_label_maps_with_bad_values(tmp_path, labels, message):
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, labels)
    with pytest.raises(em.EMFormatError, match=f"labels.tif: {message}"):
        em.read_label_map(path)


def test_label_map_beyond_the_memory_budget(tmp_path, monkeypatch):
    path = em.write_label_map(np.zeros((64, 64), np.uint8), tmp_path / "labels.png")
    monkeypatch.setattr(guards, "available_memory", lambda: 1000)
    with pytest.raises(em.EMFormatError, match="labels.png: .*GiB of memory"):
        em.read_label_map(path)


def test_damaged_label_png_is_refused(tmp_path):
    path = em.write_label_map(np.random.default_rng(0).integers(0, 3, (32, 32)).astype(np.uint8), tmp_path / "l.png")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(em.EMFormatError, match="l.png: not a readable image"):
        em.read_label_map(path)


# --------------------------------------------------------------------------------------------
# The napari reader hooks


def test_napari_h5_reader_refuses_a_damaged_stack_with_one_line(h5_file):
    set_attr(h5_file, "class_names", 5)
    reader = _io.get_h5_reader(str(h5_file))
    assert reader is not None
    with pytest.raises(lin.LinFormatError) as err:
        reader(str(h5_file))
    one_line_naming(err, h5_file)


def test_napari_h5_reader_refuses_bad_samples(tmp_path):
    path = tmp_path / "samples.h5"
    with h5py.File(path, "w") as f:
        f["samples"] = np.zeros((2, 3, 48, 80), np.uint8)
        f.attrs["channel_names"] = '["Bgs4", "Tea1"]'
    with pytest.raises(lin.LinFormatError, match="'channel_names' has 2 names; expected 3"):
        _io.read_h5_layers(str(path))
