"""Downstream proof: llama.cpp, steered by our exported control vector, continues like the workbench does.

The model (a tiny random Llama with a byte-level BPE tokenizer like the demo's,
and the demo model itself when it is present) is converted to GGUF by
`workbench.steering.gguf_model`, loaded with llama-cpp-python, and decoded greedily. The
vector goes through `export_vector(..., "gguf")` and is loaded back the way
llama.cpp's `common_control_vector_load` does (tensor `direction.k` scaled into
row k - 1 of the buffer `llama_set_adapter_cvec` takes, layers 1..n_layer).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench import demo_model as dm
from workbench.models import bundled_models, load_model
from workbench.steering.export import export_vector
from workbench.steering.gguf_model import convert_to_gguf
from workbench.steering.steer import Steer, generate_ids

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is missing: pip install -e '.[test]'")

PROMPT = "One day, Maya went to the farm with her dog."
N_NEW, N_MATCH = 12, 8
TOKENIZER_TEXTS = [PROMPT, "Tom hated the soup 42 times.  It was cold!\nkey 4821 : value 7735",
                   "  leading spaces, 3.14 and 1,000 -- 'quoted' words?", "Üñíçødé café 🦙 tea",
                   "a  1 x\n\n  2 tab\there\t\t9 ", "it's 'RE' I'VE we'll", "😶‍🌫️ 🦙🦙 中文 1314151天"]
TINY = dm.Architecture(hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=128,
                       context_length=256)


@pytest.fixture(scope="module")
def tiny_bpe_llama(tmp_path_factory):
    """A random 4-block Llama with a byte-level BPE tokenizer trained like the demo's (digits split, BOS)."""
    tokenizer = dm.train_tokenizer(list(dm.STORY_PROMPTS + dm.MASSIVE_PROMPTS) * 20, vocab_size=500)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(TINY.llama_config(len(tokenizer)))
    with torch.no_grad():  # random init leaves weights tiny; larger ones make the blocks matter
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    path = tmp_path_factory.mktemp("tiny-bpe") / "llama"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["tiny-bpe", "demo"])
def models(request, tmp_path_factory):
    """(workbench model, llama.cpp model) for the same weights, converted to an F32 GGUF."""
    if request.param == "demo" and "demo" not in bundled_models():
        pytest.skip("the demo model is not in data/models/demo yet")
    spec = "demo" if request.param == "demo" else str(request.getfixturevalue("tiny_bpe_llama"))
    model = load_model(spec, device="cpu", dtype=torch.float32)
    llm = load_llama_cpp(convert_to_gguf(model.path, tmp_path_factory.mktemp("gguf") / "model.gguf"))
    yield model, llm
    llm.close()


def load_llama_cpp(path):
    """llama.cpp in float32 throughout: its default F16 KV cache alone moves logits by ~1e-2."""
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_batch=256, n_threads=2, logits_all=True,
                           type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, verbose=False)


def llama_cpp_greedy(llm, prompt_ids: list[int], eos: int) -> list[int]:
    """Greedy continuation by arg-max over llama.cpp's logits, stopping at EOS like `generate_ids`."""
    llm.reset()
    llm.eval(prompt_ids)
    out = []
    for _ in range(N_NEW):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if token == eos:
            break
        out.append(token)
        llm.eval([token])
    return out


def apply_control_vector(llm, path, strength: float, shift: int = 0) -> None:
    """Load a control-vector GGUF as llama.cpp's common_control_vector_load does and set it on the context.

    `shift` moves every direction that many blocks up: a deliberately wrong
    numbering, to show the comparison would notice one.
    """
    n_embd, n_layer = llm.n_embd(), llama_cpp.llama_model_n_layer(llm.model)
    buffer = np.zeros((n_layer - 1, n_embd), np.float32)  # row k - 1 is block k: llama.cpp keeps none for 0
    for tensor in gguf.GGUFReader(path).tensors:
        k = int(tensor.name.removeprefix("direction.")) + shift
        buffer[k - 1] += strength * tensor.data
    pointer = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    assert llama_cpp.llama_set_adapter_cvec(llm.ctx, pointer, buffer.size, n_embd, 1, n_layer) == 0


def clear_control_vector(llm) -> None:
    assert llama_cpp.llama_set_adapter_cvec(llm.ctx, None, 0, llm.n_embd(), -1, -1) == 0


def test_llama_cpp_tokenizes_like_the_hf_tokenizer(models):
    model, llm = models
    for text in [*TOKENIZER_TEXTS, *dm.STORY_PROMPTS]:
        expected = model.tokenizer(text).input_ids
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == expected, text
        assert llm.detokenize(expected[1:]).decode() == text


def test_unsteered_greedy_continuation_matches(models):
    model, llm = models
    prompt_ids = model.tokenizer(PROMPT).input_ids
    ours = generate_ids(model, PROMPT, max_new_tokens=N_NEW)[0]
    assert len(ours) >= N_MATCH
    assert llama_cpp_greedy(llm, prompt_ids, model.tokenizer.eos_token_id)[:len(ours)] == ours


def _prompt_logits(llm, model) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's and HF's logits at every prompt position, [T, V] each."""
    ids = model.tokenizer(PROMPT).input_ids
    llm.reset()
    llm.eval(ids)
    with torch.no_grad():
        hf = model.hf(torch.tensor([ids])).logits[0].numpy()
    return llm.scores[:len(ids)].copy(), hf


def test_prompt_logits_match_in_float32(models):
    model, llm = models
    theirs, ours = _prompt_logits(llm, model)
    np.testing.assert_allclose(theirs, ours, atol=1e-3 * max(1.0, np.abs(ours).max()))


def test_f16_weights_halve_the_file_and_stay_within_f16_error(models, tmp_path):
    model, llm = models
    f32_size = Path(llm.model_path).stat().st_size
    path = convert_to_gguf(model.path, tmp_path / "f16.gguf", weights="f16")
    assert path.stat().st_size < 0.6 * f32_size
    llm16 = load_llama_cpp(path)
    try:
        theirs, ours = _prompt_logits(llm16, model)
    finally:
        llm16.close()
    assert np.abs(theirs - ours).max() < 0.01 * np.abs(ours).max()  # F16 rounding of weights and activations


def _steering_vector(model) -> tuple[dict[int, np.ndarray], float]:
    """Unit directions (the embedding rows of two tokens) for block 1 and a middle block, and a strength
    that changes the continuation. Both blocks leave room above them for the shifted negative control."""
    assert model.n_layers >= 4, "the shifted control needs blocks above the steered ones"
    embed = model.module("embed").weight.detach().float()
    token_a, token_b = model.tokenizer(" dog sun", add_special_tokens=False).input_ids[-2:]
    layers = (1, model.n_layers // 2)
    vectors = {layer: (embed[t] / embed[t].norm()).numpy() for layer, t in zip(layers, (token_a, token_b))}
    ids = model.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        resid = model.hf(ids, output_hidden_states=True).hidden_states[2]  # output of block 1: [1, T, D]
    # half the typical norm (BOS left out: it carries massive activations); double it and the first token
    # swamps every layer's effect, which would hide a wrong layer numbering
    return vectors, 0.5 * resid[0, 1:].norm(dim=-1).median().item()


def test_steered_greedy_continuation_matches(models, tmp_path):
    model, llm = models
    vectors, alpha = _steering_vector(model)
    meta = {"model": model.spec, "method": "embedding rows", "alpha": alpha, "layers": sorted(vectors),
            "d_model": model.d_model}
    path = export_vector(vectors, meta, tmp_path / "vector.gguf", "gguf")
    prompt_ids, eos = model.tokenizer(PROMPT).input_ids, model.tokenizer.eos_token_id

    steers = [Steer(layer, vector, alpha) for layer, vector in vectors.items()]
    ours = generate_ids(model, PROMPT, steers, max_new_tokens=N_NEW)[0]
    unsteered = generate_ids(model, PROMPT, max_new_tokens=N_NEW)[0]
    apply_control_vector(llm, path, strength=alpha)
    try:
        theirs = llama_cpp_greedy(llm, prompt_ids, eos)
        apply_control_vector(llm, path, strength=alpha, shift=1)  # the wrong block: must not match
        shifted = llama_cpp_greedy(llm, prompt_ids, eos)
    finally:
        clear_control_vector(llm)

    assert len(ours) >= N_MATCH and ours[:N_MATCH] != unsteered[:N_MATCH]
    assert theirs[:N_MATCH] == ours[:N_MATCH]
    assert shifted[:N_MATCH] != ours[:N_MATCH]
    assert llama_cpp_greedy(llm, prompt_ids, eos)[:N_MATCH] == unsteered[:N_MATCH]  # cleared again
