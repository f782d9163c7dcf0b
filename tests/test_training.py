"""The one training loop: every model trains, resumes exactly, stops cleanly and keeps good checkpoints."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_biogans import checkpoints
from napari_biogans.data.simulator import simulate_stack
from napari_biogans.jobs import StopFlag
from napari_biogans.training.trainer import TrainConfig, Trainer, TrainingDiverged

TINY = dict(width=4, batch_size=4, device="cpu", log_every=1, preview_every=2, preview_count=2)


@pytest.fixture(scope="module")
def cells():
    return simulate_stack(n_per_class=8, proteins=["Cki2", "Sid2", "Tea1"], seed=3)


def weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("arch", ["dcgan", "separable", "one-class", "star", "multichannel"])
def test_every_model_trains_and_saves(tmp_path, cells, arch, monkeypatch):
    monkeypatch.setenv("BIOGANS_CACHE", str(tmp_path / "cache"))
    nz = 60 if arch == "multichannel" else 100
    config = TrainConfig(arch=arch, objective="wgan-gp", iterations=2, nz=nz, checkpoint_every=2, **TINY)
    trainer = Trainer(config, cells, tmp_path / "run")
    before = weights(trainer.G)
    events = [u.payload for u in trainer.run()]
    assert [e.iteration for e in events] == [1, 2, 2]
    assert events[-1].finished and "finished at iteration 2" in events[-1].message
    assert all(math.isfinite(v) for v in events[0].losses.values())
    n_classes = 1 if arch in ("dcgan", "separable") else 3
    assert events[1].preview.shape == (2, n_classes, 2, 48, 80)
    assert any(not torch.equal(before[k], v) for k, v in trainer.G.state_dict().items())
    generator, meta = checkpoints.load_generator(tmp_path / "run" / "generator.safetensors")
    assert meta["iterations"] == 2 and meta["data"]["simulated"] is True
    assert generator.config == trainer.G.config
    lines = (tmp_path / "run" / "losses.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("iteration,seconds,")


@pytest.mark.parametrize("objective", ["gan", "wgan", "lsgan", "hinge"])
def test_every_objective_trains(tmp_path, cells, objective, monkeypatch):
    from dataclasses import replace

    from napari_biogans.training import objectives

    # WGAN's 100-step critic warm-up is test_objectives' schedule test; here 3 steps show it runs
    monkeypatch.setitem(objectives.OBJECTIVES, "wgan", replace(objectives.OBJECTIVES["wgan"], warmup_steps=3))
    config = TrainConfig(arch="star", objective=objective, iterations=2, checkpoint_every=10, **TINY)
    events = [u.payload for u in Trainer(config, cells, tmp_path / "run").run()]
    assert events[-1].finished and all(math.isfinite(v) for v in events[0].losses.values())


def test_resume_equals_an_uninterrupted_run(tmp_path, cells):
    config = TrainConfig(arch="star", objective="wgan-gp", iterations=4, checkpoint_every=100, **TINY)
    straight = Trainer(config, cells, tmp_path / "straight")
    list(straight.run())

    first = Trainer(config, cells, tmp_path / "split")
    for event in (u.payload for u in first.run()):
        if event.iteration == 2:
            first.request_stop()
    assert first.iteration == 2
    resumed = Trainer(config, cells, tmp_path / "split", resume=True)
    assert resumed.iteration == 2
    list(resumed.run())
    for key, value in straight.G.state_dict().items():
        assert torch.equal(value, resumed.G.state_dict()[key]), key
    for key, value in straight.D.state_dict().items():
        assert torch.equal(value, resumed.D.state_dict()[key]), key
    rows = (tmp_path / "split" / "losses.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4]


def test_cancel_saves_and_stops(tmp_path, cells):
    config = TrainConfig(arch="separable", objective="wgan-gp", iterations=50, checkpoint_every=100, **TINY)
    trainer = Trainer(config, cells, tmp_path / "run")
    events, stop = [], StopFlag()  # what Cancel in the Train widget sets, from the GUI thread
    for update in trainer.run(stop):
        events.append(update.payload)
        assert (update.done, update.total, update.stage) == (update.payload.iteration, 50, "training")
        if update.done == 3:
            stop.set()
    assert events[-1].finished and "stopped at iteration 3" in events[-1].message
    _, meta = checkpoints.load(tmp_path / "run" / "train_state.safetensors", kind="train-state")
    assert meta["iteration"] == 3


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, cells):
    config = TrainConfig(arch="dcgan", objective="wgan-gp", iterations=10, checkpoint_every=2, **TINY)
    trainer = Trainer(config, cells, tmp_path / "run")
    with pytest.raises(TrainingDiverged, match="non-finite loss at iteration 3.*train_state.safetensors"):
        for event in (u.payload for u in trainer.run()):
            if event.iteration == 2:
                good = checkpoints.file_sha256(trainer.model_path)
                with torch.no_grad():
                    next(trainer.D.parameters()).fill_(float("nan"))
    assert checkpoints.file_sha256(trainer.model_path) == good
    checkpoints.load_generator(trainer.model_path)  # still loads


def test_resumed_ranks_draw_their_own_batches(tmp_path, cells, monkeypatch):
    from napari_biogans.training import distributed

    config = TrainConfig(arch="star", objective="wgan-gp", iterations=2, checkpoint_every=100, **TINY)
    list(Trainer(config, cells, tmp_path / "run").run())
    rank0 = Trainer(config, cells, tmp_path / "run", resume=True).rng.get_state()
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (1, 2))
    rank1 = Trainer(config, cells, tmp_path / "run", resume=True).rng.get_state()
    again = Trainer(config, cells, tmp_path / "run", resume=True).rng.get_state()
    assert not torch.equal(rank0, rank1) and torch.equal(rank1, again)


def test_a_run_folder_written_before_the_models_dict_still_resumes_exactly(tmp_path, cells):
    config = TrainConfig(arch="star", objective="wgan-gp", iterations=3, checkpoint_every=100, **TINY)
    straight = Trainer(config, cells, tmp_path / "straight")
    list(straight.run())
    first = Trainer(config, cells, tmp_path / "old")
    for update in first.run():
        if update.done == 1:
            first.request_stop()
    tensors, meta = checkpoints.load(first.state_path, kind="train-state")
    del meta["configs"]  # older train states named only generator_config and critic_config
    checkpoints.save(first.state_path, tensors, meta)
    resumed = Trainer(config, cells, tmp_path / "old", resume=True)
    assert resumed.iteration == 1
    list(resumed.run())
    for key, value in straight.G.state_dict().items():
        assert torch.equal(value, resumed.G.state_dict()[key]), key


def test_run_folder_is_not_overwritten_and_resume_checks_architecture(tmp_path, cells):
    config = TrainConfig(arch="star", iterations=1, checkpoint_every=1, **TINY)
    list(Trainer(config, cells, tmp_path / "run").run())
    with pytest.raises(FileExistsError, match="already holds a training run"):
        Trainer(config, cells, tmp_path / "run")
    other = TrainConfig(arch="star", iterations=2, checkpoint_every=1, **{**TINY, "width": 8})
    with pytest.raises(checkpoints.CheckpointError, match="not the"):
        Trainer(other, cells, tmp_path / "run", resume=True)
    with pytest.raises(checkpoints.CheckpointError, match="other data"):
        Trainer(config, cells.subset(np.arange(20)), tmp_path / "run", resume=True)


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    from napari_biogans.models import make_models

    G, _ = make_models("star", n_classes=2, width=4, critic_bn=False)
    G.eval()
    path = checkpoints.save_generator(tmp_path / "g.safetensors", G, {"class_names": ["A", "B"]})
    loaded, meta = checkpoints.load_generator(path)
    for key, value in G.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    z = torch.randn(3, G.nz)
    with torch.no_grad():
        assert torch.equal(G(z), loaded(z))
    assert meta["class_names"] == ["A", "B"] and meta["versions"]["torch"] == torch.__version__
    half = checkpoints.save_generator(tmp_path / "h.safetensors", G, {"class_names": ["A", "B"]}, half=True)
    assert half.stat().st_size < path.stat().st_size * 0.6
    loaded_half, _ = checkpoints.load_generator(half)
    with torch.no_grad():
        assert torch.allclose(G(z), loaded_half(z), atol=2e-2)
    # readable like any file the user writes (their umask), not private like safetensors' save_file makes it
    (tmp_path / "plain").write_bytes(b"")
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def test_bad_checkpoints_give_clear_errors(tmp_path):
    from safetensors.torch import save_file

    from napari_biogans.models import make_models

    G, _ = make_models("star", n_classes=2, width=4, critic_bn=False)
    path = checkpoints.save_generator(tmp_path / "g.safetensors", G, {"class_names": ["A", "B"]})
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoints.CheckpointError, match="cut.safetensors: not a readable checkpoint"):
        checkpoints.load_generator(tmp_path / "cut.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(checkpoints.CheckpointError, match="not a napari-biogans checkpoint"):
        checkpoints.load_generator(tmp_path / "foreign.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(checkpoints.CheckpointError, match="not a readable checkpoint"):
        checkpoints.load_generator(tmp_path / "text.safetensors")
    other, _ = make_models("star", n_classes=3, width=4, critic_bn=False)
    with pytest.raises(checkpoints.CheckpointError, match="do not fit this architecture"):
        checkpoints.load_module_state(other, checkpoints.load(path)[0], path)
    with pytest.raises(checkpoints.CheckpointError, match="expected 'train-state'"):
        checkpoints.load(path, kind="train-state")
    with pytest.raises(checkpoints.CheckpointError, match="unknown model 'nope'"):
        checkpoints.resolve_model("nope")


def test_models_env_extends_the_catalogue(tmp_path, monkeypatch):
    from napari_biogans.models import make_models

    G, _ = make_models("separable", n_classes=1, width=4, critic_bn=False)
    checkpoints.save_generator(tmp_path / "mine.safetensors", G, {"class_names": ["any protein"]})
    monkeypatch.setenv("BIOGANS_MODELS", str(tmp_path))
    assert checkpoints.resolve_model("mine") == tmp_path / "mine.safetensors"


def test_data_parallel_gradients_match_one_process():
    """Two gloo processes on half batches average to the one-process critic gradient."""
    import torch.multiprocessing as mp

    from napari_biogans.models import make_models
    from napari_biogans.training.objectives import get_objective

    torch.manual_seed(5)
    real, fake = torch.rand(8, 2, 2, 48, 80) * 2 - 1, torch.rand(8, 2, 2, 48, 80) * 2 - 1
    torch.manual_seed(0)
    _, D = make_models("star", n_classes=2, width=4, critic_bn=False)
    loss, _ = get_objective("wgan").critic_loss(D, real, fake)
    loss.backward()
    expected = {k: p.grad.clone() for k, p in D.named_parameters()}

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    procs = [ctx.Process(target=_ddp_worker_wgan, args=(r, 2, port, real, fake, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for key, grad in expected.items():
        torch.testing.assert_close(torch.from_numpy(got[key]), grad, rtol=1e-4, atol=1e-6)


def _ddp_worker_wgan(rank, world, port, real, fake, queue):
    import torch.distributed as dist

    from napari_biogans.models import make_models
    from napari_biogans.training.objectives import get_objective
    from napari_biogans.training.distributed import average_gradients

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    _, D = make_models("star", n_classes=2, width=4, critic_bn=False)
    half = len(real) // world
    loss, _ = get_objective("wgan").critic_loss(D, real[rank * half : (rank + 1) * half], fake[rank * half : (rank + 1) * half])
    loss.backward()
    average_gradients(D.parameters(), world)
    if rank == 0:
        # numpy pickles by value; a tensor would travel as a shared-memory handle that dies with this process
        queue.put({k: p.grad.numpy().copy() for k, p in D.named_parameters()})
    dist.destroy_process_group()


def test_torchrun_trains_with_two_processes(tmp_path, cells):
    """Two ranks train, rank 0 saves a model that names both, and a time limit stops both ranks at the
    same iteration (rank 0's clock decides), saved and resumable."""
    from napari_biogans.data import lin

    data = lin.write_h5(cells, tmp_path / "cells.h5")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
        str(30500 + os.getpid() % 1000), "-m", "napari_biogans.cli", "train", "--data", str(data),
        "--model", "star", "--iterations", "100000", "--batch-size", "4", "--width", "4", "--device", "cpu",
        "--out", str(tmp_path / "run"), "--time-limit", "0.002", "--log-every", "1",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    _, meta = checkpoints.load_generator(tmp_path / "run" / "generator.safetensors")
    assert 1 <= meta["iterations"] < 100000 and meta["device"].endswith("x2")
    assert "stopped at iteration" in result.stdout
    state, _ = checkpoints.load(tmp_path / "run" / "train_state.safetensors")
    assert state  # the training state beside it, for --resume


EM_RANKS_SCRIPT = """
import sys
import torch, torch.distributed as dist
from napari_biogans.training.distributed import run_in_process_group
from napari_biogans.data import em
from napari_biogans.training.em_trainer import EMTrainConfig, EMTrainer


def body():
    images, labels = em.read_sections(sys.argv[1], [0, 1])
    config = EMTrainConfig(mode="dsgan", iterations=2, batch_size=1, crop=128, label_width=4, image_width=4,
                           label_d_width=4, image_d_width=4, reconstructor_width=4, device="cpu")
    trainer = EMTrainer(config, images, labels, sys.argv[2])
    list(trainer.run())
    flat = torch.cat([p.detach().flatten() for m in trainer.models.values() for p in m.parameters()])
    crop = trainer._crops(128)[1].flatten()
    both = [torch.zeros_like(flat) for _ in range(2)], [torch.zeros_like(crop) for _ in range(2)]
    dist.all_gather(both[0], flat)
    dist.all_gather(both[1], crop)
    if dist.get_rank() == 0:
        print("weights equal", torch.equal(*both[0]), "crops equal", torch.equal(*both[1]))
    return 0


run_in_process_group("cpu", body)
"""


def test_em_ranks_draw_their_own_crops_and_keep_equal_weights(tmp_path):
    """DSGAN under torchrun: the two processes see different crops, yet averaged gradients keep
    every model identical on both, and rank 0 writes a model marked x2."""
    from napari_biogans.models.em_inference import load_em_model

    script = tmp_path / "ranks.py"
    script.write_text(EM_RANKS_SCRIPT)
    fixture = Path(__file__).parent / "fixtures" / "vnc" / "stack1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(31500 + os.getpid() % 1000), str(script), str(fixture), str(tmp_path / "run")]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "weights equal True crops equal False" in result.stdout
    model = load_em_model(tmp_path / "run" / "em_model.safetensors", device="cpu")
    assert model.meta["iterations"] == 2 and model.meta["device"].endswith("x2")


def test_objective_check_prints_the_output_statistics_beside_the_real_cells(tmp_path, cells, capsys):
    import importlib.util

    from napari_biogans.data import lin

    data = lin.write_h5(cells, tmp_path / "cells.h5")
    script = Path(__file__).parent.parent / "scripts" / "objective_check.py"
    spec = importlib.util.spec_from_file_location("objective_check", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # in-process: the script's own main(), without a second torch start-up
    module.main(["--data", str(data), "--model", "projection", "--objective", "wgan-gp", "--iterations", "2",
                 "--every", "1", "--width", "4", "--batch-size", "4"])
    stdout = capsys.readouterr().out
    real = cells.as_float()
    assert f"real cells: mean {real.mean():.3f} std {real.std():.3f}" in stdout
    rows = [line.split() for line in stdout.splitlines() if "output mean" in line]
    assert [int(row[0]) for row in rows] == [1, 2]


def test_train_says_what_a_run_will_cost_before_it_starts(tmp_path, cells, capsys):
    """The honest default: the estimate (speed, total time, state size) comes before training; at a width
    that is impractical on a CPU, with the cheaper setting to try."""
    from napari_biogans import cli
    from napari_biogans.data import lin

    data = lin.write_h5(cells, tmp_path / "cells.h5")
    base = ["train", "--data", str(data), "--iterations", "1", "--batch-size", "2", "--device", "cpu"]
    assert cli.main([*base, "--width", "48", "--out", str(tmp_path / "wide")]) == 0
    out = capsys.readouterr().out
    estimate = next(line for line in out.splitlines() if line.startswith("estimate:"))
    assert out.index("estimate:") < out.index("finished at iteration 1")
    assert "per iteration on cpu" in estimate and "training state ≈" in estimate and "MB" in estimate
    assert "try --width 16 --batch-size 16 --lr 0.001" in estimate and "50,000 iterations ≈" in estimate
    assert cli.main([*base, "--width", "4", "--out", str(tmp_path / "narrow")]) == 0
    estimate = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("estimate:"))
    assert "per iteration on cpu" in estimate and "try --width" not in estimate


def test_the_state_size_estimate_is_the_size_written(tmp_path, cells):
    from napari_biogans.training import estimate

    config = TrainConfig(arch="star", iterations=1, checkpoint_every=1, **TINY)
    trainer = Trainer(config, cells, tmp_path / "run")
    list(trainer.run())
    found = estimate.fluorescence(config, 3, cells.image_size, measure=False)
    assert found.seconds_per_iteration is None
    assert found.state_bytes == pytest.approx(trainer.state_path.stat().st_size, rel=0.05)
    assert found.model_bytes == pytest.approx(trainer.model_path.stat().st_size, rel=0.1)


def test_restored_adam_moments_keep_their_parameters_memory_layout():
    """Fused Adam on CUDA refuses moments whose layout differs from the parameter's (channels-last convs)."""
    from napari_biogans.training.loop import optimizer_state, restore_optimizer

    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(conv.parameters())
    conv(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    tensors, saved = optimizer_state("opt", optimizer)
    restored = torch.optim.Adam(conv.parameters())
    restore_optimizer("opt", restored, {k: v.contiguous() for k, v in tensors.items()}, saved)
    moment = restored.state[conv.weight]["exp_avg"]
    assert moment.stride() == conv.weight.stride() and torch.equal(moment, optimizer.state[conv.weight]["exp_avg"])


def test_kept_model_files_are_the_checkpoints_of_their_iterations(tmp_path, cells):
    config = TrainConfig(arch="one-class", objective="wgan-gp", iterations=3, checkpoint_every=1, keep_models_every=2,
                         **TINY)
    for _ in Trainer(config, cells.select_classes(["Tea1"]), tmp_path / "run").run():
        pass
    kept = sorted(p.name for p in (tmp_path / "run" / "models").iterdir())
    assert kept == ["generator-000000002.safetensors"]  # iterations 1 and 3 are checkpoints only
    assert (tmp_path / "run" / "models" / kept[0]).read_bytes() != (tmp_path / "run" / "generator.safetensors").read_bytes()
    _, meta = checkpoints.load(checkpoints.resolve_model(tmp_path / "run" / "models" / kept[0]))
    assert meta["iterations"] == 2
    with pytest.raises(ValueError, match="not a multiple of checkpoint-every"):
        Trainer(TrainConfig(arch="one-class", iterations=4, checkpoint_every=3, keep_models_every=2, **TINY),
                cells, tmp_path / "other")
