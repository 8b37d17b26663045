"""Steering-vector files: exact round trips, llama.cpp's layer rules, and clear refusals of bad files."""

from __future__ import annotations

import os
import stat
import struct

import gguf
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from workbench.errors import WorkbenchError
from workbench.steering.export import FORMATS, export_vector, import_vector
from workbench.steering.gguf_model import convert_to_gguf, llama_cpp_pre_tokenizer, permute_for_rope

D_MODEL, N_LAYERS = 48, 6
META = {"model": "demo", "revision": None, "method": "mean_difference", "position": "last", "norm": 3.25,
        "alpha": 6.0, "layers": [1, 4], "d_model": D_MODEL, "created_by": "tests/test_export.py"}
SUFFIX = {"safetensors": ".safetensors", "gguf": ".gguf", "repeng": ".gguf"}


@pytest.fixture
def vectors():
    rng = np.random.default_rng(7)
    return {1: rng.normal(size=D_MODEL).astype(np.float32),
            4: rng.normal(size=D_MODEL).astype(np.float32) * 1e-3}


def _export(vectors, tmp_path, fmt, meta=META, name="vec"):
    return export_vector(vectors, meta, tmp_path / f"{name}{SUFFIX[fmt]}", fmt)


def _gguf_file(path, arch, tensors, strings=None, uint32s=None):
    """A GGUF file written directly with the gguf package, as another tool would."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (strings or {}).items():
        writer.add_string(key, value)
    for key, value in (uint32s or {}).items():
        writer.add_uint32(key, value)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("fmt", ["safetensors", "gguf", "repeng"])
def test_round_trip_is_exact(vectors, tmp_path, fmt):
    path = _export(vectors, tmp_path, fmt)
    got, meta = import_vector(path, expected_d_model=D_MODEL, expected_n_layers=N_LAYERS)
    assert meta == META
    assert sorted(got) == [1, 4]
    for layer in vectors:
        assert got[layer].dtype == np.float32
        np.testing.assert_array_equal(got[layer], vectors[layer])


@pytest.mark.parametrize("fmt", ["safetensors", "gguf"])
def test_exported_files_get_the_mode_of_a_new_file(vectors, tmp_path, fmt):
    previous = os.umask(0o022)
    try:
        assert stat.S_IMODE(_export(vectors, tmp_path, fmt).stat().st_mode) == 0o644  # readable by a server
        os.umask(0o077)
        assert stat.S_IMODE(_export(vectors, tmp_path, fmt, name="private").stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_safetensors_metadata_is_plain_text_and_names_the_site(vectors, tmp_path):
    from safetensors import safe_open

    with safe_open(str(_export(vectors, tmp_path, "safetensors")), framework="numpy") as f:
        header = f.metadata()
    assert header["model"] == "demo" and header["method"] == "mean_difference"  # not '"demo"'
    assert header["alpha"] == "6.0" and header["layers"] == "[1, 4]" and "revision" not in header  # None: absent
    assert header["hook_point"] == "blocks.{L}.hook_resid_post" and header["hf_hidden_states"] == "hidden_states[{L} + 1]"


def test_a_foreign_safetensors_file_reads_its_plain_metadata(vectors, tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({f"layer.{layer}": v for layer, v in vectors.items()}, str(path), metadata={"model": "gpt2"})
    assert import_vector(path)[1] == {"model": "gpt2"}


def test_float64_input_round_trips_to_float32_precision(vectors, tmp_path):
    wide = {layer: v.astype(np.float64) + 1e-12 for layer, v in vectors.items()}
    got, _ = import_vector(_export(wide, tmp_path, "safetensors"))
    for layer, vector in wide.items():
        np.testing.assert_array_equal(got[layer], vector.astype(np.float32))


def test_gguf_is_a_llama_cpp_control_vector(vectors, tmp_path):
    """The keys and tensors llama.cpp's and repeng's loaders read, with direction.k = block k."""
    reader = gguf.GGUFReader(_export(vectors, tmp_path, "gguf"))
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "demo"
    assert reader.get_field("controlvector.layer_count").contents() == 2
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.4"]
    for tensor in tensors.values():
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32 and tensor.n_elements == D_MODEL
    np.testing.assert_array_equal(tensors["direction.4"].data, vectors[4])


def test_repeng_alias_writes_the_same_bytes_as_gguf(vectors, tmp_path):
    a = _export(vectors, tmp_path, "gguf", name="a").read_bytes()
    b = _export(vectors, tmp_path, "repeng", name="b").read_bytes()
    assert a == b


def test_foreign_repeng_file_without_our_metadata_imports(vectors, tmp_path):
    """A file as repeng's ControlVector.export_gguf writes it: no workbench.meta, model_hint a model type."""
    path = _gguf_file(tmp_path / "repeng.gguf", "controlvector",
                      {f"direction.{layer}": vector for layer, vector in vectors.items()},
                      strings={"controlvector.model_hint": "llama"}, uint32s={"controlvector.layer_count": 2})
    got, meta = import_vector(path, expected_d_model=D_MODEL)
    assert meta == {"model_hint": "llama"}
    np.testing.assert_array_equal(got[1], vectors[1])


def test_block_zero_cannot_go_to_llama_cpp_but_can_to_safetensors(vectors, tmp_path):
    vectors[0] = np.ones(D_MODEL, np.float32)
    meta = {**META, "layers": [0, 1, 4]}
    for fmt in ("gguf", "repeng"):
        with pytest.raises(WorkbenchError, match="block 0"):
            _export(vectors, tmp_path, fmt, meta)
    assert not list(tmp_path.glob("*.gguf*"))  # nothing half-written left behind
    got, _ = import_vector(_export(vectors, tmp_path, "safetensors", meta))
    assert sorted(got) == [0, 1, 4]


def test_an_unknown_format_is_refused_and_writes_nothing(vectors, tmp_path):
    with pytest.raises(WorkbenchError, match="unknown steering-vector format 'steering-vectors'"):
        export_vector(vectors, META, tmp_path / "v.pt", "steering-vectors")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["safetensors", "gguf"])
def test_wrong_model_is_refused(vectors, tmp_path, fmt):
    path = _export(vectors, tmp_path, fmt)
    with pytest.raises(WorkbenchError, match="size 48.*hidden size is 64"):
        import_vector(path, expected_d_model=64)
    with pytest.raises(WorkbenchError, match="layer 4.*layers 0..3"):
        import_vector(path, expected_n_layers=4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_on_export_and_import(vectors, tmp_path, bad):
    broken = {1: vectors[1].copy()}
    broken[1][5] = bad
    with pytest.raises(WorkbenchError, match="layer 1 has NaN or infinite"):
        export_vector(broken, {}, tmp_path / "x.safetensors", "safetensors")
    save_file({"layer.1": broken[1]}, str(tmp_path / "foreign.safetensors"))  # written by someone else
    with pytest.raises(WorkbenchError, match="layer 1 has NaN or infinite"):
        import_vector(tmp_path / "foreign.safetensors")


@pytest.mark.parametrize("vectors_arg, match", [
    ({}, "non-empty"),
    ({-1: np.zeros(4, np.float32)}, "block indices >= 0"),
    ({"1": np.zeros(4, np.float32)}, "block indices >= 0"),
    ({1: np.zeros((2, 4), np.float32)}, "1-D float"),
    ({1: np.zeros(4, np.int64)}, "1-D float"),
    ({1: np.zeros(4, np.float32), 2: np.zeros(5, np.float32)}, "different sizes"),
])
def test_bad_vectors_are_refused(tmp_path, vectors_arg, match):
    with pytest.raises(WorkbenchError, match=match):
        export_vector(vectors_arg, {}, tmp_path / "v.safetensors", "safetensors")


def test_meta_must_agree_and_be_json(vectors, tmp_path):
    for meta, match in [({**META, "d_model": 64}, "d_model=64"), ({**META, "layers": [2]}, "layers"),
                        ({**META, "alpha": float("nan")}, "JSON"), ({**META, "x": object()}, "JSON")]:
        with pytest.raises(WorkbenchError, match=match):
            _export(vectors, tmp_path, "safetensors", meta)
    with pytest.raises(WorkbenchError, match="unknown steering-vector format 'npz'"):
        export_vector(vectors, META, tmp_path / "v.npz", "npz")


def test_failed_export_keeps_the_earlier_file(vectors, tmp_path):
    path = _export(vectors, tmp_path, "gguf")
    before = path.read_bytes()
    with pytest.raises(WorkbenchError):
        export_vector({**vectors, 0: vectors[1]}, {}, path, "gguf")
    assert path.read_bytes() == before


def test_content_decides_the_format_and_a_lying_extension_is_named(vectors, tmp_path):
    safetensors = _export(vectors, tmp_path, "safetensors")
    gguf_file = _export(vectors, tmp_path, "gguf")
    (tmp_path / "v.gguf").write_bytes(safetensors.read_bytes())
    with pytest.raises(WorkbenchError, match="named like a gguf file but its content is safetensors"):
        import_vector(tmp_path / "v.gguf")
    (tmp_path / "v2.safetensors").write_bytes(gguf_file.read_bytes())
    with pytest.raises(WorkbenchError, match="named like a safetensors file but its content is gguf"):
        import_vector(tmp_path / "v2.safetensors")
    (tmp_path / "v.bin").write_bytes(gguf_file.read_bytes())  # an extension that claims nothing
    assert sorted(import_vector(tmp_path / "v.bin")[0]) == [1, 4]


@pytest.mark.parametrize("content, match", [
    (b"", "neither a GGUF nor a safetensors"),
    (b"hello, this is plain text and not a vector", "neither a GGUF nor a safetensors"),
    (b"\x80\x04\x95" + b"\x00" * 40, "never unpickles"),
    (b"PK\x03\x04" + b"\x00" * 40, "never unpickles"),
    (struct.pack("<Q", 10_000) + b'{"layer.1"', "truncated safetensors"),
])
def test_garbage_is_refused(tmp_path, content, match):
    (tmp_path / "v.gguf").write_bytes(content)
    with pytest.raises(WorkbenchError, match=match):
        import_vector(tmp_path / "v.gguf")


@pytest.mark.parametrize("fmt", ["safetensors", "gguf"])
def test_every_truncation_is_refused(vectors, tmp_path, fmt):
    whole = _export(vectors, tmp_path, fmt).read_bytes()
    cut = tmp_path / f"cut{SUFFIX[fmt]}"
    for length in range(0, len(whole), 7):
        cut.write_bytes(whole[:length])
        with pytest.raises(WorkbenchError):
            import_vector(cut)


def test_a_model_gguf_is_not_a_control_vector(tmp_path):
    path = _gguf_file(tmp_path / "model.gguf", "llama", {"token_embd.weight": np.zeros((4, 8), np.float32)})
    with pytest.raises(WorkbenchError, match="architecture 'llama', not a control vector"):
        import_vector(path)


def test_foreign_files_with_other_tensors_or_types_are_refused(vectors, tmp_path):
    save_file({"blocks.1.hook_resid_post": vectors[1]}, str(tmp_path / "a.safetensors"))
    with pytest.raises(WorkbenchError, match="only `layer.<L>` tensors"):
        import_vector(tmp_path / "a.safetensors")
    for name, data, match in [("direction.0", vectors[1], "direction.0"),
                              ("direction.2", vectors[1].astype(np.float16), "only F32")]:
        path = _gguf_file(tmp_path / "b.gguf", "controlvector", {name: data})
        with pytest.raises(WorkbenchError, match=match):
            import_vector(path)


def test_missing_file_and_folder(vectors, tmp_path):
    with pytest.raises(WorkbenchError, match="no steering-vector file"):
        import_vector(tmp_path / "absent.gguf")
    with pytest.raises(WorkbenchError, match="does not exist"):
        export_vector(vectors, META, tmp_path / "no" / "v.gguf", "gguf")


# The model converter (workbench.steering.gguf_model); tests/test_llama_cpp.py runs its output in llama.cpp.

def test_rope_permutation_interleaves_the_two_halves_of_each_head():
    n_heads, head_dim = 3, 8
    weight = torch.arange(n_heads * head_dim * 2, dtype=torch.float32).reshape(n_heads * head_dim, 2)
    permuted = permute_for_rope(weight, n_heads)
    for h in range(n_heads):
        for i in range(head_dim // 2):
            assert torch.equal(permuted[h * head_dim + 2 * i], weight[h * head_dim + i])
            assert torch.equal(permuted[h * head_dim + 2 * i + 1], weight[h * head_dim + head_dim // 2 + i])


def test_pre_tokenizer_names_follow_llama_cpp():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    digits = {"type": "Digits", "individual_digits": True}
    assert llama_cpp_pre_tokenizer(byte_level) == "gpt-2"
    assert llama_cpp_pre_tokenizer({"type": "Sequence", "pretokenizers": [digits, byte_level]}) == "starcoder"
    grouped_digits = {**digits, "individual_digits": False}
    for unsupported in [None, {"type": "Whitespace"}, {**byte_level, "add_prefix_space": True},
                        {"type": "Sequence", "pretokenizers": [grouped_digits, byte_level]}]:
        with pytest.raises(WorkbenchError, match="no llama.cpp pre-tokenizer matches"):
            llama_cpp_pre_tokenizer(unsupported)


def test_converter_refuses_what_it_cannot_convert(tiny_dir, tmp_path):
    with pytest.raises(WorkbenchError, match="unsupported architecture 'gpt2'"):
        convert_to_gguf(tiny_dir("gpt2"), tmp_path / "m.gguf")
    with pytest.raises(WorkbenchError, match="only byte-level BPE tokenizers"):
        convert_to_gguf(tiny_dir("llama"), tmp_path / "m.gguf")  # character-level WordLevel tokenizer
    with pytest.raises(WorkbenchError, match="weights must be one of"):
        convert_to_gguf(tiny_dir("llama"), tmp_path / "m.gguf", weights="q4_0")
    with pytest.raises(WorkbenchError, match="no config.json"):
        convert_to_gguf(tmp_path, tmp_path / "m.gguf")
    assert not list(tmp_path.glob("*.gguf*"))
