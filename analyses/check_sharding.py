"""A model sharded with a device_map gives the results it gives on one device: record, attention maps, massive
activations and steering, compared number by number, with tokens/s and peak memory per device.

    python analyses/check_sharding.py                          # the first half of the blocks on cuda:0, the rest on the CPU
    python analyses/check_sharding.py --device-map auto        # accelerate's placement over every GPU

A random Llama (no download) is saved and loaded twice through `load_model`: whole on cuda:0, and with the
device map. Both run in float32 with TF32 off, so the two placements differ only by the order of floating-point
sums on each device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.config import MassiveConfig, RecordConfig  # noqa: E402
from workbench.massive.detection import detect  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.recording import record  # noqa: E402
from workbench.steering.steer import Steer, generate_ids  # noqa: E402
from workbench.store import Store  # noqa: E402

SIZES = {"small": (512, 8, 8, 2, 1376), "1b": (2048, 16, 32, 8, 8192)}  # hidden, layers, heads, kv, intermediate
PROMPTS = ["The quick brown fox jumps over the lazy dog. " * 6, "Sharded models record like whole ones.",
           "A third prompt, of its own length, to pad."]
TOLERANCE = 1e-3


def save_random_llama(size: str, folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.random_models import VOCAB, char_tokenizer

    hidden, layers, heads, kv, inter = SIZES[size]
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, vocab_size=len(VOCAB),
                         max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so layers differ visibly
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.05)
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def half_on_cpu(n_layers: int) -> dict:
    """The embedding and the first half of the blocks on cuda:0; the rest, the final norm and the head on the CPU."""
    placement = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": "cpu", "lm_head": "cpu"}
    return placement | {f"model.layers.{i}": 0 if i < n_layers // 2 else "cpu" for i in range(n_layers)}


def run(model, folder: Path, vector: np.ndarray) -> dict:
    """Everything compared, with the recording's tokens/s and each device's peak memory."""
    for i in range(torch.cuda.device_count()):
        torch.cuda.reset_peak_memory_stats(i)
    db = folder / f"{model.spec}.duckdb"
    config = RecordConfig(batch_size=3, vectors=True, attention=True, attn_out=True, mlp_out=True)
    record(model, PROMPTS[:1], db, config, progress=False)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    run_id = record(model, PROMPTS, db, config, progress=False)
    seconds = time.perf_counter() - start
    store = Store(db)
    tokens = sum(len(model.tokenizer(p)["input_ids"]) for p in PROMPTS)
    found = store.massive_findings(detect(store, run_id, MassiveConfig(relative_only=True)))
    steered = generate_ids(model, PROMPTS[1:], [Steer(model.n_layers // 2, vector, 8.0)], max_new_tokens=12)
    return {
        "sites": {site: store.read_tensors(run_id, site) for site in ("resid_post", "attn_out", "mlp_out")},
        "attention": store.read_tensors(run_id, "attention"), "massive": found, "steered": steered,
        "tokens_per_s": tokens / seconds,
        "peak_gib": {f"cuda:{i}": torch.cuda.max_memory_allocated(i) / 2**30 for i in range(torch.cuda.device_count())},
        "placement": sorted({str(d) for d in getattr(model.hf, "hf_device_map", {"": model.device}).values()}),
    }


def vector_diff(a, b) -> float:
    key = ["prompt_id", "layer", "position"]
    a, b = a.sort_values(key), b.sort_values(key)
    return float(np.abs(np.stack(a.vector.to_numpy()) - np.stack(b.vector.to_numpy())).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--device-map", help="'auto' or a JSON object (default: half the blocks on the CPU)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_random_llama(args.size, Path(tmp) / f"random-llama-{args.size}")
        n_layers = SIZES[args.size][1]
        device_map = (json.loads(args.device_map) if args.device_map and args.device_map.startswith("{")
                      else args.device_map or half_on_cpu(n_layers))
        vector = np.random.default_rng(0).standard_normal(SIZES[args.size][0]).astype(np.float32)
        whole = load_model(str(folder), device="cuda:0", dtype="float32", attention=True)
        whole.spec = "whole"
        one = run(whole, Path(tmp), vector)
        del whole
        sharded = load_model(str(folder), device_map=device_map, dtype="float32", attention=True)
        sharded.spec = "sharded"
        two = run(sharded, Path(tmp), vector)
    rows = [(f"{site} max |diff|", vector_diff(one["sites"][site], two["sites"][site])) for site in one["sites"]]
    key = ["prompt_id", "layer", "head", "query", "key"]
    a, b = one["attention"].sort_values(key), two["attention"].sort_values(key)
    rows.append(("attention max |diff|", float(np.abs(a.weight.to_numpy() - b.weight.to_numpy()).max())))
    cols = ["prompt_id", "layer", "position", "dim"]
    same_massive = one["massive"][cols].equals(two["massive"][cols])
    print(f"| check | value | holds (tolerance {TOLERANCE:g}) |\n|---|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.2e} | {'yes' if value <= TOLERANCE else 'NO'} |")
    print(f"| massive activations (prompt, layer, position, dim) | {len(one['massive'])} findings | "
          f"{'yes' if same_massive else 'NO'} |")
    print(f"| steered greedy tokens | {len(one['steered'][0])} per prompt | "
          f"{'yes' if one['steered'] == two['steered'] else 'NO'} |")
    for name, result in (("whole on cuda:0", one), ("sharded", two)):
        print(f"\n{name}: blocks placed on {result['placement']}; record {result['tokens_per_s']:.0f} tokens/s; peak "
              f"GPU memory " + ", ".join(f"{d} {g:.2f} GiB" for d, g in result["peak_gib"].items()))


if __name__ == "__main__":
    main()
