"""Delta Workbench: record, analyse and steer transformer language models.

The public entry points are imported lazily so that `import workbench` stays
cheap (scripts that only need the corpus or the demo model's helpers do not
pay for nnsight, DuckDB and transformers).
"""

from importlib import import_module

_EXPORTS = {
    "load_model": "workbench.models",
    "LoadedModel": "workbench.models",
    "record": "workbench.recording",
    "RecordConfig": "workbench.config",
    "Store": "workbench.store",
    "load_prompts": "workbench.prompts",
    "WorkbenchError": "workbench.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
