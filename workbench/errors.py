"""The errors the workbench raises for bad input, so callers can tell them from bugs.

Each one is a `ValueError` (the rule: validate at public boundaries, name the
problem and the fix), and the command line turns any of them into a one-line
message and a non-zero exit code.
"""


class WorkbenchError(ValueError):
    """Bad input or an unusable resource; the message says what and how to fix it."""


class ModelSpecError(WorkbenchError):
    """A model spec that cannot be resolved or loaded."""


class StoreError(WorkbenchError):
    """A database path or file that cannot be used."""


class DatabaseLockedError(StoreError):
    """Another process holds the DuckDB file."""


class Cancelled(KeyboardInterrupt):
    """The user stopped a job from the app: handled as Ctrl-C is (what finished stays stored, a recording is
    marked interrupted)."""
