"""Decode speed of steered generation: the eager nnsight path against the static-cache path, with the ceiling.

    python analyses/bench_generate.py --contexts 4096,32768 --batches 1,4 --out generate.md   # on a GPU
    python analyses/bench_generate.py --shape tiny --contexts 64 --batches 1,2 --tokens 8    # plumbing, CPU

A random-weight Llama (`--shape 1b`: TinyLlama-1.1B's shape, bf16 on CUDA; nothing downloaded) generates
greedily from random prompts of each context length. Per method the decode time per step is the difference
between a run of `--tokens` new tokens and a run of one, over the extra steps (so the prefill cancels out), after
a warm-up run of the same shapes. Methods, in the same process and on the same weights:
- eager: `steering.steer.generate_ids`, the nnsight path the workbench used to take, with one steering vector;
- static: `steering.fast_generate.fast_generate_ids` without steering (transformers' static cache, each step
  captured in a CUDA graph by torch.compile on CUDA): the fastest dense decode a user can run here;
- static+steer: the same with the steering vector (the target is >= 0.9x static).
The ceiling is the memory traffic of one step (every weight and the whole KV cache read once) at the copy
bandwidth measured in the same run; a result above it is a bug in the bench.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers as T

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.models import wrap_model  # noqa: E402
from workbench.random_models import tokenizer_for  # noqa: E402
from workbench.steering.fast_generate import fast_generate_ids  # noqa: E402
from workbench.steering.steer import Steer, generate_ids  # noqa: E402
from workbench_kernels._bench import copy_bandwidth  # noqa: E402

SHAPES = {
    "1b": {"hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
           "intermediate_size": 5632},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128},
}


def build(shape: str, context: int, device: str):
    """A random Llama of `shape` able to hold `context` tokens and more, wrapped as a workbench model."""
    tokenizer = tokenizer_for(True)
    config = T.LlamaConfig(**SHAPES[shape], vocab_size=len(tokenizer), max_position_embeddings=2 * context + 64,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    hf = T.LlamaForCausalLM(config).to(device, dtype)
    return wrap_model(hf, tokenizer, f"random-{shape}")


def prompts(model, batch: int, context: int, seed: int = 0) -> list[str]:
    """`batch` random texts of `context` tokens each (the tokenizer reads one token per character)."""
    rng = np.random.default_rng(seed)
    chars = [t for t in model.tokenizer.get_vocab() if len(t) == 1 and t.isalnum()]
    return ["".join(rng.choice(chars, context - 1)) for _ in range(batch)]


def step_seconds(run, tokens: int, repeats: int = 3) -> float:
    """Seconds per decode step: (time for `tokens` new tokens - time for one) / (tokens - 1), each the fastest of
    `repeats` runs after a warm-up."""
    run(tokens)  # warm-up: compile, CUDA graphs, allocator, SDPA plans
    timed = {}
    for n in (1, tokens):
        times = []
        for _ in range(repeats):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            run(n)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        timed[n] = min(times)
    return (timed[tokens] - timed[1]) / (tokens - 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=SHAPES, default="1b")
    p.add_argument("--contexts", default="4096,32768", help="comma-separated prompt lengths in tokens")
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--tokens", type=int, default=64, help="new tokens per timed run (default 64)")
    p.add_argument("--alpha", type=float, default=4.0, help="strength of the random steering vector")
    p.add_argument("--out", help="also write the table to this markdown file")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    contexts = [int(c) for c in args.contexts.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    model = build(args.shape, max(contexts), device)
    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    weights = sum(t.numel() * t.element_size() for t in model.hf.parameters())
    config = model.hf.config
    vector = np.random.default_rng(1).standard_normal(model.d_model).astype(np.float32)
    steer = [Steer(model.n_layers // 2, vector / np.linalg.norm(vector) * args.alpha, 1.0)]
    compile = device == "cuda"
    rows = []
    for context in contexts:
        for batch in batches:
            texts = prompts(model, batch, context)
            kv = (2 * batch * (context + args.tokens) * config.num_hidden_layers * config.num_key_value_heads
                  * (config.hidden_size // config.num_attention_heads) * model.hf.dtype.itemsize)
            ceiling = batch * bandwidth / (weights + kv) if bandwidth else float("nan")
            runs = {
                "eager": lambda n: generate_ids(model, texts, steer, max_new_tokens=n),
                "static": lambda n: fast_generate_ids(model, texts, max_new_tokens=n, compile=compile),
                "static+steer": lambda n: fast_generate_ids(model, texts, steer, max_new_tokens=n, compile=compile),
            }
            rate = {name: batch / step_seconds(run, args.tokens) for name, run in runs.items()}
            rows.append((context, batch, rate, ceiling))
            print(f"context {context}, batch {batch}: " + ", ".join(f"{k} {v:,.1f} tok/s" for k, v in rate.items())
                  + f"; ceiling {ceiling:,.0f} tok/s", flush=True)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"{gpu}, commit {commit}, {datetime.date.today()}, shape {args.shape}, {args.tokens} new tokens, "
             f"copy bandwidth {bandwidth / 1e9 if bandwidth else float('nan'):,.0f} GB/s", "",
             "| context | batch | eager tok/s | static tok/s | static+steer tok/s | steer / static | static / eager | "
             "ceiling tok/s | static / ceiling |", "|---|---|---|---|---|---|---|---|---|"]
    for context, batch, rate, ceiling in rows:
        lines.append(f"| {context} | {batch} | {rate['eager']:,.1f} | {rate['static']:,.1f} | "
                     f"{rate['static+steer']:,.1f} | {rate['static+steer'] / rate['static']:.2f} | "
                     f"{rate['static'] / rate['eager']:.1f}x | {ceiling:,.0f} | {rate['static'] / ceiling:.0%} |")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
