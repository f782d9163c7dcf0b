"""How free napari's GUI thread stays while the Train widget trains, and how soon Cancel returns.

    xvfb-run -a python benchmarks/bench_train_gui.py             # star, width 4, batch 4, CPU
    xvfb-run -a python benchmarks/bench_train_gui.py --width 16 --batch-size 16

A 20 ms QTimer ticks on the GUI thread while a run trains; the gaps between ticks say how long
the GUI was busy (training on the GUI thread would stop the ticks for the whole run). Then
Cancel is pressed and the time until the run has saved and stopped is measured. This was a
timed assertion in tests/test_widgets_train.py; timings belong here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to watch the ticks")
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_biogans._widgets.train import TrainWidget

    def wait(condition, timeout: float) -> None:
        end = time.perf_counter() + timeout
        while not condition():
            if time.perf_counter() > end:
                raise TimeoutError("the run did not get there in time")
            QApplication.processEvents()
            time.sleep(0.005)

    with tempfile.TemporaryDirectory() as folder:
        viewer = napari.Viewer(show=True)
        widget = TrainWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Train")
        widget.data.source.setCurrentText("simulate cells")
        widget.data.sim_n.setValue(8)
        widget.data.sim_proteins.setText("Tea1, Sid2")
        widget.arch.setCurrentText("star")
        widget.iterations.setValue(1_000_000)
        widget.batch.setValue(args.batch_size)
        widget.width.setValue(args.width)
        widget.device.combo.setCurrentText("cpu")
        widget.run_dir.set_text(str(Path(folder) / "run"))
        widget.start_button.click()
        wait(lambda: widget.progress.value() >= 2 and TrainWidget.PREVIEW_LAYER in viewer.layers, 300)

        ticks = []
        timer = QTimer()
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start(20)
        end = time.perf_counter() + args.seconds
        wait(lambda: time.perf_counter() > end, args.seconds + 10)
        timer.stop()
        gaps = np.diff(ticks) * 1000

        t0 = time.perf_counter()
        widget.cancel_button.click()
        wait(lambda: not widget.running, 300)
        cancel = time.perf_counter() - t0
        print(f"width {args.width}, batch {args.batch_size}: {widget.last_result.iteration} iterations")
        print("| GUI tick gap (20 ms timer) | median | 90th percentile | largest | Cancel → saved and stopped |")
        print("|---|---:|---:|---:|---:|")
        print(f"| ms | {np.median(gaps):.0f} | {np.percentile(gaps, 90):.0f} | {gaps.max():.0f} | {cancel * 1000:.0f} |")
        viewer.close()


if __name__ == "__main__":
    main()
