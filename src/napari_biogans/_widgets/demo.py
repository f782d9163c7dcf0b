"""What ``biogans view`` opens: the sample data, then Generate cells on a fluorescence model and
Paint EM on an EM model, both already at work (cells sampled, the VNC sample rendered)."""

from __future__ import annotations


def open_demo(viewer, model: str | None = "star-6", em_model: str | None = "vnc-dsgan",
              samples=("simulated_lin", "vnc_em")) -> dict:
    """Dock the widgets on the named catalogue models (skipped, with a note, when not installed).

    Returns {"generate": widget or None, "paint_em": widget or None, "notes": [...]}.
    """
    from ..checkpoints import CheckpointError, resolve_model
    from .generate import GenerateWidget
    from .paint_em import PaintEMWidget

    for key in samples:
        viewer.open_sample("napari-biogans", key)
    opened = {"generate": None, "paint_em": None, "notes": []}

    def find(name):
        try:
            return resolve_model(name) if name else None
        except CheckpointError as err:
            opened["notes"].append(str(err))
            return None

    path = find(model)
    if path is not None:
        widget = GenerateWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Generate cells", area="right")
        widget.model.set_path(path)
        widget.run()
        opened["generate"] = widget
    path = find(em_model)
    if path is not None:
        widget = PaintEMWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Paint EM", area="right", tabify=True)
        widget.model.set_path(path)
        widget.load_vnc_sample()
        opened["paint_em"] = widget
    return opened
