"""Benchmark the attention summaries kernel against a flash-attention forward of the same prompt.

    python -m workbench_kernels.attention_tiles.bench [--quick]

B=1, Hq=32, Hkv=8, D=128, bf16, T in {32k, 128k}, tiles of T/128 tokens (a 128 x 128 map per head, what the
recording keeps). The baseline is dense causal SDPA (the faster of flash and cuDNN, which also computes P V);
the target is at most about 2x its time. The ceiling is the summaries' FLOPs (two causal QK^T passes) at the
measured bf16 matmul peak.
"""

from __future__ import annotations

import torch

from workbench_kernels._bench import bench_main, dense_ms, matmul_flops, max_rel_err, section, table, time_ms
from workbench_kernels.attention_tiles import naive
from workbench_kernels.attention_tiles.tiles import tile_summaries
from workbench_kernels.results import Report, Result

HQ, HKV, D, TILES = 32, 8, 128, 128
SIZES = (32768, 131072)
QUICK = (32768,)
CHECK = {"t": 2048, "hq": 8, "hkv": 2}


def check(device) -> str:
    """Max relative error of each summary against the fp32 reference, from bf16 inputs."""
    torch.manual_seed(0)
    t, hq, hkv = CHECK["t"], CHECK["hq"], CHECK["hkv"]
    q = torch.randn(1, hq, t, D, device=device, dtype=torch.bfloat16)
    k = torch.randn(1, hkv, t, D, device=device, dtype=torch.bfloat16)
    block = max(16, t // TILES)
    ref = naive.tile_summaries(q.float(), k.float(), block, block)
    got = tile_summaries(q, k, block)
    rows = [[name, max_rel_err(got[name], ref[name])] for name in ("tiles", "sink", "entropy", "distance")]
    return section(f"attention summaries correctness (T={t}, Hq={hq}, Hkv={hkv}, tiles of {block}, bf16)",
                   table(["summary", "max rel err vs fp32"], rows))


def run(quick: bool, bandwidth: float, device: str = "cuda") -> Report:
    device = torch.device(device)
    rep = 50 if quick else 500
    rows, results, notes = [], [], set()
    for t in QUICK if quick else SIZES:
        q = torch.randn(1, HQ, t, D, device=device, dtype=torch.bfloat16)
        k, v = (torch.randn(1, HKV, t, D, device=device, dtype=torch.bfloat16) for _ in range(2))
        dense = dense_ms(q, k, v, rep, notes)
        best = min(dense.values(), default=None)
        block = max(16, t // TILES)
        ms = time_ms(lambda: tile_summaries(q, k, block), rep)
        flops = 2 * 2 * D * HQ * t * (t + 1) / 2  # two causal QK^T passes
        results.append(Result("attention_tiles", f"attention summaries, tiles of {block} tokens",
                              f"B=1 T={t} Hq={HQ} Hkv={HKV} D={D} bf16", ms,
                              "dense causal SDPA forward, faster of flash and cuDNN", best,
                              "bf16 matmul peak (measured)", flops / (ms * 1e-3) / matmul_flops(str(device))))
        rows.append([t, dense.get("flash"), dense.get("cudnn"), ms, ms / best if best else None])
        del q, k, v
        if device.type == "cuda":
            torch.cuda.empty_cache()
    body = table(["T", "dense flash ms", "dense cuDNN ms", "summaries ms", "summaries / faster dense"], rows)
    return Report([check(device), section(f"attention summaries vs dense causal SDPA (B=1, Hq={HQ}, Hkv={HKV}, "
                                          f"D={D}, bf16)", body, [*sorted(notes), "target: <= about 2x dense"])],
                  results)


if __name__ == "__main__":
    bench_main(run, __doc__)
