"""One progress protocol for every long job, shared by the CLI and the widgets.

A job is a generator: it yields :class:`Update` s while it works and ``return`` s its result.
The CLI drives it with :func:`run` (a terminal bar from :func:`terminal_progress`); a widget
starts it with ``_widgets.workers.start_job`` (napari's generator worker, a bar in the activity
dock). A job that must save before it stops (training) takes a :class:`StopFlag` and checks it;
any other job is cancelled at its next yield. No job starts a thread of its own to report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Update:
    """A job's report: ``done`` of ``total`` steps (``total`` 0: unknown) in ``stage``, with an
    optional typed ``payload`` (a training event, a preview, a finished row)."""

    done: int = 0
    total: int = 0
    stage: str = ""
    payload: Any = None


Job = Generator[Update, None, Any]


class StopFlag:
    """Asked from any thread, read by the job at its next step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def stop_on_signals(stop: StopFlag):
    """Within the block, Ctrl-C, SIGTERM and SIGHUP set ``stop`` (the job saves and returns at its next
    step) instead of killing the process; a repeated one only says so. Yields a list that holds the
    first signal's number once one came. Outside the main thread (a widget's worker) it does nothing."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame) -> None:
        if received:
            # os.write, not print: a handler that prints while the main code prints to the same buffered
            # stream raises "reentrant call", the traceback this handler exists to prevent
            os.write(2, "\nalready stopping, saving…\n".encode())
            return
        received.append(signum)
        stop.set()
        os.write(2, f"\n{signal.Signals(signum).name}: stopping at the next iteration, saving…\n".encode())

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            if old is not None:  # None: a handler installed outside Python, which cannot be put back
                signal.signal(signum, old)


def run(job: Job, on_update: Callable[[Update], None] | None = None):
    """Drive ``job`` to its end and return its result."""
    while True:
        try:
            update = next(job)
        except StopIteration as stop:
            return stop.value
        if on_update is not None:
            on_update(update)


def within(job: Job, before: int, total: int, stage: str | None = None) -> Job:
    """``yield from within(inner, before, total)``: the inner job's steps count from ``before`` of
    ``total`` in the outer job's progress; returns the inner job's result."""
    while True:
        try:
            update = next(job)
        except StopIteration as stop:
            return stop.value
        yield replace(update, done=before + update.done, total=total, stage=stage or update.stage)


def terminal_progress(quiet: bool = False) -> tuple[Callable[[Update], None], Callable[[], None]]:
    """``(on_update, close)``: a tqdm bar on stderr that follows the updates (a new bar per stage)."""
    from tqdm import tqdm

    state: dict = {"bar": None, "stage": None}

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    def on_update(update: Update) -> None:
        if quiet:
            return
        if state["bar"] is None or update.stage != state["stage"]:
            close()
            state["bar"] = tqdm(total=update.total or None, desc=update.stage or None, unit="step")
            state["stage"] = update.stage
        bar = state["bar"]
        if update.total and bar.total != update.total:
            bar.total = update.total
        bar.update(update.done - bar.n)

    return on_update, close
