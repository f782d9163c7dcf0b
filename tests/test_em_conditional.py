"""The ``conditional`` EM mode: mitochondria given real membranes (the paper's supplement B), trained
on the VNC fixture crops; its model file, the CLI (its exact resume is in test_em_training.py) and its place in the EM report."""

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_biogans import checkpoints, cli, jobs
from napari_biogans.data import em
from napari_biogans.evaluation.em_report import EMEvalSettings, evaluate_em
from napari_biogans.models.em import LabelGenerator
from napari_biogans.models.em_inference import EMModel, load_em_model
from napari_biogans.training.em_trainer import EMTrainConfig, EMTrainer

FIXTURE = Path(__file__).parent / "fixtures" / "vnc" / "stack1"
# whole 256² sections seen at 128 by a width-4 CRN (factor 64: 2x2 noise)
TINY = dict(mode="conditional", label_width=4, label_d_width=4, device="cpu", log_every=1, preview_every=2,
            checkpoint_every=100, batch_size=2, pool_size=3)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sections():
    return em.read_sections(FIXTURE, [0, 1])


@pytest.fixture(scope="module")
def trained(sections, tmp_path_factory):
    trainer = EMTrainer(EMTrainConfig(iterations=2, **TINY), *sections, tmp_path_factory.mktemp("cond") / "run",
                        description="VNC fixture")
    events = [u.payload for u in trainer.run()]
    return trainer, events


def test_trains_two_iterations_and_saves_a_loadable_model(trained):
    trainer, events = trained
    assert [e.iteration for e in events] == [1, 2, 2] and events[-1].finished
    assert set(events[0].losses) == {"D_y", "G_y"} and all(np.isfinite(list(events[0].losses.values())))
    preview = events[1].preview
    assert preview.labels.shape == preview.image.shape == (256, 256) and preview.image.dtype == np.uint8
    np.testing.assert_array_equal(preview.labels == em.MEMBRANE, trainer.preview_membranes)
    assert trainer.preview_membranes.any() and not trainer.preview_membranes.all()

    _, meta = checkpoints.load(trainer.model_path, kind="em-generator")
    assert meta["mode"] == "conditional" and meta["image_generator"] is None
    model = load_em_model(trainer.model_path)
    assert model.image_generator is None and model.meta["iterations"] == 2
    assert model.label_generator.config["arch"] == "conditional-label-generator"
    for key, value in trainer.models["Gy"].state_dict().items():
        assert torch.equal(value, model.label_generator.state_dict()[key]), key
    with pytest.raises(ValueError, match="mitochondria_given_membranes"):
        model.sample_labels(64, 64)


def test_membranes_are_kept_and_mitochondria_drawn_only_off_them(trained):
    model = load_em_model(trained[0].model_path)
    membranes = em.read_sections(FIXTURE, [10])[1][0, :100, :170] == em.MEMBRANE  # an odd size, padded inside
    codes = model.mitochondria_given_membranes(membranes, seed=3)
    assert codes.shape == membranes.shape and codes.dtype == np.uint8
    np.testing.assert_array_equal(codes == em.MEMBRANE, membranes)
    assert set(np.unique(codes[~membranes])) <= {em.CYTOPLASM, em.MITOCHONDRIA}
    np.testing.assert_array_equal(codes, model.mitochondria_given_membranes(membranes, seed=3))

    last = model.label_generator.refine2[-1]  # saturate the output: mitochondria everywhere, then nowhere
    with torch.no_grad():
        last.bias.fill_(10.0)
        everywhere = model.mitochondria_given_membranes(membranes, seed=3)
        last.bias.fill_(-10.0)
        nowhere = model.mitochondria_given_membranes(membranes, seed=3)
    np.testing.assert_array_equal(everywhere, np.where(membranes, em.MEMBRANE, em.MITOCHONDRIA))
    np.testing.assert_array_equal(nowhere, np.where(membranes, em.MEMBRANE, em.CYTOPLASM))

    unconditional = EMModel(LabelGenerator(width=4), None, {"mode": "sgan", "label_downsample": 2}, torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a conditional model"):
        unconditional.mitochondria_given_membranes(membranes)


def test_cli_trains_a_conditional_model_that_the_em_report_evaluates(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train-em", "--data", str(FIXTURE), "--model", "conditional", "--sections", "0", "1",
                     "--iterations", "2", "--label-width", "4", "--device", "cpu", "--out", str(run)]) == 0
    assert "iteration 2" in capsys.readouterr().out
    model_file = run / "em_model.safetensors"
    assert cli.main(["render-em", "--model", str(model_file), "--device", "cpu", "--out", str(tmp_path / "x.png")]) == 2
    assert "conditional model: it has no image generator" in capsys.readouterr().err

    # mitochondria drawn on the validation membranes: the cells are the real ones, so their statistics match exactly
    settings = EMEvalSettings(train_sections=(0, 1), validation_sections=(10,), n_generated=1)
    results = jobs.run(evaluate_em(load_em_model(model_file), FIXTURE, settings)).results
    assert set(results["skipped"]) == {"segmentation", "birthday", "c2st"}
    cells = results["statistics"]["generated"]["cell_area"]
    assert cells["chi2"] == 0.0 and cells["real_mean"] == cells["fake_mean"]
