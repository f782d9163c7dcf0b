"""The one way a widget starts a core job (see ``napari_biogans.jobs``): napari's generator
worker, a bar in napari's activity dock that follows the job's :class:`~napari_biogans.jobs.Update` s,
``worker.quit()`` to cancel at the next yield, errors handed to ``on_error`` on the GUI thread."""

from __future__ import annotations

from collections.abc import Callable

from ..jobs import Update


def start_job(job, *args, what: str, on_update: Callable[[Update], None] | None = None,
              on_done: Callable | None = None, on_error: Callable[[BaseException], None] | None = None,
              on_finished: Callable[[], None] | None = None, **kwargs):
    """Start ``job(*args, **kwargs)`` (a generator of Updates) in a worker and return the worker.

    Callbacks run on the GUI thread: ``on_update`` per update (after the bar has moved),
    ``on_done`` with the job's result, ``on_error`` with an exception, ``on_finished`` always last.
    """
    from napari.qt.threading import create_worker
    from napari.utils import progress

    # with on_error the error is handled; without _ignore_errors superqt would also re-raise it on the GUI thread
    worker = create_worker(job, *args, _start_thread=False, _ignore_errors=on_error is not None, **kwargs)
    bar = progress(total=0, desc=what)
    state = {"stage": None}

    def moved(update: Update) -> None:
        if not isinstance(update, Update):
            return
        if update.total and bar.total != update.total:
            bar.total = update.total
        if update.stage and update.stage != state["stage"]:
            state["stage"] = update.stage
            bar.set_description(f"{what}: {update.stage}")
        if update.done != bar.n:
            bar.update(update.done - bar.n)
        if on_update is not None:
            on_update(update)

    worker.yielded.connect(moved)
    if on_done is not None:
        worker.returned.connect(on_done)
    if on_error is not None:
        worker.errored.connect(on_error)
    worker.finished.connect(bar.close)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker
