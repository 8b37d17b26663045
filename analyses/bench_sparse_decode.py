"""End-to-end decode speed: DELTA with our kernels against dense attention, in a random-weight ~1B Llama.

    python analyses/bench_sparse_decode.py --out decode.md

The model has Llama-3.2-1B's shape (16 layers, d_model 2048, 32 query / 8 KV heads, head dim 64; a
32k vocabulary), random bf16 weights, nothing downloaded. For each context length the KV cache is
filled with random keys and values (a prefill of 128k tokens would take longer than the decoding we
time, and random weights make its attention no more meaningful than random keys) in a preallocated
buffer, so no step copies the cache. Both runs go through the same attention plumbing
(`sparse_attention(..., fast=True)`), with one SDPA backend forced for both (`--backend`, flash by
default: cuDNN rebuilds its plan whenever the KV length grows, at every step): dense decodes every layer
with SDPA over the grouped queries; DELTA runs the full and Δ layers the same way, scores pages in the Δ layers with
`workbench_kernels.selection_scores` and runs `workbench_kernels.sparse_decode` over the chosen tokens in the sparse layers
(official settings: 64 pages of 16 tokens, last 8 pages kept, Δ pattern scaled from [0,1,2,14,22] of
28 layers). Tokens per second are timed with CUDA events over eager decoding (no CUDA graphs, unlike
the official engine), so per-step Python overhead is in both numbers. The paper reports about 4.25x
(up to 5x) fewer attended tokens and 1.54x end to end; our numbers go beside it.
Imports only torch, transformers, workbench_kernels and workbench.sparse (no nnsight or DuckDB).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transformers as T
from transformers import DynamicLayer

from workbench.sparse import DenseConfig, sparse_attention
from workbench.sparse.accuracy import cache_argument
from workbench.sparse.delta import DeltaConfig

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
PAPER = "paper: about 4.25x (up to 5x) fewer attended tokens, 1.54x end-to-end speed-up"
SHAPES = {
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
               "intermediate_size": 8192, "vocab_size": 32000},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "intermediate_size": 128, "vocab_size": 256},
}


class PreallocatedLayer(DynamicLayer):
    """A cache layer over a buffer [B, Hkv, max_len, D] already holding `filled` positions; update writes
    in place and returns views of the filled part (no concatenation, no copy)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int):
        super().__init__()
        self.buffer_keys, self.buffer_values, self.filled = keys, values, filled
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._views()

    def _views(self):
        self.keys = self.buffer_keys[:, :, :self.filled]
        self.values = self.buffer_values[:, :, :self.filled]

    def update(self, key_states, value_states, *args, **kwargs):
        t = key_states.shape[-2]
        self.buffer_keys[:, :, self.filled:self.filled + t] = key_states
        self.buffer_values[:, :, self.filled:self.filled + t] = value_states
        self.filled += t
        self._views()
        return self.keys, self.values


def build_model(shape: str, device: str, dtype: torch.dtype, max_len: int):
    config = T.LlamaConfig(**SHAPES[shape], max_position_embeddings=max_len, tie_word_embeddings=False,
                           rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                           attn_implementation="sdpa")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = T.LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return model


def random_cache(model, batch: int, context: int, room: int) -> T.DynamicCache:
    """A cache holding `context` random positions per layer, with room for `room` more."""
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    cache = T.DynamicCache(config=c)
    p = next(model.parameters())
    shape = (batch, c.num_key_value_heads, context + room, head_dim)
    cache.layers = [PreallocatedLayer(torch.randn(shape, device=p.device, dtype=p.dtype),
                                      torch.randn(shape, device=p.device, dtype=p.dtype), context)
                    for _ in range(c.num_hidden_layers)]
    return cache


@torch.no_grad()
def tokens_per_second(model, method, batch: int, context: int, steps: int, warmup: int,
                      backend: SDPBackend = SDPBackend.FLASH_ATTENTION) -> float:
    """Decode `warmup + steps` tokens after a random `context`; return the timed steps' tokens per second."""
    device = next(model.parameters()).device
    cache = random_cache(model, batch, context, steps + warmup)
    token = torch.randint(0, model.config.vocab_size, (batch, 1), device=device)
    cuda = device.type == "cuda"
    with sparse_attention(model, method, fast=True) as session, sdpa_kernel(backend):
        for i in range(warmup + steps):
            if i == warmup:
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
            position = torch.full((batch, 1), context + i, device=device)
            session.kv_length = context + i + 1
            logits = model(token, position_ids=position, use_cache=True, **{cache_argument(model): cache}).logits
            token = logits[:, -1:].argmax(-1)
        if cuda:
            torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def attended_tokens(config: DeltaConfig, n_layers: int, context: int) -> tuple[int, int]:
    """(dense, DELTA) key positions read per decoded token, summed over layers."""
    budget = min(context, config.budget_pages(context) * config.page_size)
    roles = config.roles(n_layers)
    return n_layers * context, sum(context if r != "sparse" else budget for r in roles)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", default="8192,32768,131072", help="comma-separated context lengths")
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--budget", type=int, default=1024, help="DELTA tokens kept in sparse layers (official 64 pages)")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--shape", choices=sorted(SHAPES), default="1b", help="'tiny' only checks the script on a CPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="flash",
                   help="the SDPA backend both runs use (default flash)")
    p.add_argument("--out", help="append the table, dated and with the GPU name, to this markdown file")
    args = p.parse_args(argv)
    contexts = [int(x) for x in args.contexts.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = build_model(args.shape, args.device, dtype, max(contexts) + args.steps + args.warmup)
    n_layers = model.config.num_hidden_layers
    delta = DeltaConfig(budget=args.budget, page_size=16, recent_pages=8)
    params = sum(x.numel() for x in model.parameters()) / 1e9
    rows = []
    for context in contexts:
        for batch in batches:
            backend = BACKENDS[args.backend]
            dense = tokens_per_second(model, DenseConfig(), batch, context, args.steps, args.warmup, backend)
            sparse = tokens_per_second(model, delta, batch, context, args.steps, args.warmup, backend)
            read_dense, read_delta = attended_tokens(delta, n_layers, context)
            rows.append(f"| {context} | {batch} | {dense:.1f} | {sparse:.1f} | {sparse / dense:.2f}x | "
                        f"{read_dense / read_delta:.2f}x |")
            print(rows[-1], flush=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    full = delta.layers_for(n_layers)
    table = "\n".join([
        f"## Sparse decode: DELTA vs dense ({datetime.date.today()}, {device})", "",
        (f"`python analyses/bench_sparse_decode.py {' '.join(argv or sys.argv[1:])}` — random-weight Llama, "
        f"{params:.2f}B parameters, {n_layers} layers, {dtype}; DELTA keeps {args.budget} tokens in sparse "
        f"layers (pages of 16, last 8 pages forced), full/Δ layers {list(full)}; SDPA {args.backend} in both; "
        "eager decoding, "
        f"{args.steps} timed steps after {args.warmup}; torch {torch.__version__}, "
        f"transformers {T.__version__}."), "",
        "| context | batch | dense tok/s | DELTA tok/s | speed-up | attended-token reduction |",
        "| --- | --- | --- | --- | --- | --- |", *rows, "", PAPER + ".", ""])
    print("\n" + table)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
