"""Steering vectors to and from files other tools read: safetensors, and llama.cpp's control-vector GGUF.

A steering vector here is `vectors: {L: float32 [d_model]}`, L the 0-based block
whose OUTPUT the vector is added to (TransformerLens `blocks.L.hook_resid_post`,
HF `hidden_states[L + 1]`), plus a JSON-able `meta` dict (model, method, alpha...).

Formats:
- "safetensors": one tensor `layer.{L}` per layer. The header (whose values must be strings) holds each
  meta entry as plain text (a string as itself, a number or boolean as written in JSON, a list as its JSON
  text), the site the vectors are added at (`hook_point`: TransformerLens `blocks.{L}.hook_resid_post`,
  `hf_hidden_states`: `hidden_states[{L} + 1]`), and the whole meta as JSON under `workbench.meta`, from
  which `import_vector` reads it back exactly.
- "gguf": llama.cpp's control vector, architecture `controlvector`, keys
  `controlvector.model_hint` and `controlvector.layer_count`, one F32 tensor
  `direction.{k}` per layer. llama.cpp adds `direction.k` to the output of its
  block k (0-based, the `l_out` of layer k: `build_cvec(cur, il)` in
  src/models/llama.cpp), so k == L. Its loader rejects k = 0 and its runtime has
  no slot for layer 0 (`common_control_vector_load` in common/common.cpp,
  `llama_adapter_cvec` in src/llama-adapter.cpp): block 0 cannot be exported.
  The full meta travels as JSON under `workbench.meta`, which llama.cpp ignores.
- "repeng": repeng's `ControlVector.export_gguf`/`import_gguf` write and read
  exactly this GGUF layout with the same layer numbering (its directions are
  keyed by block index, read from `hidden_states[layer + 1]` and added to
  `model.layers[layer]`'s output), so it is an alias of "gguf".
The steering-vectors library has no file format of its own (a `SteeringVector` is pickled with
`torch.save`, which the workbench never writes or reads): build one from the "safetensors" file,
`SteeringVector(layer_activations={L: tensor})` with the default `layer_type="decoder_block"` uses the same L.

`import_vector` detects the format from the file's first bytes, never from its
extension, and never unpickles.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError

FORMATS = ("safetensors", "gguf", "repeng")
GGUF_MAGIC = b"GGUF"
SAFETENSORS_KEY = re.compile(r"^layer\.(\d+)$")
GGUF_KEY = re.compile(r"^direction\.(\d+)$")
SAFETENSORS_MARKER = ("workbench.format", "steering-vector/1")
GGUF_META_KEY = "workbench.meta"
CONTROLVECTOR_ARCH = "controlvector"
_EXTENSIONS = {".gguf": "gguf", ".safetensors": "safetensors"}


def export_vector(vectors: dict[int, np.ndarray], meta: dict, path: str | os.PathLike, format: str) -> Path:
    """Write `vectors` and `meta` to `path` in `format`; the file appears whole or not at all."""
    if format not in FORMATS:
        raise WorkbenchError(f"unknown steering-vector format {format!r}; choose one of {', '.join(FORMATS)}")
    vectors = _checked_vectors(vectors, where="the vectors to export")
    meta_json = _checked_meta(meta, vectors)
    if format in ("gguf", "repeng") and 0 in vectors:
        raise WorkbenchError(
            "llama.cpp control vectors cannot steer block 0: its loader rejects `direction.0` and its "
            "runtime keeps no vector for layer 0; drop layer 0 from the vector or export format='safetensors'"
        )
    path = Path(path)
    write = _write_gguf if format in ("gguf", "repeng") else _write_safetensors
    return write_atomically(path, lambda tmp: write(vectors, meta, meta_json, tmp))


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp)` on a temporary file beside `path`, then move it into place.

    An interrupted or failing write leaves any earlier file at `path` untouched.
    """
    if not path.parent.is_dir():
        raise WorkbenchError(f"cannot write {path}: the folder {path.parent} does not exist")
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the mode a new file gets
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def import_vector(path: str | os.PathLike, expected_d_model: int | None = None,
                  expected_n_layers: int | None = None) -> tuple[dict[int, np.ndarray], dict]:
    """Read a steering vector written by `export_vector` (or repeng / llama.cpp's tools) and check it.

    Checks the hidden size against `expected_d_model` and every layer index
    against `expected_n_layers` when given, and rejects non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"no steering-vector file at {path}")
    detected = _detect_format(path)
    claimed = _EXTENSIONS.get(path.suffix.lower())
    if claimed and claimed != detected:
        raise WorkbenchError(f"{path} is named like a {claimed} file but its content is {detected}; "
                             "rename it or re-export it in the format its name says")
    vectors, meta = _read_gguf(path) if detected == "gguf" else _read_safetensors(path)
    vectors = _checked_vectors(vectors, where=str(path))
    d_model = len(next(iter(vectors.values())))
    if expected_d_model is not None and d_model != expected_d_model:
        raise WorkbenchError(f"{path} holds vectors of size {d_model}, but the model's hidden size is "
                             f"{expected_d_model}: it was made for another model")
    if expected_n_layers is not None and max(vectors) >= expected_n_layers:
        raise WorkbenchError(f"{path} has a vector for layer {max(vectors)}, but the model has layers "
                             f"0..{expected_n_layers - 1}: it was made for another model")
    return vectors, meta


def _detect_format(path: Path) -> str:
    """'gguf' or 'safetensors', from the file's first bytes; a `WorkbenchError` for anything else."""
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    if head[:4] == GGUF_MAGIC:
        return "gguf"
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: u64 header length, then a JSON header
        if struct.unpack("<Q", head[:8])[0] > size - 8:
            raise WorkbenchError(f"{path} is a truncated safetensors file: its header runs past the end")
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        raise WorkbenchError(f"{path} looks like a pickle or torch.save file; the workbench never unpickles "
                             "(it can run code). Re-save the vectors with safetensors")
    raise WorkbenchError(f"{path} is neither a GGUF nor a safetensors file (first bytes {head[:8]!r}); "
                         "it may be truncated or not a steering vector at all")


def _checked_vectors(vectors, where: str) -> dict[int, np.ndarray]:
    """The vectors as {int: float32 1-D} with one size, all finite; a `WorkbenchError` naming the fault."""
    if not isinstance(vectors, dict) or not vectors:
        raise WorkbenchError(f"{where}: expected a non-empty dict {{layer: vector}}, "
                             f"got {type(vectors).__name__}"
                             f"{' (empty)' if isinstance(vectors, dict) else ''}")
    checked, sizes = {}, set()
    for layer, vector in vectors.items():
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
            raise WorkbenchError(f"{where}: layer keys must be block indices >= 0, got {layer!r}")
        array = np.asarray(vector)
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.floating):
            raise WorkbenchError(f"{where}: layer {layer} must be a 1-D float vector, "
                                 f"got shape {array.shape} of {array.dtype}")
        if not np.isfinite(array).all():
            raise WorkbenchError(f"{where}: layer {layer} has NaN or infinite values; recompute the vector")
        sizes.add(array.shape[0])
        checked[int(layer)] = array.astype(np.float32)
    if len(sizes) != 1:
        raise WorkbenchError(f"{where}: layers have different sizes {sorted(sizes)}; all must be d_model")
    return dict(sorted(checked.items()))


def _checked_meta(meta: dict, vectors: dict[int, np.ndarray]) -> str:
    """`meta` as JSON, after checking it agrees with the vectors it describes."""
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise WorkbenchError(f"meta must be a dict with string keys, got {meta!r}")
    d_model = len(next(iter(vectors.values())))
    if "d_model" in meta and meta["d_model"] != d_model:
        raise WorkbenchError(f"meta says d_model={meta['d_model']} but the vectors have size {d_model}")
    if "layers" in meta and sorted(meta["layers"]) != sorted(vectors):
        raise WorkbenchError(f"meta lists layers {meta['layers']} but the vectors are for {sorted(vectors)}")
    try:
        return json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise WorkbenchError(f"meta must hold only JSON values (str, number, list, dict; finite): {e}") from e


def _plain(value) -> str:
    """A metadata value as plain text: a string as itself, anything else as its JSON."""
    return value if isinstance(value, str) else json.dumps(value, allow_nan=False)


def _write_safetensors(vectors, meta, meta_json, path: Path) -> None:
    from safetensors.numpy import save_file

    header = {key: _plain(value) for key, value in meta.items() if value is not None}
    header |= {"hook_point": "blocks.{L}.hook_resid_post", "hf_hidden_states": "hidden_states[{L} + 1]",
               GGUF_META_KEY: meta_json, SAFETENSORS_MARKER[0]: SAFETENSORS_MARKER[1]}
    save_file({f"layer.{layer}": vector for layer, vector in vectors.items()}, str(path), metadata=header)


def _write_gguf(vectors, meta, meta_json, path: Path) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), CONTROLVECTOR_ARCH)
    writer.add_string(f"{CONTROLVECTOR_ARCH}.model_hint", str(meta.get("model", "unknown")))
    writer.add_uint32(f"{CONTROLVECTOR_ARCH}.layer_count", len(vectors))
    writer.add_string(GGUF_META_KEY, meta_json)
    for layer, vector in vectors.items():
        writer.add_tensor(f"direction.{layer}", vector)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _read_safetensors(path: Path) -> tuple[dict[int, np.ndarray], dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise WorkbenchError(f"{path} is a damaged or truncated safetensors file: {e}") from e
    vectors = {}
    for name, tensor in tensors.items():
        match = SAFETENSORS_KEY.match(name)
        if not match:
            raise WorkbenchError(f"{path} has a tensor {name!r}; a steering vector has only "
                                 "`layer.<L>` tensors")
        vectors[int(match.group(1))] = tensor
    if GGUF_META_KEY not in header:  # another writer's file: its metadata as the strings it holds
        return vectors, {key: value for key, value in header.items() if key != SAFETENSORS_MARKER[0]}
    try:
        meta = json.loads(header[GGUF_META_KEY])
    except json.JSONDecodeError as e:
        raise WorkbenchError(f"{path} has a damaged `{GGUF_META_KEY}` entry: {e}") from e
    return vectors, meta


def _read_gguf(path: Path) -> tuple[dict[int, np.ndarray], dict]:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        arch = _gguf_string(reader, "general.architecture")
        hint = _gguf_string(reader, f"{CONTROLVECTOR_ARCH}.model_hint")
        meta_json = _gguf_string(reader, GGUF_META_KEY)
        tensors = [(t.name, t.tensor_type, int(t.n_elements), np.array(t.data, copy=True))
                   for t in reader.tensors]
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, struct.error) as e:
        raise WorkbenchError(f"{path} is a damaged or truncated GGUF file: {e}") from e
    if arch != CONTROLVECTOR_ARCH:
        raise WorkbenchError(f"{path} is a GGUF file of architecture {arch!r}, not a control vector "
                             f"({CONTROLVECTOR_ARCH!r}): is it a model?")
    vectors = {}
    for name, kind, n_elements, data in tensors:
        match = GGUF_KEY.match(name)
        if not match:
            raise WorkbenchError(f"{path} has a tensor {name!r}; a control vector has only "
                                 "`direction.<k>` tensors")
        if int(match.group(1)) == 0:
            raise WorkbenchError(f"{path} has `direction.0`, which llama.cpp rejects (k counts from 1)")
        if kind != gguf.GGMLQuantizationType.F32:
            raise WorkbenchError(f"{path}: {name} is {kind.name}; llama.cpp accepts only F32 directions")
        if data.size != n_elements or data.ndim != 1:
            raise WorkbenchError(f"{path} is truncated: {name} should hold {n_elements} values, "
                                 f"has {data.size}")
        vectors[int(match.group(1))] = data
    try:
        meta = json.loads(meta_json) if meta_json is not None else {"model_hint": hint}
    except json.JSONDecodeError as e:
        raise WorkbenchError(f"{path} has a damaged `{GGUF_META_KEY}` entry: {e}") from e
    return vectors, meta


def _gguf_string(reader, key: str) -> str | None:
    field = reader.get_field(key)
    return None if field is None else str(field.contents())

