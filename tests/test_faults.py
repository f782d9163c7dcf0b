"""Issue 14, faults: signals, one writer per run folder, one-step checkpoints, atomic writes, read-only
folders and full disks, and weights that break in the last step. Tiny sizes; one subprocess."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_biogans import atomic, checkpoints, cli
from napari_biogans.data import lin
from napari_biogans.data.simulator import simulate_stack
from napari_biogans.training import run_folder
from napari_biogans.training.trainer import TrainConfig, Trainer, TrainingDiverged

TINY = dict(width=4, nz=8, batch_size=2, device="cpu", log_every=1, preview_every=1000, preview_count=1)
TRAIN = ["--width", "4", "--nz", "8", "--batch-size", "2", "--device", "cpu", "--log-every", "1",
         "--objective", "lsgan"]


@pytest.fixture(scope="module")
def cells():
    return simulate_stack(n_per_class=2, proteins=["Sid2", "Tea1"], seed=1)


@pytest.fixture(scope="module")
def data(cells, tmp_path_factory):
    return lin.write_h5(cells, tmp_path_factory.mktemp("data") / "cells.h5")


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    yield


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if atomic.is_temporary(p)]


def saved_iterations(run: Path) -> tuple[int, int]:
    _, state = checkpoints.load(run / "train_state.safetensors", kind="train-state")
    _, meta = checkpoints.load_generator(run / "generator.safetensors")
    return state["iteration"], meta["iterations"]


# -- signals --------------------------------------------------------------------------------------


def test_sigterm_saves_and_repeated_interrupts_print_no_traceback(data, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "napari_biogans.cli", "train", "--data", str(data), "--out", str(run),
               "--iterations", "100000", "--checkpoint-every", "100000", *TRAIN]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(checkpoints.__file__).parents[1])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        while not (run / "losses.csv").exists():  # training has started
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.01)
        process.send_signal(signal.SIGINT)  # a second and third within a few milliseconds
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    # Python runs pending handlers lowest number first: on a busy machine SIGINT may be seen first
    first = signal.Signals(process.returncode - 128)
    assert first in (signal.SIGTERM, signal.SIGINT), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "already stopping, saving…" in err
    state, model = saved_iterations(run)
    assert state == model >= 1 and f"{first.name}: stopped at iteration {state}; saved" in out and "--resume" in out


# -- one writer -----------------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_blocks_nothing(cells, tmp_path):
    run = tmp_path / "run"
    held = run_folder.lock(run)
    config = TrainConfig(arch="dcgan", iterations=1, checkpoint_every=1, **TINY)
    with pytest.raises(run_folder.RunFolderBusy, match=rf"being trained by pid {os.getpid()} on .+ since 20\d\d-"):
        Trainer(config, cells, run)
    assert not (run / "train_state.safetensors").exists()
    held.release()
    # a holder killed with SIGKILL leaves its lock file behind, but the kernel released its flock
    (run / run_folder.LOCK_FILE).write_text("pid 999999 on elsewhere since 2020-01-01T00:00:00\n")
    trainer = Trainer(config, cells, run)
    assert str(os.getpid()) in (run / run_folder.LOCK_FILE).read_text()
    list(trainer.run())
    run_folder.lock(run).release()  # the run released it when it ended


# -- one-step checkpoints -------------------------------------------------------------------------


def test_a_checkpoint_switches_both_files_in_one_step(tmp_path, monkeypatch):
    run, names = tmp_path / "run", ("a.bin", "b.bin")

    def write(iteration):
        return lambda folder: [atomic.write_bytes(folder / name, bytes([iteration])) for name in names]

    def both(folder):
        return [(folder / name).read_bytes() for name in names]

    run_folder.commit(run, 1, names, write(1))

    def killed_at_the_switch(folder, name, target):
        raise KeyboardInterrupt  # the process dies with the new checkpoint written but not yet switched in

    with monkeypatch.context() as patch:
        patch.setattr(run_folder, "_link", killed_at_the_switch)
        with pytest.raises(KeyboardInterrupt):
            run_folder.commit(run, 2, names, write(2))
    assert both(run) == [b"\x01", b"\x01"] and not temporaries(run)
    run_folder.commit(run, 3, names, write(3))
    assert both(run) == [b"\x03", b"\x03"] and [p.name for p in (run / "checkpoints").iterdir()] == ["000000003"]


def test_a_run_folder_of_plain_files_resumes_into_one_step_checkpoints(cells, tmp_path, monkeypatch):
    config = TrainConfig(arch="dcgan", iterations=1, checkpoint_every=1, **TINY)
    monkeypatch.setattr(run_folder, "LINKS", False)  # the layout written before checkpoint folders
    list(Trainer(config, cells, tmp_path / "run").run())
    assert not (tmp_path / "run" / "generator.safetensors").is_symlink()
    monkeypatch.setattr(run_folder, "LINKS", True)
    resumed = Trainer(TrainConfig(arch="dcgan", iterations=2, checkpoint_every=1, **TINY), cells, tmp_path / "run",
                      resume=True)
    assert resumed.iteration == 1
    list(resumed.run())
    assert saved_iterations(tmp_path / "run") == (2, 2)
    assert (tmp_path / "run" / "generator.safetensors").is_symlink() and not temporaries(tmp_path / "run")


def test_a_copy_of_a_run_folder_that_followed_its_links_resumes(cells, tmp_path):
    list(Trainer(TrainConfig(arch="dcgan", iterations=1, checkpoint_every=1, **TINY), cells, tmp_path / "run").run())
    shutil.copytree(tmp_path / "run", tmp_path / "copy")  # symlinks=False: 'current' becomes a plain folder
    assert (tmp_path / "copy" / "current").is_dir() and not (tmp_path / "copy" / "current").is_symlink()
    resumed = Trainer(TrainConfig(arch="dcgan", iterations=2, checkpoint_every=1, **TINY), cells, tmp_path / "copy",
                      resume=True)
    list(resumed.run())
    assert saved_iterations(tmp_path / "copy") == (2, 2) and (tmp_path / "copy" / "current").is_symlink()
    assert saved_iterations(tmp_path / "run") == (1, 1)  # the original is untouched


# -- atomic writes ----------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic.write_text(tmp_path / "table.csv", "old")

    def half_then_fail(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        atomic.atomic_write(target, half_then_fail)
    with pytest.raises(ValueError), atomic.atomic_open(target, "w") as f:
        f.write("half")
        raise ValueError("bad row")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["table.csv"]
    names = {atomic.temporary_name(target).name for _ in range(3)}
    assert len(names) == 3 and all(atomic.is_temporary(n) for n in names)  # unique per call


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_read_only_or_full_disk_is_one_line_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch, capsys, code):
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(data), "--out", str(run), "--iterations", "1", "--checkpoint-every", "1",
                     *TRAIN]) == 0
    capsys.readouterr()
    em_model = tiny_em_model(tmp_path)
    real_replace = os.replace

    def refuse(src, dst):
        raise OSError(code, os.strerror(code), str(src))

    monkeypatch.setattr(os, "replace", refuse)  # every write ends in one of these two renames
    monkeypatch.setattr(os, "rename", refuse)
    reason = os.strerror(code).lower()
    commands = {
        run / "losses.csv": ["train", "--data", str(data), "--out", str(run), "--iterations", "2",
                                          "--checkpoint-every", "1", "--resume", *TRAIN],
        tmp_path / "cells.tif": ["sample", "--model", str(run), "--n", "2", "--out", str(tmp_path / "cells.tif")],
        tmp_path / "sim" / "LIN_Simulated_WT_size-48-80_train": ["simulate", "--out", str(tmp_path / "sim"),
                                                                "--cells-per-class", "1", "--proteins", "Tea1"],
        tmp_path / "em.labels.png": ["render-em", "--model", str(em_model), "--size", "32",
                                     "--device", "cpu", "--out", str(tmp_path / "em.png")],
    }
    for path, argv in list(commands.items())[: None if code == errno.EROFS else 1]:  # one command shows ENOSPC's line
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert err.splitlines()[-1] == f"biogans {argv[0]}: error: cannot write {path}: {reason}"
        assert "Traceback" not in err
    monkeypatch.setattr(os, "replace", real_replace)
    assert saved_iterations(run) == (1, 1) and not temporaries(tmp_path)
    assert not any(path.exists() for path in list(commands)[1:])  # no output half-written


def tiny_em_model(folder: Path) -> Path:
    from napari_biogans.models.em import CascadeGenerator, LabelGenerator

    label_generator, image_generator = LabelGenerator(width=4, n_layers=2, nz=8), CascadeGenerator(width=4, n_blocks=2)
    tensors = {f"label_generator.{k}": v for k, v in label_generator.state_dict().items()}
    tensors.update({f"image_generator.{k}": v for k, v in image_generator.state_dict().items()})
    meta = {"kind": "em-generator", "label_generator": label_generator.config,
            "image_generator": image_generator.config, "mode": "dsgan", "label_downsample": 2, "crop": 64}
    return checkpoints.save(folder / "em_model.safetensors", tensors, meta)


# -- weights that break in the last step ------------------------------------------------------------


@pytest.mark.parametrize("objective", ["wgan-gp", "lsgan"])
def test_weights_broken_by_the_last_step_name_the_saved_iteration(cells, tmp_path, objective):
    config = TrainConfig(arch="dcgan", objective=objective, iterations=2, checkpoint_every=1, **TINY)
    trainer = Trainer(config, cells, tmp_path / "run")
    step = trainer.step

    def last_step_breaks():
        losses = step()  # finite losses, then the update leaves a weight non-finite
        if trainer.iteration == 2:
            with torch.no_grad():
                next(trainer.G.parameters()).view(-1)[0] = float("nan")
        return losses

    trainer.step = last_step_breaks
    with pytest.raises(TrainingDiverged, match=r"non-finite at iteration 2.*\(iteration 1\) is kept") as err:
        list(trainer.run())
    assert ("wgan-gp objective" in str(err.value)) == (objective != "wgan-gp")
    assert saved_iterations(tmp_path / "run") == (1, 1)
    assert np.isfinite(checkpoints.load_generator(tmp_path / "run" / "generator.safetensors")[0]
                       .state_dict()[next(iter(trainer.G.state_dict()))].numpy()).all()


def test_a_widget_shows_a_write_error_or_a_busy_folder_as_one_notification(tmp_path, monkeypatch):
    from napari_biogans._widgets import _common

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    error = atomic.write_error(OSError(errno.ENOSPC, "No space left on device", "x.partial"), tmp_path / "x.tif")
    _common.report_error(error, "check the data and settings")
    assert shown[-1] == (f"napari-biogans: cannot write {tmp_path / 'x.tif'}: no space left on device — choose a "
                         "folder you can write to, or free disk space; what was saved before is kept")
    held = run_folder.lock(tmp_path)
    with pytest.raises(run_folder.RunFolderBusy) as busy:
        run_folder.lock(tmp_path)
    held.release()
    _common.report_error(busy.value, "check the data and settings")
    assert shown[-1].endswith("or choose another output folder")
