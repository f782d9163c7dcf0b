"""FID with a LIN classifier, discriminator features (1-NN accuracy) and latent arithmetic."""

import numpy as np
import pytest
import torch

from napari_biogans import jobs, sampling
from napari_biogans.data.simulator import simulate_stack
from napari_biogans.evaluation import fid, profiling
from napari_biogans.models import make_models

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROTEINS = ["Alp14", "Sid2", "Tea1"]


@pytest.fixture(scope="module")
def stacks():
    return simulate_stack(40, proteins=PROTEINS, seed=1), simulate_stack(40, proteins=PROTEINS, seed=2)


@pytest.fixture(scope="module")
def classifier(stacks):
    train, test = stacks
    return jobs.run(fid.train_classifier(train, test, iterations=60, batch_size=32, width=8))


def test_frechet_distance_is_zero_for_a_set_against_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 6))
    assert fid.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = fid.frechet_distance(a, a + 2.0)
    assert shifted == pytest.approx(6 * 4.0, rel=1e-6)  # ‖Δm‖² = 6·2², same covariance
    with pytest.raises(ValueError, match="two samples"):
        fid.frechet_distance(a[:1], a)


def test_classifier_learns_proteins_and_intra_class_fid_is_below_inter_class(classifier, stacks):
    train, test = stacks
    assert classifier.accuracy > 1 / len(PROTEINS) + 0.2  # well above chance on held-out cells
    matrix = fid.class_fid_matrix(classifier, train, test)
    assert matrix.shape == (3, 3) and (matrix >= 0).all()
    off_diagonal = matrix[~np.eye(3, dtype=bool)].reshape(3, 2)
    assert (np.diag(matrix) < off_diagonal.min(axis=1)).all()  # the thesis's sanity check


def test_generator_fid_has_one_value_per_protein(classifier, stacks):
    torch.manual_seed(0)
    G, _ = make_models("star", n_classes=3, width=4, nz=16, critic_bn=False)
    scores = fid.generator_fid(classifier, G.eval(), stacks[1], n=32)
    assert list(scores) == PROTEINS and all(v > 0 for v in scores.values())


def test_critic_features_and_one_nearest_neighbour_accuracy(stacks):
    train, _ = stacks
    torch.manual_seed(0)
    _, D = make_models("star", n_classes=3, width=4, nz=16, critic_bn=False)
    features = profiling.critic_features(D.eval(), train.images)
    assert features.shape[0] == len(train) and features.shape[1] > 0
    # the measure itself: perfectly separated groups score 1, labels shuffled against features score less
    points = np.repeat(np.eye(3), 5, axis=0) + 0.01 * np.random.default_rng(0).normal(size=(15, 3))
    labels = np.repeat(np.arange(3), 5)
    assert profiling.loo_1nn_accuracy(points, labels) == 1.0
    assert profiling.loo_1nn_accuracy(points, np.roll(labels, 1)) < 1.0
    raw = profiling.loo_1nn_accuracy(train.images.astype(np.float64), train.class_index)
    assert 0.0 <= raw <= 1.0
    _, multichannel = make_models("multichannel", n_classes=3, width=4, nz=16, critic_bn=False)
    with pytest.raises(ValueError, match="per-pair critic"):
        profiling.critic_features(multichannel, train.images)


def test_latent_arithmetic_zero_is_identity_and_length_vector_lengthens():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 16)).astype(np.float32)
    assert np.array_equal(sampling.shift_codes(z, np.zeros(16)), z)
    assert np.array_equal(sampling.shift_codes(z, np.ones(16), strength=0.0), z)
    v = profiling.attribute_vector(z[:2] + 1.0, z[:2])
    assert np.allclose(v, 1.0)
    torch.manual_seed(0)
    G, _ = make_models("star", n_classes=2, width=4, nz=16, critic_bn=False)
    result = profiling.length_attribute(G.eval(), pool=64)
    assert result["vector"].shape == (16,) and result["long_px"] >= result["short_px"]


def test_cli_fid_and_features(tmp_path, capsys):
    import json

    from napari_biogans import cli

    cli.main(["simulate", "--out", str(tmp_path / "data"), "--cells-per-class", "20", "--proteins", "Sid2,Tea1"])
    train, test = (str(tmp_path / "data" / f"LIN_Simulated_WT_size-48-80_{s}") for s in ("train", "test"))
    run = tmp_path / "run"
    assert cli.main(["train", "--data", train, "--model", "star", "--iterations", "1", "--batch-size", "4", "--width",
                     "4", "--device", "cpu", "--out", str(run)]) == 0
    quick = ["--classifier-iterations", "20", "--classifier-width", "8", "--device", "cpu"]
    assert cli.main(["evaluate", "fid", "--model", str(run / "generator.safetensors"), "--data", test, "--train", train,
                     "--generated", "16", "--out", str(tmp_path / "fid"), *quick]) == 0
    from napari_biogans.evaluation import outputs

    assert (tmp_path / "fid" / "fid.csv").read_text().startswith("# SIMULATED cells")  # and the table says so
    _, rows = outputs.read_table(tmp_path / "fid" / "fid.csv")
    assert [r[0] for r in rows] == ["Sid2", "Tea1"] and all(float(v) >= 0 for r in rows for v in r[1:])
    assert cli.main(["evaluate", "features", "--critic", str(run / "train_state.safetensors"), "--data", test,
                     "--train", train, "--out", str(tmp_path / "features"), *quick]) == 0
    accuracy = json.loads((tmp_path / "features" / "features.json").read_text())["accuracy"]
    assert set(accuracy) == {"raw pixels", "LIN classifier", "critic"} and all(0 <= v <= 1 for v in accuracy.values())
    assert cli.main(["evaluate", "fid", "--model", str(run / "generator.safetensors"), "--data", test,
                     "--out", str(tmp_path / "x")]) == 2
    assert "--train is required" in capsys.readouterr().err
