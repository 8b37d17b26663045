"""Progress of long work, reported the same way by every job: a terminal bar (done / total, rate, time left) or a
callback `(done, total)` that the app's progress bar polls.

`progress` is True for the bar, False for nothing, or the callback; a callback may raise `Cancelled` to stop the
work between two steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

ProgressArg = bool | Callable[[int, int], None]


@contextmanager
def tracked(progress: ProgressArg, total: int, desc: str, unit: str = "step") -> Iterator[Callable[..., None]]:
    """A `step(n=1, note="")` function that counts `n` more units done of `total` and reports it (`note`: a short
    text shown beside the bar, e.g. the setting just finished)."""
    bar = tqdm(total=total, desc=desc, unit=unit, disable=progress is not True)
    done = 0

    def step(n: int = 1, note: str = "") -> None:
        nonlocal done
        done += n
        if note:
            bar.set_postfix_str(note, refresh=False)
        bar.update(n)
        if callable(progress):
            progress(done, total)

    try:
        yield step
    finally:
        bar.close()
