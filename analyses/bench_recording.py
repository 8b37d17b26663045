"""How much recording costs over a plain forward pass, and how fast the store ingests.

    python analyses/bench_recording.py --model demo
    python analyses/bench_recording.py --random-llama 1b --prompts 64 --length 512   # on a GPU

All timings come from the same run on the same inputs: the plain forward
pass of the Hugging Face model, the capture's pass alone (its forward hooks,
and its stop after the last block: no final norm or LM head, which the plain
pass runs), the capture (summaries only, then with full residual vectors)
including the copy to the host, batches queued as `record()` queues them (the
next one before waiting for the last; vectors cross in the model's dtype), and
the whole `record()` into a fresh database, whose writer thread also turns the
vectors into float32. Ingest speed is measured for layer statistics into DuckDB
and for vectors into Parquet. The `record()` rows and the Parquet write take
many seconds on a 1B model, so they are timed once.
Prints a markdown table; `--out FILE` appends it, dated and with the device named.
"""

from __future__ import annotations

import argparse
import datetime
import random
import string
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.config import RecordConfig  # noqa: E402
from workbench.models import load_model, wrap_model  # noqa: E402
from workbench.recording import capture, capture_batch, record, start_batch  # noqa: E402
from workbench.store import Store  # noqa: E402
from workbench.store.recording_rows import batch_rows  # noqa: E402

RANDOM_LLAMAS = {  # hidden, layers, heads, kv heads, intermediate
    "tiny": (256, 4, 8, 2, 688),
    "1b": (2048, 16, 32, 8, 8192),
}


def random_llama(size: str, device: str):
    """A random-weight Llama (no download) with a one-token-per-character tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.random_models import VOCAB, char_tokenizer

    hidden, layers, heads, kv, inter = RANDOM_LLAMAS[size]
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, vocab_size=max(len(VOCAB), 32000),
                         max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        hf = LlamaForCausalLM(config).to(dtype)
    return wrap_model(hf, char_tokenizer(), f"random-llama-{size}")


def timed(fn, device: str, repeats: int, warm_up: bool = True) -> float:
    """Median wall time of `fn()` over `repeats` runs, after one warm-up run unless `warm_up` is False."""
    return interleaved({"fn": fn}, device, repeats, warm_up)["fn"]


def interleaved(fns: dict, device: str, repeats: int, warm_up: bool = True) -> dict[str, float]:
    """Median wall time of each function, run in turn `repeats` rounds (after a warm-up round unless `warm_up` is
    False): a drift of the GPU's clocks over the run shifts every row alike instead of the rows timed last."""
    if warm_up:
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="model spec (ignored with --random-llama)")
    parser.add_argument("--random-llama", choices=sorted(RANDOM_LLAMAS), help="use a random-weight Llama instead")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--length", type=int, default=256, help="characters per prompt")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9, help="rounds of the plain and capture timings")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="append the dated table to this markdown file")
    args = parser.parse_args()

    model = random_llama(args.random_llama, args.device) if args.random_llama else load_model(args.model,
                                                                                               device=args.device)
    rng = random.Random(0)
    words = [("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 8)))) for _ in range(500)]
    prompts = []
    while len(prompts) < args.prompts:
        text = " ".join(rng.choices(words, k=args.length))[: args.length]
        prompts.append(text)
    ids = [model.tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    batches = []
    for start in range(0, len(ids), args.batch_size):
        rows = ids[start:start + args.batch_size]
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for r, row in enumerate(rows):
            input_ids[r, :len(row)], mask[r, :len(row)] = torch.tensor(row), 1
        batches.append((input_ids, mask))  # on the host, as record() hands them to the capture
    on_device = [(i.to(args.device), m.to(args.device)) for i, m in batches]
    layers = list(range(model.n_layers))
    n_tokens = sum(map(len, ids))

    def forward():
        with torch.no_grad():
            for input_ids, mask in on_device:
                model.hf(input_ids=input_ids, attention_mask=mask)

    def hooks_only():
        """The capture's pass alone: its hooks, and its stop after the last block (no final norm, no LM head)."""
        for input_ids, mask in on_device:
            capture(model, input_ids, mask, layers, summaries)

    def captured(config):
        """As record() captures: batch i + 1 is queued before batch i's host arrays are waited for."""
        def run():
            waiting = None
            for input_ids, mask in batches:
                queued = start_batch(model, input_ids, mask, layers, config)
                if waiting is not None:
                    waiting()
                waiting = queued
            waiting()
        return run

    # The size cap guards users' disks; a benchmark of 64 prompts of a 1B model goes past it on purpose.
    summaries = RecordConfig(batch_size=args.batch_size)
    vectors = RecordConfig(batch_size=args.batch_size, vectors=True, max_tensor_gb=1e3)
    results = interleaved({"plain forward": forward, "the capture's pass, hooks only": hooks_only,
                           "capture, summaries only": captured(summaries),
                           "capture, full residual vectors": captured(vectors)}, args.device, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.duckdb")
        results["record() into DuckDB, summaries only"] = timed(
            lambda: record(model, prompts, store, summaries, progress=False), args.device, 1)
        results["record() into DuckDB + Parquet, full vectors"] = timed(  # warm: the capture rows ran it
            lambda: record(model, prompts, store, vectors, progress=False), args.device, 1, warm_up=False)
        host = capture_batch(model, *batches[0], layers, vectors)
        lengths = [int(n) for n in batches[0][1].sum(1).tolist()]
        stats, tensors = batch_rows(0, list(range(len(lengths))), lengths, host, layers, vectors, True)
        stats_bytes, stats_rows = sum(t.nbytes for t in stats.values()), sum(t.num_rows for t in stats.values())
        ingest = timed(lambda: store.append_batch(0, stats), "cpu", args.repeats)

        def through_writer():  # as record() writes: every batch's rows through the background writer
            with store.writer(0) as writer:
                for _ in batches:
                    writer.submit(lambda: (stats, {}))

        gathered = timed(through_writer, "cpu", args.repeats)
        parquet = timed(lambda: store.append_batch(0, {}, {"bench": tensors["resid_post"]}), "cpu", 1, warm_up=False)

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({args.device})"
    lines = [
        f"### Recording overhead — {datetime.date.today()}, {device}",
        "",
        f"`python analyses/bench_recording.py {' '.join(sys.argv[1:])}` — model {model.spec} "
        f"({model.n_layers} layers, d_model {model.d_model}, {model.dtype}), {args.prompts} prompts, "
        f"{n_tokens} tokens, batch {args.batch_size}",
        "",
        "| what | seconds | ratio to plain forward |",
        "| --- | --- | --- |",
        *[f"| {name} | {t:.4f} | {t / results['plain forward']:.3f}x |" for name, t in results.items()],
        "",
        f"Ingest: per-token and per-prompt statistics into DuckDB {stats_bytes / ingest / 1e6:.0f} MB/s as one batch "
        f"a transaction ({stats_rows} rows), {stats_bytes * len(batches) / gathered / 1e6:.0f} MB/s through record()'s "
        f"background writer ({len(batches)} batches); residual vectors to Parquet "
        f"{tensors['resid_post'].nbytes / parquet / 1e6:.0f} MB/s.",
        "",
    ]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
