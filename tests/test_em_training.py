"""The EM training loop on real VNC crops: every mode trains and saves a loadable model, resumes
exactly, stops cleanly and keeps good checkpoints."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_biogans import checkpoints
from napari_biogans.data import em
from napari_biogans.models.em_inference import load_em_model
from napari_biogans.training.em_trainer import (
    EMTrainConfig,
    EMTrainer,
    HistoryPool,
    TrainingDiverged,
)

FIXTURE = Path(__file__).parent / "fixtures" / "vnc" / "stack1"
# 128 crops, label GAN on 256 sections seen at 128 (sgan, joint) or 128 crops seen at 64 (dsgan)
TINY = dict(label_width=4, image_width=4, label_d_width=4, image_d_width=4, reconstructor_width=4,
            reconstructor_depth=4, crop=128, device="cpu", log_every=1, preview_every=2, checkpoint_every=100,
            batch_size=2, pool_size=3)
MODES = {"sgan": {}, "dsgan": {"label_pyramid": ((3, 1, 0.5), (3, 2, 0.5))}, "joint": {}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sections():
    return em.read_sections(FIXTURE, [0, 1])


def config(mode, **kwargs):
    return EMTrainConfig(mode=mode, **{**TINY, **MODES.get(mode, {}), **kwargs})


def weights(trainer):
    return {f"{n}.{k}": v.clone() for n, m in trainer.models.items() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_trains_and_saves_a_loadable_model(tmp_path, sections, mode):
    trainer = EMTrainer(config(mode, iterations=2), *sections, tmp_path / "run", description="VNC fixture")
    before = weights(trainer)
    events = [u.payload for u in trainer.run()]
    assert [e.iteration for e in events] == [1, 2, 2] and events[-1].finished
    assert "finished at iteration 2" in events[-1].message
    assert all(math.isfinite(v) for v in events[0].losses.values())
    expected = {"sgan": {"D_y", "G_y", "D_x", "G_x", "L1", "spread"}, "joint": {"D_y", "G_y"},
                "dsgan": {"D_y", "D_x", "G_y", "G_x", "reg", "B", "cyc", "cyc_fake", "spread"}}[mode]
    assert set(events[0].losses) == expected
    preview = events[1].preview
    side = 256 if mode == "joint" else 128
    assert preview.labels.shape == preview.image.shape == (side, side) and preview.image.dtype == np.uint8
    assert set(np.unique(preview.labels)) <= {0, 1, 2} and preview.image.std() > 0
    after = weights(trainer)
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight") and ".0." in k)

    model = load_em_model(trainer.model_path)
    assert model.meta["mode"] == mode and model.meta["iterations"] == 2
    assert model.meta["data"]["sha256"] == trainer.data_hash and model.meta["data"]["description"] == "VNC fixture"
    for name, module in (("Gy", model.label_generator), ("Gx", model.image_generator)):
        if module is None:
            assert mode == "joint"
            continue
        assert not module.training
        for key, value in trainer.models[name].state_dict().items():
            assert torch.equal(value, module.state_dict()[key]), key
    labels = model.sample_labels(150, 70, seed=5)
    assert labels.shape == (150, 70) and set(np.unique(labels)) <= {0, 1, 2}
    np.testing.assert_array_equal(labels, model.sample_labels(150, 70, seed=5))
    if mode == "joint":
        joint_labels, image = model.sample_joint(64, 96, seed=1)
        assert joint_labels.shape == image.shape == (64, 96)
    lines = (tmp_path / "run" / "losses.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("iteration,seconds,")


@pytest.mark.parametrize("mode", [*sorted(MODES), "conditional"])  # conditional: its own label GAN
def test_resume_equals_an_uninterrupted_run(tmp_path, sections, mode):
    cfg = config(mode, iterations=4, preview_every=100)  # pools of 3 fill at iteration 2, then swap
    straight = EMTrainer(cfg, *sections, tmp_path / "straight")
    list(straight.run())
    first = EMTrainer(cfg, *sections, tmp_path / "split")
    for event in (u.payload for u in first.run()):
        if event.iteration == 2:
            first.request_stop()
    assert first.iteration == 2
    resumed = EMTrainer(cfg, *sections, tmp_path / "split", resume=True)
    assert resumed.iteration == 2 and len(resumed.pools["y"].items) == 3
    list(resumed.run())
    expected, got = weights(straight), weights(resumed)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    rows = (tmp_path / "split" / "losses.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4]


def test_cancel_saves_and_stops(tmp_path, sections):
    trainer = EMTrainer(config("sgan", iterations=50), *sections, tmp_path / "run")
    events = []
    for event in (u.payload for u in trainer.run()):
        events.append(event)
        if event.iteration == 3:
            trainer.request_stop()
    assert events[-1].finished and "stopped at iteration 3" in events[-1].message
    assert events[-1].checkpoint == trainer.state_path
    _, meta = checkpoints.load(trainer.state_path, kind="train-state")
    assert meta["iteration"] == 3
    assert load_em_model(trainer.model_path).meta["iterations"] == 3


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, sections):
    trainer = EMTrainer(config("sgan", iterations=10, checkpoint_every=2), *sections, tmp_path / "run")
    with pytest.raises(TrainingDiverged, match="non-finite loss at iteration 3.*train_state.safetensors"):
        for event in (u.payload for u in trainer.run()):
            if event.iteration == 2:
                good = checkpoints.file_sha256(trainer.model_path)
                with torch.no_grad():
                    next(trainer.models["Dx"].parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"weights became non-finite at iteration 3.*\(iteration 2\) is kept"):
        trainer.save()  # broken weights are never written
    assert checkpoints.file_sha256(trainer.model_path) == good
    load_em_model(trainer.model_path)


def test_run_folder_resume_checks_and_bad_sizes(tmp_path, sections):
    list(EMTrainer(config("joint", iterations=1), *sections, tmp_path / "run").run())
    with pytest.raises(FileExistsError, match="already holds a training run"):
        EMTrainer(config("joint", iterations=1), *sections, tmp_path / "run")
    with pytest.raises(checkpoints.CheckpointError, match="not the"):
        EMTrainer(config("joint", iterations=2, label_width=8), *sections, tmp_path / "run", resume=True)
    with pytest.raises(checkpoints.CheckpointError, match="another label_downsample"):
        EMTrainer(config("joint", iterations=2, label_downsample=1), *sections, tmp_path / "run", resume=True)
    EMTrainer(config("joint", iterations=2, batch_size=1, crop=64), *sections, tmp_path / "run", resume=True)
    images, labels = sections
    with pytest.raises(checkpoints.CheckpointError, match="other data"):
        EMTrainer(config("joint", iterations=2), images[::-1].copy(), labels[::-1].copy(), tmp_path / "run",
                  resume=True)
    with pytest.raises(ValueError, match="must be a multiple of"):
        EMTrainer(config("sgan", crop=96), *sections, tmp_path / "other")
    with pytest.raises(ValueError, match="needs inputs larger than"):
        EMTrainer(config("dsgan", label_pyramid=((3, 4, 1.0),)), *sections, tmp_path / "other")
    with pytest.raises(ValueError, match="unknown EM training mode"):
        EMTrainer(EMTrainConfig(mode="cycle", **TINY), *sections, tmp_path / "other")


def test_dsgan_starts_from_a_label_gan_and_half_model_files(tmp_path, sections):
    label_gan = EMTrainer(config("sgan", iterations=1), *sections, tmp_path / "sgan")
    list(label_gan.run())
    dsgan = EMTrainer(config("dsgan", iterations=1, init_label_gan=str(label_gan.state_path), half_model=True),
                      *sections, tmp_path / "dsgan")
    for key, value in label_gan.models["Gy"].state_dict().items():
        assert torch.equal(value, dsgan.models["Gy"].state_dict()[key]), key
    list(dsgan.run())
    tensors, meta = checkpoints.load(dsgan.model_path, kind="em-generator")
    assert meta["dtype"] == "float16" and all(t.dtype == torch.float16 for t in tensors.values())
    model = load_em_model(dsgan.model_path)
    assert next(model.image_generator.parameters()).dtype == torch.float32


def label_generator_moves(trainer) -> bool:
    before = {k: v.clone() for k, v in trainer.models["Gy"].state_dict().items()}
    trainer.step()
    return any(not torch.equal(v, trainer.models["Gy"].state_dict()[k]) for k, v in before.items())


def test_dsgan_fake_cycle_reaches_the_label_generator_only_when_asked(tmp_path, sections):
    moved = {}  # D_y's weights are 0: G_y learns only from F_y(G_x(G_y(z))) or the mode-seeking term
    for trains_gy, lambda_fake, diversity in ((True, 0.0, 0.0), (True, 1.0, 0.0), (False, 1.0, 0.0),
                                              (False, 0.0, 0.5)):
        cfg = config("dsgan", iterations=1, label_pyramid=((3, 1, 0.0), (3, 2, 0.0)), lambda_fake=lambda_fake,
                     fake_cycle_trains_gy=trains_gy, diversity_weight=diversity)
        trainer = EMTrainer(cfg, *sections, tmp_path / f"{trains_gy}{lambda_fake}{diversity}")
        moved[trains_gy, lambda_fake, diversity] = label_generator_moves(trainer)
    assert moved == {(True, 0.0, 0.0): False, (True, 1.0, 0.0): True, (False, 1.0, 0.0): False,
                     (False, 0.0, 0.5): True}


def test_dsgan_with_a_frozen_image_generator_trains_only_the_label_gan(tmp_path, sections):
    first = EMTrainer(config("dsgan", iterations=1), *sections, tmp_path / "first")
    list(first.run())
    cfg = config("dsgan", iterations=2, init_image_generator=str(first.model_path), freeze_image_generator=True)
    trainer = EMTrainer(cfg, *sections, tmp_path / "frozen")
    assert set(trainer.models) == {"Gy", "Dy", "Gx"} and set(trainer.optimizers) == {"Gy", "Dy"}
    assert label_generator_moves(trainer)
    list(trainer.run())
    saved = load_em_model(trainer.model_path).image_generator.state_dict()
    for key, value in first.models["Gx"].state_dict().items():
        assert torch.equal(value, saved[key]), key
    with pytest.raises(ValueError, match="freeze_image_generator needs"):  # nothing to start G_x from
        EMTrainer(config("dsgan", freeze_image_generator=True), *sections, tmp_path / "bad")
    with pytest.raises(checkpoints.CheckpointError, match="does not match"):
        EMTrainer(config("dsgan", image_width=8, init_image_generator=str(first.model_path)), *sections,
                  tmp_path / "wide")


def test_history_pool_and_pixel_weights(tmp_path, sections):
    pool = HistoryPool(2, np.random.default_rng(0))
    first = torch.arange(2.0).reshape(2, 1)
    assert torch.equal(pool.query(first), first) and len(pool.items) == 2
    fresh = torch.arange(10.0, 210.0).reshape(200, 1)
    out = pool.query(fresh)  # about half are swapped for an older fake
    assert 60 < int((out != fresh).sum()) < 140 and set(out.flatten().tolist()) <= set(range(210))
    trainer = EMTrainer(config("sgan", iterations=1), *sections, tmp_path / "run")
    codes = np.array([[[0, 1, 2]]], np.uint8)
    y = torch.from_numpy(em.one_hot(codes) * 2 - 1)
    assert trainer._pixel_weights(y).flatten().tolist() == [1.0, 2.0, 4.0]  # F.7: 1 + membrane + 3·mito
