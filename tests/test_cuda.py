"""The CUDA code paths, run on a GPU: bf16 autocast + TF32, channels-last, fused Adam, the compiled
generator, grouped C2ST critics, an NCCL process group, out-of-memory reporting and freeing GPU
memory after a run. Each trains a few iterations, checkpoints and resumes on the GPU, and is compared
with the CPU where the two must agree (the same weights and codes give the same pixels).

Marked ``cuda`` and left out of the default run (pyproject's addopts); ``scripts/gpu/check.sh``
runs them on a GPU machine. ``BIOGANS_TEST_DEVICE=cpu python -m pytest -m cuda tests/test_cuda.py``
runs the same tests on the CPU, to check the tests themselves without a GPU.
"""

import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_biogans import checkpoints
from napari_biogans.data import em
from napari_biogans.data.simulator import simulate_stack
from napari_biogans.models.em_inference import load_em_model
from napari_biogans.rendering import render
from napari_biogans.training.em_trainer import EMTrainConfig, EMTrainer
from napari_biogans.training.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.cuda
DEVICE = os.environ.get("BIOGANS_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
if DEVICE is None:
    pytestmark = [pytest.mark.cuda, pytest.mark.skip(reason="no CUDA GPU (set BIOGANS_TEST_DEVICE=cpu to "
                                                            "check these tests on the CPU)")]
FIXTURE = Path(__file__).parent / "fixtures" / "vnc" / "stack1"
SMALL = dict(width=8, batch_size=8, log_every=1, preview_every=100, preview_count=2)


@pytest.fixture(scope="module")
def cells():
    return simulate_stack(n_per_class=8, proteins=["Cki2", "Sid2", "Tea1"], seed=3)


def trained(tmp_path, cells, name, iterations, resume=False, **kwargs):
    config = TrainConfig(arch="star", objective="wgan-gp", iterations=iterations, device=DEVICE,
                         checkpoint_every=2, **{**SMALL, **kwargs})
    trainer = Trainer(config, cells, tmp_path / name, resume=resume)
    events = [u.payload for u in trainer.run()]
    assert events[-1].finished, events[-1].message
    assert all(math.isfinite(v) for e in events for v in e.losses.values())
    return trainer


def outputs(generator, z):
    with torch.no_grad():
        return generator(z.to(next(generator.parameters()).device)).float().cpu()


@pytest.mark.parametrize("variant", [
    {"amp": True},  # bf16 autocast, TF32, channels-last, fused Adam
    {"amp": False},  # fp32, channels-last, fused Adam
    {"amp": True, "compile": True},  # the compiled generator
])
def test_training_paths_checkpoint_resume_and_agree_with_the_cpu(tmp_path, cells, variant):
    straight = trained(tmp_path, cells, "straight", 4, **variant)
    device = straight.device
    if device.type == "cuda":
        for name, model in straight.models.items():  # the compiled G stays contiguous (see Trainer)
            conv = next(p for p in model.parameters() if p.dim() == 4 and p.shape[-1] > 1)
            layout = torch.contiguous_format if name == "G" and variant.get("compile") else torch.channels_last
            assert conv.is_contiguous(memory_format=layout), name
        assert all(opt.defaults.get("fused") for opt in straight.optimizers.values())
        assert straight.amp == variant["amp"]
        if variant["amp"]:
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32

    trained(tmp_path, cells, "split", 2, **variant)  # stops at 2 with a checkpoint ...
    resumed = trained(tmp_path, cells, "split", 4, resume=True, **variant)  # ... and goes on to 4
    assert resumed.iteration == 4
    z = torch.randn(6, straight.G.nz, generator=torch.Generator().manual_seed(0))
    # the same run resumed: equal up to the GPU's non-deterministic reductions
    assert torch.allclose(outputs(straight.G, z), outputs(resumed.G, z), atol=2e-2)

    # the checkpoint written on the GPU loads on the CPU and renders the same pixels
    on_cpu, meta = checkpoints.load_generator(tmp_path / "straight" / "generator.safetensors", device="cpu")
    assert meta["iterations"] == 4 and meta["device"].startswith(str(device.type))
    straight.G.eval()
    assert torch.allclose(outputs(on_cpu, z), outputs(straight.G, z), atol=2e-2)


def test_shipped_generator_samples_the_same_on_the_gpu_as_on_the_cpu():
    from napari_biogans.sampling import render

    on_cpu, _ = checkpoints.load_generator(checkpoints.resolve_model("star-6"), device="cpu")
    on_device, _ = checkpoints.load_generator(checkpoints.resolve_model("star-6"), device=DEVICE)
    z = np.random.default_rng(0).standard_normal((32, on_cpu.nz)).astype(np.float32)
    a, b = render(on_cpu, z), render(on_device, z)
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-2


def test_em_training_on_the_device_resumes_and_renders_like_the_cpu(tmp_path):
    sections = em.read_sections(FIXTURE, [0, 1])
    tiny = dict(mode="dsgan", label_width=4, image_width=4, label_d_width=4, image_d_width=4, reconstructor_width=4,
                reconstructor_depth=4, crop=128, device=DEVICE, log_every=1, preview_every=100, checkpoint_every=2,
                batch_size=2, pool_size=3, label_pyramid=((3, 1, 0.5), (3, 2, 0.5)))
    first = EMTrainer(EMTrainConfig(iterations=2, **tiny), *sections, tmp_path / "run")
    list(first.run())
    resumed = EMTrainer(EMTrainConfig(iterations=4, **tiny), *sections, tmp_path / "run", resume=True)
    events = [u.payload for u in resumed.run()]
    assert resumed.iteration == 4 and events[-1].finished
    assert all(math.isfinite(v) for e in events for v in e.losses.values())

    model_file = resumed.model_path
    labels = sections[1][0][:128, :128]
    on_cpu = render(load_em_model(model_file, device="cpu").image_generator, labels, noise_seed=1, device="cpu")
    on_device = render(load_em_model(model_file, device=DEVICE).image_generator, labels, noise_seed=1,
                       device=DEVICE)  # channels-last, as Paint EM renders
    assert on_cpu.shape == on_device.shape == labels.shape
    assert np.abs(on_cpu.astype(int) - on_device.astype(int)).max() <= 3  # uint8 levels


def test_grouped_c2st_critics_agree_with_the_cpu_and_train():
    from napari_biogans.evaluation import c2st
    from napari_biogans.jobs import run

    torch.manual_seed(0)
    critic = c2st.GroupedCritic(groups=4, width=8)
    x = torch.randn(5, 4 * 2, 48, 80)
    expected = critic(x)
    on_device = critic.to(DEVICE, memory_format=torch.channels_last)
    got = on_device(x.to(DEVICE, memory_format=torch.channels_last)).cpu()
    assert torch.allclose(expected, got, atol=1e-3, rtol=1e-3)

    # the grouped critics' whole loop (train, score) on the device: 2 splits x 2 x 2 proteins = 8 critics
    train = simulate_stack(n_per_class=16, proteins=["Cki2", "Sid2"], seed=1)
    test = simulate_stack(n_per_class=16, proteins=["Cki2", "Sid2"], seed=2)
    scores = run(c2st.real_vs_real(train, test, ["Cki2", "Sid2"], n_splits=2, device=DEVICE, steps=3, width=8,
                                   batch_size=8), lambda update: None)
    assert scores.shape == (2, 2, 2) and np.isfinite(scores).all()


def test_out_of_gpu_memory_is_one_clear_line_and_keeps_the_saved_checkpoint(tmp_path, cells, capsys, monkeypatch):
    from napari_biogans import cli
    from napari_biogans.data.lin import write_h5

    data = tmp_path / "cells.h5"
    write_h5(cells, data)
    real_step = Trainer.step

    def step(self):
        if self.iteration == 3:  # after the checkpoint at iteration 2
            if self.device.type == "cuda":
                torch.empty(torch.cuda.get_device_properties(self.device).total_memory * 2, dtype=torch.uint8,
                            device=self.device)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", step)
    code = cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--device", DEVICE,
                     "--model", "star", "--width", "8", "--batch-size", "8", "--iterations", "10",
                     "--checkpoint-every", "2", "--log-every", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]  # stderr also holds the progress bar
    assert code != 0 and "Traceback" not in err
    assert len(errors) == 1 and "ran out of memory" in errors[0] and "--batch-size" in errors[0], errors
    generator, meta = checkpoints.load_generator(tmp_path / "run" / "generator.safetensors")
    assert meta["iterations"] == 2


def test_a_finished_training_job_frees_the_gpu_memory(tmp_path):
    from napari_biogans.jobs import StopFlag, run
    from napari_biogans.training.session import train_job

    if DEVICE == "cpu":
        pytest.skip("GPU memory only")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    config = TrainConfig(arch="star", objective="wgan-gp", iterations=3, device=DEVICE, checkpoint_every=3,
                         **{**SMALL, "width": 32, "batch_size": 32})
    result = run(train_job(config, ("simulate", 8, ["Cki2", "Sid2"], 1), tmp_path / "run", False, StopFlag()),
                 lambda update: None)
    assert result.iteration == 3
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - before < 1 << 20  # under 1 MiB left behind


def test_training_in_an_nccl_process_group(tmp_path, cells):
    import torch.distributed as dist

    backend = "nccl" if str(DEVICE).startswith("cuda") else "gloo"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        trainer = trained(tmp_path, cells, "ranked", 2)
        assert dist.get_backend() == backend and trainer.iteration == 2
    finally:
        dist.destroy_process_group()
