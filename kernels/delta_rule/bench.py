"""Benchmark the chunked delta rule against flash-linear-attention's `chunk_delta_rule`.

    python -m kernels.delta_rule.bench [--quick]

bf16, H=16, K=V=128, B=2 T=16k and B=1 T=64k, plain and gated (fla's chunk_gated_delta_rule), plus
one decode step (recurrent, B=8) against fla's fused_recurrent. Without fla installed the baseline
columns say so. Bandwidth counts this implementation's own traffic (q, k, v read, w and u in bf16
and q~, o~ in fp32 written and read back, k read again, o written).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels._bench import bench_main, max_rel_err, section, table, time_ms
from kernels.delta_rule import naive
from kernels.delta_rule.chunk import chunk_delta_rule
from kernels.delta_rule.recurrent import recurrent_delta_rule

H, D = 16, 128
SIZES = [(2, 16384), (1, 65536)]
QUICK = [(2, 16384)]
CHECK = {"b": 1, "t": 4096, "h": 4}
DECODE_B = 8


def load_fla():
    """fla's (chunk, chunk_gated, fused_recurrent) functions, or None when fla is not installed."""
    try:
        from fla.ops.delta_rule import chunk_delta_rule as fla_chunk
        from fla.ops.delta_rule import fused_recurrent_delta_rule as fla_recurrent
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_gated
    except ImportError:
        return None
    return fla_chunk, fla_gated, fla_recurrent


def fla_time(call, rep: int, notes: set) -> float | None:
    """Median ms of an fla call; None (and a note) if fla fails at run time, so the run goes on."""
    try:
        return time_ms(call, rep)
    except Exception as err:  # noqa: BLE001 - any failure of the optional baseline is reported, not fatal
        notes.add(f"fla failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}")
        return None


def make_inputs(b, t, h, device, dtype=torch.bfloat16):
    q = torch.randn(b, t, h, D, device=device, dtype=dtype)
    k = F.normalize(torch.randn(b, t, h, D, device=device, dtype=torch.float32), dim=-1).to(dtype)
    v = torch.randn(b, t, h, D, device=device, dtype=dtype)
    beta = torch.rand(b, t, h, device=device, dtype=dtype)
    g = F.logsigmoid(torch.randn(b, t, h, device=device, dtype=torch.float32)).mul(0.1).to(dtype)
    return q, k, v, beta, g


def check(device, fla) -> str:
    """Max relative error against the fp32 chunk form, between the two kernels, and against fla."""
    torch.manual_seed(0)
    b, t, h = CHECK["b"], CHECK["t"], CHECK["h"]
    q, k, v, beta, g = make_inputs(b, t, h, device)
    rows = []
    for gated in (False, True):
        gg = g if gated else None
        ref, ref_state = naive.chunkwise(q.float(), k.float(), v.float(), beta.float(),
                                         gg.float() if gated else None)
        o, state = chunk_delta_rule(q, k, v, beta, g=gg, output_final_state=True)
        o_split, _ = chunk_delta_rule(q, k, v, beta, g=gg, split_prepare=True)
        o_rec, _ = recurrent_delta_rule(q, k, v, beta, g=gg)
        label = "gated" if gated else "plain"
        rows += [[f"{label}: chunk kernel vs fp32", max_rel_err(o, ref)],
                 [f"{label}: chunk kernel, split prepare, vs fp32", max_rel_err(o_split, ref)],
                 [f"{label}: chunk kernel final state vs fp32", max_rel_err(state, ref_state)],
                 [f"{label}: recurrent kernel vs fp32", max_rel_err(o_rec, ref)],
                 [f"{label}: chunk vs recurrent kernel", max_rel_err(o, o_rec)]]
        if fla is not None:
            try:
                if gated:
                    fla_o, _ = fla[1](q=q, k=k, v=v, g=gg, beta=beta, output_final_state=False)
                else:
                    fla_o, _ = fla[0](q, k, v, beta, output_final_state=False)
            except Exception as err:  # noqa: BLE001 - the optional baseline must not stop the run
                rows.append([f"{label}: fla failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}", None])
                continue
            rows += [[f"{label}: fla vs fp32", max_rel_err(fla_o, ref)],
                     [f"{label}: chunk kernel vs fla", max_rel_err(o, fla_o)]]
    notes = [] if fla is not None else ["fla not installed: no comparison with chunk_delta_rule"]
    return section(f"delta_rule correctness (B={b}, T={t}, H={h}, K=V={D}, bf16)",
                   table(["what", "max rel err"], rows), notes)


def measure(b: int, t: int, gated: bool, fla, rep: int, bandwidth: float, device, notes: set) -> list:
    """One table row: the chunk forward against fla's, plain or gated."""
    q, k, v, beta, g = make_inputs(b, t, H, device)
    g = g if gated else None
    ms = time_ms(lambda: chunk_delta_rule(q, k, v, beta, g=g), rep)
    ms_split = time_ms(lambda: chunk_delta_rule(q, k, v, beta, g=g, split_prepare=True), rep)
    fla_ms = None
    if fla is not None:
        call = (lambda: fla[1](q=q, k=k, v=v, g=g, beta=beta)) if gated else (lambda: fla[0](q, k, v, beta))
        fla_ms = fla_time(call, rep, notes)
    nbytes = b * t * H * D * (2 * 9 + 4 * 4)
    return [b, t, "gated" if gated else "plain", ms, ms_split, fla_ms, fla_ms / ms if fla_ms else None,
            fla_ms / ms_split if fla_ms else None, nbytes / (ms * 1e-3) / bandwidth]


def measure_decode(fla, rep: int, bandwidth: float, device, notes: set) -> list:
    """One decode step (T = 1) of the recurrent kernel against fla's fused_recurrent."""
    q, k, v, beta, _ = make_inputs(DECODE_B, 1, H, device)
    state = torch.randn(DECODE_B, H, D, D, device=device)
    ms = time_ms(lambda: recurrent_delta_rule(q, k, v, beta, initial_state=state), rep)
    fla_ms = None
    if fla is not None:
        fla_ms = fla_time(lambda: fla[2](q, k, v, beta, initial_state=state, output_final_state=True), rep, notes)
    return [DECODE_B, 1, "decode step (recurrent)", ms, None, fla_ms, fla_ms / ms if fla_ms else None, None,
            2 * DECODE_B * H * D * D * 4 / (ms * 1e-3) / bandwidth]


def run(quick: bool, bandwidth: float, device: str = "cuda") -> list[str]:
    device = torch.device(device)
    rep = 50 if quick else 100
    fla = load_fla()
    rows, notes = [], set()
    for b, t in QUICK if quick else SIZES:
        for gated in (False, True):
            rows.append(measure(b, t, gated, fla, rep, bandwidth, device, notes))
            torch.cuda.empty_cache()
    rows.append(measure_decode(fla, rep, bandwidth, device, notes))
    notes = [*sorted(notes), "target: chunk forward at least as fast as fla (speedup >= 1)",
             "split prepare: the parallel pass as two kernels (see chunk.py); the faster should be the default",
             "fla columns: chunk_delta_rule / chunk_gated_delta_rule / fused_recurrent_delta_rule"]
    if fla is None:
        notes.append("fla not installed: baseline columns are n/a")
    body = table(["B", "T", "variant", "ours ms", "ours, split prepare ms", "fla ms", "speedup vs fla",
                  "speedup vs fla, split prepare", "ours BW / copy BW"], rows)
    return [check(device, fla), section(f"delta_rule forward vs fla (H={H}, K=V={D}, bf16)", body, notes)]


if __name__ == "__main__":
    bench_main(run, __doc__)
