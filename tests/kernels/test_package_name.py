"""Our top-level `kernels` package must not be mistaken for the PyPI package `kernels` (Hugging Face).

transformers asks `is_kernels_available()` before using hub kernels; it finds *a* `kernels` module,
then looks for a version: none in the metadata and no `__version__` on our package means "not
available". If someone gives kernels/__init__.py a version, or installs the real package, this fails.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

from transformers.utils import import_utils

REPO = Path(__file__).resolve().parents[2]


def test_import_kernels_gives_ours():
    kernels = importlib.import_module("kernels")
    assert Path(kernels.__file__).resolve() == REPO / "kernels" / "__init__.py"
    from kernels.sparse_decode import decode  # noqa: F401  (importing an op module must not shadow the function)

    assert callable(kernels.sparse_decode)
    assert not hasattr(kernels, "__version__")


def test_transformers_sees_no_kernels_package():
    import_utils.is_kernels_available.cache_clear()
    try:
        assert import_utils.is_kernels_available() is False
        found, version = import_utils._is_package_available("kernels", return_version=True)
        assert found, "our package should be importable, and still not count as the hub package"
        if version != "N/A":  # installed (pip install -e .): our distribution's version, not the hub package's
            assert version == importlib.metadata.version("delta-workbench")
    finally:
        import_utils.is_kernels_available.cache_clear()
