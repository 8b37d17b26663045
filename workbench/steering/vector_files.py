"""A stored concept direction as the bytes of a steering-vector file, for downloads.

`export_vector` writes files atomically to a path; a download needs the bytes, so this
writes to a temporary folder and reads them back. `direction_meta` is the metadata both
the app's downloads and the command line's `export-vector` write.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from workbench.steering.export import export_vector

FILE_SUFFIX = {"safetensors": ".safetensors", "gguf": ".gguf", "repeng": ".gguf"}


def direction_meta(analysis: dict, layers: list[int], alpha: float | None = None) -> dict:
    """The metadata of an exported direction, from its `direction` analysis row: where it comes from, what it
    points to, where it is added (`site`: each block's output), and whether it was normalised to unit length."""
    config = analysis["config"]
    return {"model": analysis["model"], "revision": config.get("revision"), "method": config.get("method"),
            "position": config.get("position"), "concept": config.get("concept"),
            "direction": f"{config.get('negative')} -> {config.get('positive')}",
            "site": "resid_post", "normalized": bool(config.get("normalize", False)),
            "suggested_alpha": alpha, "layers": sorted(layers), "d_model": config.get("d_model")}


def vector_file_bytes(vectors: dict[int, np.ndarray], meta: dict, format: str) -> bytes:
    """The file `export_vector` writes for `format`, as bytes (its errors pass through unchanged)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"vector{FILE_SUFFIX.get(format, '')}"
        return export_vector(vectors, meta, path, format).read_bytes()
