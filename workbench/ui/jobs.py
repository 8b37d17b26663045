"""Long jobs of the app: a worker thread that never calls st.*, polled by a fragment until it finishes.

A job lives in the session state under its key, so it keeps running while the user
visits other pages, and its result stays there afterwards: widget changes read it
instead of running it again. Model use is serialised with `MODEL_LOCK`. The poll
shows done / total, the rate and the time left, and a Cancel button: the job stops
at its next progress report, keeping what it already stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import streamlit as st
import torch

from workbench.errors import Cancelled, WorkbenchError
from workbench.ui.state import MODEL_LOCK

POLL_SECONDS = 0.5
log = logging.getLogger(__name__)


@dataclass
class Job:
    """What a worker reports: progress, then a result or an error message."""

    label: str
    done: int = 0
    total: int = 0
    result: object = None
    error: str | None = None
    finished: bool = False
    cancelled: bool = False
    delivered: bool = False
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = field(default=None, repr=False)

    def progress(self, done: int, total: int) -> None:
        """A progress callback for library functions: `(done, total)`; raises `Cancelled` once the user asked."""
        self.done, self.total = done, total
        if self.cancelled:
            raise Cancelled

    def status(self) -> str:
        """'label… done/total (elapsed, rate, time left)' as the progress bar's text."""
        elapsed = time.monotonic() - self.started
        if not self.total:
            return f"{self.label}… ({elapsed:.0f} s)"
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f", about {(self.total - self.done) / rate:.0f} s left" if self.done and rate > 0 else ""
        return f"{self.label}… {self.done}/{self.total} ({elapsed:.0f} s, {rate:.2g}/s{left})"


def error_message(error: BaseException) -> str:
    """What the user reads when a job fails: the library's own message, or the kind of failure."""
    if isinstance(error, Cancelled):
        return "cancelled: what finished before is stored"
    if isinstance(error, WorkbenchError):
        return str(error)
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return ("out of memory: use fewer or shorter prompts, fewer layers, or a smaller model "
                "(nothing already stored was lost)")
    return f"the job failed ({type(error).__name__}: {error}); nothing already stored was lost"


def start(key: str, label: str, work: Callable[[Job], object]) -> Job:
    """Run `work(job)` in a worker thread (holding the model lock) unless the job `key` is still running."""
    running = st.session_state.get(key)
    if running is not None and not running.finished:
        return running
    job = Job(label)

    def target():
        try:
            with MODEL_LOCK:
                job.result = work(job)
        except BaseException as e:
            log.exception("job %s failed", label)
            job.error = error_message(e)
        finally:
            job.finished = True

    job.thread = threading.Thread(target=target, name=f"workbench-{key}", daemon=True)
    st.session_state[key] = job
    job.thread.start()
    return job


def result(key: str, select: str | None = None):
    """The finished job's result; while it runs, a progress bar that polls; its error as a message; else None.

    `select` names a widget that shows the new result the first time it is delivered (e.g. the analysis id
    in a selectbox of stored analyses); call this before that widget is drawn.
    """
    job = st.session_state.get(key)
    if job is None:
        return None
    if not job.finished:
        _poll(key)
        return None
    if job.error:
        (st.warning if job.cancelled else st.error)(job.error)
        return None
    if select and not job.delivered:
        st.session_state[select] = job.result
    job.delivered = True
    return job.result


@st.fragment(run_every=POLL_SECONDS)
def _poll(key: str) -> None:
    job = st.session_state[key]
    if job.finished:
        st.rerun()  # the whole page redraws with the result
    bar, cancel = st.columns([5, 1])
    bar.progress(job.done / job.total if job.total else 0.0, text=job.status())
    if cancel.button("Cancel", key=f"{key}:cancel", disabled=job.cancelled):
        job.cancelled = True
