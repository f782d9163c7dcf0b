"""Screenshots of the dock widgets at work, for the README: generate, cell_cycle, train, paint_em, diagnostics.

Needs a display (run under Xvfb: ``xvfb-run -a python docs/screenshots/make_screenshots.py``).
It trains a small demo model first (star-shaped WGAN-GP, width 16, about 200 iterations on
simulated cells, on the CPU, a few minutes) in a temporary folder that is not kept, unless
``--model`` points at an existing ``generator.safetensors``. Settings go to that folder too, so
the user's own napari-biogans settings are not touched. Paint EM needs an EM model (``--em-model``,
e.g. ``vnc-dsgan`` from the catalogue).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTEINS = ["Alp14", "Arp3", "Cki2", "Mkh1", "Sid2", "Tea1"]
WINDOW = (1500, 940)


def train_demo_model(folder: Path, iterations: int, width: int) -> Path:
    import torch

    from napari_biogans.data.simulator import simulate_stack
    from napari_biogans.training.trainer import TrainConfig, Trainer

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    stack = simulate_stack(n_per_class=64, proteins=PROTEINS, seed=0)
    config = TrainConfig(arch="star", objective="wgan-gp", iterations=iterations, batch_size=16, width=width,
                         device="cpu", lr=5e-4, log_every=25, preview_every=10**9, checkpoint_every=10**9)
    trainer = Trainer(config, stack, folder)
    t0 = time.perf_counter()
    for event in (u.payload for u in trainer.run()):
        if event.losses:
            print(f"  demo model: iteration {event.iteration}/{iterations} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return trainer.model_path


def wait_until(condition, timeout: float = 120.0, app=None) -> None:
    from qtpy.QtWidgets import QApplication

    app = app or QApplication.instance()
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.01)


def settle(seconds: float = 0.6) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.instance().processEvents()
        time.sleep(0.01)


def new_viewer():
    import napari

    viewer = napari.Viewer(title="napari-biogans", show=True)
    viewer.window._qt_window.resize(*WINDOW)  # the one non-public call: a fixed window size for the pictures
    return viewer


def shoot(viewer, name: str, out: Path) -> None:
    settle()
    path = out / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")


def generate_and_cell_cycle(model: Path, out: Path) -> None:
    from napari_biogans._widgets import model_picker
    from napari_biogans._widgets.cell_cycle import CYCLE, CellCycleWidget
    from napari_biogans._widgets.generate import GenerateWidget

    model_picker.model_registry.register(model)
    viewer = new_viewer()
    gen = GenerateWidget(viewer)
    dock = viewer.window.add_dock_widget(gen, name="Generate cells", area="right")
    gen.model.set_path(model)
    gen.device.combo.setCurrentText("cpu")
    gen.n_cells.setValue(16)
    gen.seed.setValue(7)
    gen.montage.setChecked(True)
    gen.columns.setValue(4)
    done = []
    gen.generated.connect(done.append)
    gen.run()
    wait_until(lambda: done)
    viewer.layers.selection.active = viewer.layers["generated montage Bgs4"]  # Bgs4 + Alp14 shown
    viewer.reset_view()
    shoot(viewer, "generate.png", out)

    # one cell cycle the widget picks itself: a short, a grown and a long cell (the default source)
    viewer.window.remove_dock_widget(dock)
    for layer in list(viewer.layers):
        if "montage" in layer.name:
            viewer.layers.remove(layer)
    cycle = CellCycleWidget(viewer)
    viewer.window.add_dock_widget(cycle, name="Cell cycle", area="right")
    cycle.device.combo.setCurrentText("cpu")
    cycle.source.setCurrentText(CYCLE)
    cycle.model.set_path(model)
    cycle.seed.setValue(0)
    cycle.frames.setValue(64)
    cycle.method.setCurrentText("slerp")
    cycle.greens.setCurrentText("greens fixed (red only)")
    finished = []
    cycle.finished.connect(finished.append)
    cycle.run()
    wait_until(lambda: finished)
    viewer.layers.selection.active = viewer.layers["cell cycle Bgs4"]  # Bgs4 + Alp14 shown
    viewer.dims.set_current_step(0, 40)
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom *= 0.85
    shoot(viewer, "cell_cycle.png", out)
    viewer.close()


def train(workdir: Path, out: Path, demo_run: Path | None, data: Path | None = None) -> None:
    """The Train widget mid-run: it resumes the demo model's run (or ``--train-run`` on its cells,
    ``data``) for 40 more iterations when there is one (loss curves from the start, previews that
    already look like cells), else starts anew."""
    from napari_biogans._widgets.train import TrainWidget

    viewer = new_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train", area="right")
    widget.device.combo.setCurrentText("cpu")
    widget.data.source.setCurrentText("simulate cells")
    widget.data.sim_seed.setValue(0)
    if demo_run is not None:
        if data is not None:  # a real run resumes on the cells it was trained on
            widget.data.source.setCurrentText("file or folder")
            widget.data.data_path.set_text(str(data))
        else:
            widget.data.sim_n.setValue(64)
            widget.data.sim_proteins.setText(", ".join(PROTEINS))
        widget.run_dir.set_text(str(demo_run))
        start = _common_card(demo_run / "train_state.safetensors")["iteration"]
        widget.iterations.setValue(start + 40)
        widget.resume()
        target = start + 25
    else:
        widget.data.sim_n.setValue(32)
        widget.data.sim_proteins.setText("Arp3, Sid2, Tea1")
        widget.arch.setCurrentText("star")
        widget.objective.setCurrentText("wgan-gp")
        widget.iterations.setValue(400)
        widget.batch.setValue(8)
        widget.width.setValue(8)
        widget.run_dir.set_text(str(workdir / "runs" / "star-w8-demo"))
        widget.start()
        target = 60
    wait_until(lambda: widget.progress.value() >= target, timeout=600)
    viewer.reset_view()
    settle(1.5)
    shoot(viewer, "train.png", out)
    widget.cancel()
    wait_until(lambda: not widget.running, timeout=60)
    viewer.close()


def paint_em(em_model: Path, out: Path) -> None:
    """Paint EM: the shipped real VNC crop beside its render, then a generated label map with a painted stroke."""
    import numpy as np

    from napari_biogans._widgets.paint_em import PaintEMWidget

    viewer = new_viewer()
    widget = PaintEMWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Paint EM", area="right")
    widget.model.set_path(em_model)
    widget.device.combo.setCurrentText("cpu")
    widget.height_box.setValue(512)
    widget.width_box.setValue(512)
    widget.seed.setValue(3)
    widget.new_map_button.click()
    wait_until(lambda: not widget.busy() and "EM render" in viewer.layers, timeout=300)
    labels = viewer.layers["EM labels"]
    # a hand-painted mitochondrion and a membrane stroke, as a user would add them
    yy, xx = np.mgrid[:512, :512]
    blob = ((yy - 150) / 28.0) ** 2 + ((xx - 360) / 45.0) ** 2 <= 1
    labels.data_setitem(np.nonzero(blob), 2)
    line = (np.abs(yy - (0.6 * xx + 180)) < 3) & (xx > 40) & (xx < 300)
    labels.data_setitem(np.nonzero(line), 1)
    settle(0.5)
    wait_until(lambda: not widget.busy(), timeout=300)
    viewer.layers.selection.active = labels
    viewer.reset_view()
    shoot(viewer, "paint_em.png", out)
    viewer.close()


def diagnostics(model: Path, workdir: Path, out: Path) -> None:
    """Diagnostics: reconstruction of simulated held-out cells, its scatter, and a short C2ST."""
    from napari_biogans._widgets.diagnostics import DiagnosticsWidget
    from napari_biogans.data.lin import write_lin_folder
    from napari_biogans.data.simulator import simulate_stack

    test = workdir / "LIN_Simulated_WT_size-48-80_test"
    write_lin_folder(simulate_stack(n_per_class=20, proteins=PROTEINS, seed=123), test)
    viewer = new_viewer()
    widget = DiagnosticsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Diagnostics", area="right")
    widget.source.setCurrentIndex(0)
    widget.data_path.set_text(str(test))
    widget.model.set_path(model)
    widget.device.combo.setCurrentText("cpu")
    widget.n_cells.setValue(32)
    widget.restarts.setValue(3)
    widget.steps.setValue(8)
    widget.run_reconstruction()
    wait_until(lambda: widget.reconstruction is not None and not widget.busy, timeout=900)
    viewer.reset_view()
    shoot(viewer, "diagnostics.png", out)
    viewer.close()


def _common_card(path: Path) -> dict:
    from napari_biogans.checkpoints import read_card

    return read_card(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="an existing generator.safetensors (skips training the demo model)")
    parser.add_argument("--iterations", type=int, default=200, help="demo model iterations")
    parser.add_argument("--width", type=int, default=16, help="demo model width")
    parser.add_argument("--out", default=str(HERE), help="where the PNGs go")
    parser.add_argument("--em-model", help="an EM model file or catalogue name for Paint EM")
    parser.add_argument("--train-run", help="train: a fluorescence run folder to resume (a copy), on --train-data")
    parser.add_argument("--train-data", help="train: the cells --train-run was trained on")
    parser.add_argument("--only", nargs="*", default=["generate", "train", "paint_em", "diagnostics"],
                        help="generate (with cell cycle), train, paint_em, diagnostics")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="biogans-screenshots-"))
    os.environ["BIOGANS_SETTINGS"] = str(workdir / "settings.ini")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        model = demo_run = None
        needs_model = {"generate", "diagnostics"} & set(args.only) or ("train" in args.only and not args.train_run)
        if args.model:
            model = Path(args.model)
            if (model.parent / "train_state.safetensors").is_file():  # a copy, so the given run stays as it is
                demo_run = Path(shutil.copytree(model.parent, workdir / model.parent.name))
                model = demo_run / model.name
        elif needs_model:
            print(f"training the demo model in {workdir} (CPU, a few minutes)…")
            model = train_demo_model(workdir / "star-sim-w16", args.iterations, args.width)
            demo_run = model.parent
        if "generate" in args.only:
            generate_and_cell_cycle(model, out)
        if "train" in args.only:
            if args.train_run:  # a copy, so the given run stays as it is
                run = Path(shutil.copytree(args.train_run, workdir / Path(args.train_run).name))
                train(workdir, out, run, Path(args.train_data))
            else:
                train(workdir, out, demo_run)
        if "diagnostics" in args.only:
            diagnostics(model, workdir, out)
        if "paint_em" in args.only and args.em_model:
            from napari_biogans.checkpoints import resolve_model

            paint_em(resolve_model(args.em_model), out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the demo model and runs are not kept
    return 0


if __name__ == "__main__":
    sys.exit(main())
