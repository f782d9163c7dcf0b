"""The Prepare cells screenshot for the README: a simulated field of view, segmented and cropped.

Needs a display: ``xvfb-run -a python docs/screenshots/make_prepare_cells_screenshot.py``. The
field is the simulator's (512 x 512 at 0.1 µm, 16-bit, seed 1, 16 cells drawn), opened as two layers as a
microscopist's red and green channels would be; settings go to a temporary file.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_screenshots import new_viewer, settle, shoot, wait_until  # noqa: E402


def main() -> None:
    from napari_biogans.data import simulator

    os.environ["BIOGANS_SETTINGS"] = str(Path(tempfile.mkdtemp()) / "settings.ini")
    from napari_biogans._widgets.prepare_cells import PrepareCellsWidget

    sim = simulator.simulate_field(seed=1, shape=(512, 512), n_cells=16)
    viewer = new_viewer()
    common = {"scale": (0.1, 0.1), "blending": "additive"}
    viewer.add_image(sim.image[0], name="field Bgs4", colormap="magenta", **common)
    viewer.add_image(sim.image[1], name="field Tea1", colormap="green", **common)
    widget = PrepareCellsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prepare cells", area="right")
    widget.protein.setText("Tea1")
    widget.run_button.click()
    wait_until(lambda: widget.worker is None and widget.result is not None)
    # the crops beside the field (they live in their own 0.2 µm frame), one accepted cell shown
    for layer in viewer.layers:
        if layer.name.startswith("prepared Tea1"):
            layer.translate = (0.0, 20.0, 53.0)
    viewer.dims.set_current_step(0, 2)
    viewer.layers.selection.active = viewer.layers["rejected cells"]
    viewer.reset_view()
    settle()
    viewer.cursor.position = (2.0, 29.0, 34.0)  # "hover" the side-by-side pair: its reason in the status bar
    viewer.update_status_from_cursor()
    shoot(viewer, "prepare_cells.png", HERE)
    viewer.close()


if __name__ == "__main__":
    main()
