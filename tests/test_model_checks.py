"""model_checks.check_model_file on model files written with checkpoints.save / save_generator, then corrupted."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from napari_biogans import checkpoints, model_checks
from napari_biogans.data import guards
from napari_biogans.models import StarGenerator
from napari_biogans.models.em import CascadeGenerator, LabelGenerator


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def star_file(tmp_path):
    torch.manual_seed(0)
    generator = StarGenerator(n_classes=2, nz=8, width=4)
    meta = {"class_names": ["Alp14", "Tea1"], "image_size": [48, 80], "channel_names": ["Bgs4", "Alp14", "Tea1"]}
    return checkpoints.save_generator(tmp_path / "star.safetensors", generator, meta, half=True)


@pytest.fixture
def em_file(tmp_path):
    label_generator = LabelGenerator(width=4, n_layers=2, nz=8)
    image_generator = CascadeGenerator(width=4, n_blocks=2)
    tensors = {f"label_generator.{k}": v for k, v in label_generator.state_dict().items()}
    tensors.update({f"image_generator.{k}": v for k, v in image_generator.state_dict().items()})
    meta = {"kind": "em-generator", "label_generator": label_generator.config,
            "image_generator": image_generator.config, "mode": "dsgan", "label_downsample": 2, "crop": 64}
    return checkpoints.save(tmp_path / "em.safetensors", tensors, meta)


def check(path):
    tensors, meta = checkpoints.load(path)
    model_checks.check_model_file(path, meta, tensors)


def rewrite(path, meta_change=None, tensor_change=None):
    """Rewrite ``path`` with its JSON metadata or tensors changed, as a damaged or hostile file would be."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[checkpoints.HEADER_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta_change is not None:
        meta = meta_change(meta)
    if tensor_change is not None:
        tensor_change(tensors)
    save_file(tensors, str(path), metadata={checkpoints.HEADER_KEY: json.dumps(meta)})
    return path


def refused(path, message):
    with pytest.raises(checkpoints.CheckpointError, match=message) as err:
        check(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_shipped_and_fresh_models_pass(star_file, em_file):
    check(star_file)
    check(em_file)
    for name in ("star-6", "one-class-sep-6", "vnc-dsgan"):
        check(checkpoints.resolve_model(name))


@pytest.mark.parametrize("meta", [[1, 2], None, 5, "star"])
def test_metadata_that_is_not_an_object(star_file, meta):
    refused(rewrite(star_file, lambda m: meta), "the metadata must be a JSON object")


def test_missing_or_wrong_kind(star_file):
    refused(rewrite(star_file, lambda m: {k: v for k, v in m.items() if k != "kind"}), "'kind' is None")
    refused(rewrite(star_file, lambda m: {**m, "kind": "train-state"}), "'kind' is 'train-state'")


def test_newer_format_is_refused(star_file):
    refused(rewrite(star_file, lambda m: {**m, "format": 99}), "format 99 is not one this version reads")


def test_width_of_a_million_is_refused_without_allocating(star_file):
    # the 300 KB file whose card said width 1,000,000 made napari allocate ~20 GB
    refused(rewrite(star_file, lambda m: {**m, "config": {**m["config"], "width": 1_000_000}}),
            "config 'width' is 1000000; expected an integer from 1 to 4096")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("nz", 0, "'nz' is 0"),
        ("nz", 2.5, "'nz' is 2.5"),
        ("width", True, "'width' is True"),
        ("width", "64", "'width' is '64'"),
        ("n_classes", 10**9, "'n_classes' is 1000000000"),
        ("image_size", [100000, 100000], "'image_size' is \\[100000, 100000\\]"),
        ("image_size", "48x80", "'image_size' is '48x80'"),
        ("arch", "nope", "unknown generator 'nope'"),
        ("nz_red", 8, "'nz_red' 8 must be smaller than 'nz' 8"),
        ("red_widths", [0, 0, 0, 0], "'red_widths'"),
    ],
)
def test_config_values_out_of_bounds(star_file, key, value, message):
    refused(rewrite(star_file, lambda m: {**m, "config": {**m["config"], key: value}}), message)


def test_config_within_bounds_that_still_does_not_fit_memory(star_file, monkeypatch):
    monkeypatch.setattr(guards, "available_memory", lambda: 1000)
    refused(star_file, "GiB of memory")


def test_parameter_count_bound(star_file, monkeypatch):
    monkeypatch.setattr(model_checks, "MAX_PARAMETERS", 1000)
    refused(star_file, "parameters, more than 1,000")


@pytest.mark.parametrize(
    "names, message",
    [
        ([], "'class_names' must be a non-empty list"),
        ("ab", "'class_names' must be a non-empty list"),
        ([""], "'class_names' must be a non-empty list"),
        ([1, 2], "'class_names' must be a non-empty list"),
        (["A", "A"], "repeats a name"),
        (["A"], "has 1 names for a generator of 2 classes"),
        (["A", "B", "C"], "has 3 names for a generator of 2 classes"),
    ],
)
def test_bad_class_names(star_file, names, message):
    refused(rewrite(star_file, lambda m: {**m, "class_names": names}), message)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights(star_file, value):
    def poison(tensors):
        tensors["net.green_first.weight"] = tensors["net.green_first.weight"].clone()
        tensors["net.green_first.weight"].view(-1)[3] = value

    refused(rewrite(star_file, tensor_change=poison), "'net.green_first.weight' holds NaN or infinite values")


def test_integer_weights_are_not_cast_silently(star_file):
    def retype(tensors):
        tensors["net.green_first.weight"] = tensors["net.green_first.weight"].to(torch.int32)

    refused(rewrite(star_file, tensor_change=retype), "holds int32 values; expected floating point")


def test_tensor_names_and_shapes_must_fit_the_config(star_file):
    def drop(tensors):
        del tensors["net.green_first.weight"]

    refused(rewrite(star_file, tensor_change=drop), r"missing \['net.green_first.weight'\]")


def test_tensor_shape_mismatch(star_file):
    refused(rewrite(star_file, lambda m: {**m, "config": {**m["config"], "width": 8, "red_widths": None}}),
            "has shape .* the config needs")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: {**m, "mode": "x"}, "'mode' is 'x'"),
        (lambda m: {**m, "label_downsample": 100}, "'label_downsample' is 100"),
        (lambda m: {**m, "crop": 10**6}, "'crop' is 1000000"),
        (lambda m: {**m, "label_generator": {**m["label_generator"], "width": 10**6}},
         "'label_generator' 'width' is 1000000"),
        (lambda m: {**m, "image_generator": None}, "'image_generator' must be a JSON object"),
        (lambda m: {**m, "mode": "joint"}, "needs a 'joint-generator'"),
        (lambda m: {**m, "label_generator": {**m["label_generator"], "n_layers": 3}}, "the tensors do not fit"),
    ],
)
def test_em_model_checks(em_file, change, message):
    refused(rewrite(em_file, change), message)


def test_em_model_with_nan_weights(em_file):
    def poison(tensors):
        key = "image_generator.label_conv.weight"
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = float("nan")

    refused(rewrite(em_file, tensor_change=poison), "holds NaN or infinite values")


def test_model_metadata_that_is_not_json(star_file):
    with safe_open(str(star_file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(star_file), metadata={checkpoints.HEADER_KEY: "{"})
    with pytest.raises(checkpoints.CheckpointError, match="star.safetensors"):
        check(star_file)
