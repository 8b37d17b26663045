"""Benchmark the chunked delta rule against flash-linear-attention's `chunk_delta_rule`.

    python -m workbench_kernels.delta_rule.bench [--quick]            # the default config against fla
    python -m workbench_kernels.delta_rule.bench --sweep [--quick]    # every config in SWEEP against fla

bf16, H=16, K=V=128, B=2 T=16k and B=1 T=64k, plain and gated (fla's chunk_gated_delta_rule), plus
one decode step (recurrent, B=8) against fla's fused_recurrent. Without fla installed the baseline
columns say so. Bandwidth counts this implementation's own traffic (see `traffic`).

The sweep times each config of SWEEP (overrides of chunk.DEFAULT_CONFIG) in the same run as fla, and
gives each its error at B=1 T=4096 H=4: max relative error against the fp32 chunk form, and the
tests' criterion, its RMS error over the RMS error of the plain-PyTorch bf16 recurrence (must be <= 2).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from workbench_kernels._bench import bench_main, max_rel_err, section, table, time_ms
from workbench_kernels.delta_rule import naive
from workbench_kernels.delta_rule.chunk import DEFAULT_CONFIG, chunk_delta_rule
from workbench_kernels.delta_rule.recurrent import recurrent_delta_rule
from workbench_kernels.results import Report, Result

H, D = 16, 128
SIZES = [(2, 16384), (1, 65536)]
QUICK = [(2, 16384)]
CHECK = {"b": 1, "t": 4096, "h": 4}
DECODE_B = 8
WIDE = {"low_state": False, "low_qs": False, "low_pe": False, "fp32_states": True, "fp32_vnew": True,
        "state_stages": 2}  # three stages spill with fp32 operands
SWEEP = {  # overrides of chunk.DEFAULT_CONFIG (32-column state slices, 4 stages, w/u products on fp16 operands,
    # the gated output kernel capped at 128 registers)
    "default": {},
    "state BV=64": {"block_v": 64},
    "state BV=16": {"block_v": 16},
    "state 3 stages": {"state_stages": 3},
    "gated output uncapped": {"gated_out_maxnreg": None},
    "3 stages, uncapped (the previous default)": {"state_stages": 3, "gated_out_maxnreg": None},
}


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


def fla_call(fla, q, k, v, beta, g):
    return fla[1](q=q, k=k, v=v, g=g, beta=beta) if g is not None else fla[0](q, k, v, beta)


def make_inputs(b, t, h, device, dtype=torch.bfloat16):
    q = torch.randn(b, t, h, D, device=device, dtype=dtype)
    k = F.normalize(torch.randn(b, t, h, D, device=device, dtype=torch.float32), dim=-1).to(dtype)
    v = torch.randn(b, t, h, D, device=device, dtype=dtype)
    beta = torch.rand(b, t, h, device=device, dtype=dtype)
    g = F.logsigmoid(torch.randn(b, t, h, device=device, dtype=torch.float32)).mul(0.1).to(dtype)
    return q, k, v, beta, g


def traffic(b: int, t: int, config: dict | None = None) -> int:
    """Bytes the three kernels move at bf16: prepare reads k, v, writes w, u; the state pass reads
    k, w, u, writes the per-chunk states (K*V per 64 tokens) and e; the output pass reads q, k, the
    states and e, writes o."""
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    row = H * D * 2  # one bf16 [H, D] row per token
    states = b * t * H * D * D // 64 * (4 if cfg["fp32_states"] else 2)
    e = b * t * row * (2 if cfg["fp32_vnew"] else 1)
    return b * t * row * (4 + 3 + 3) + 2 * states + 2 * e


def rms(x: torch.Tensor) -> float:
    return x.double().pow(2).mean().sqrt().item()


def errors(device, configs: dict, fla) -> list[list]:
    """Per config: max rel err vs the fp32 chunk form and RMS error over plain PyTorch bf16's, plain and gated."""
    torch.manual_seed(0)
    q, k, v, beta, g = make_inputs(CHECK["b"], CHECK["t"], CHECK["h"], device)
    rows = {name: [name] for name in [*configs, *(["fla"] if fla is not None else [])]}
    for gated in (False, True):
        gg = g if gated else None
        ref, _ = naive.chunkwise(q.float(), k.float(), v.float(), beta.float(), gg.float() if gated else None)
        base = rms(naive.recurrence(q, k, v, beta, gg)[0].double() - ref.double())
        calls = {name: lambda cfg=cfg, gg=gg: chunk_delta_rule(q, k, v, beta, g=gg, config=cfg)
                 for name, cfg in configs.items()}
        if fla is not None:
            calls["fla"] = lambda gg=gg: fla_call(fla, q, k, v, beta, gg)
        outs = {}
        for name, call in calls.items():
            try:
                outs[name] = call()[0]
            except Exception:  # noqa: BLE001 - a broken config (reported by the timing table) costs its cells
                outs[name] = None
        for name, row in rows.items():
            o = outs.get(name)
            row += [None, None] if o is None else [max_rel_err(o, ref), rms(o.double() - ref.double()) / base]
    return list(rows.values())


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
        o_rec, _ = recurrent_delta_rule(q, k, v, beta, g=gg)
        label = "gated" if gated else "plain"
        rows += [[f"{label}: chunk kernel vs fp32", max_rel_err(o, ref)],
                 [f"{label}: chunk kernel final state vs fp32", max_rel_err(state, ref_state)],
                 [f"{label}: recurrent kernel vs fp32", max_rel_err(o_rec, ref)],
                 [f"{label}: chunk vs recurrent kernel", max_rel_err(o, o_rec)]]
        if fla is not None:
            try:
                fla_o, _ = fla_call(fla, q, k, v, beta, gg)
            except Exception as err:  # noqa: BLE001 - the optional baseline must not stop the run
                rows.append([f"{label}: fla failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}", None])
                continue
            rows += [[f"{label}: fla vs fp32", max_rel_err(fla_o, ref)],
                     [f"{label}: chunk kernel vs fla", max_rel_err(o, fla_o)]]
    notes = [] if fla is not None else ["fla not installed: no comparison with chunk_delta_rule"]
    return section(f"delta_rule correctness (B={b}, T={t}, H={h}, K=V={D}, bf16)",
                   table(["what", "max rel err"], rows), notes)


def measure(b: int, t: int, gated: bool, fla, rep: int, bandwidth: float, device, notes: set) -> list:
    """One table row: the chunk forward against fla's, plain or gated (a result: `as_result`)."""
    q, k, v, beta, g = make_inputs(b, t, H, device)
    g = g if gated else None
    ms = time_ms(lambda: chunk_delta_rule(q, k, v, beta, g=g), rep)
    fla_ms = fla_time(lambda: fla_call(fla, q, k, v, beta, g), rep, notes) if fla is not None else None
    return [b, t, "gated" if gated else "plain", ms, fla_ms, fla_ms / ms if fla_ms else None,
            traffic(b, t) / (ms * 1e-3) / bandwidth]


def measure_decode(fla, rep: int, bandwidth: float, device, notes: set) -> list:
    """One decode step (T = 1) of the recurrent kernel against fla's fused_recurrent."""
    q, k, v, beta, _ = make_inputs(DECODE_B, 1, H, device)
    state = torch.randn(DECODE_B, H, D, D, device=device)
    ms = time_ms(lambda: recurrent_delta_rule(q, k, v, beta, initial_state=state), rep)
    fla_ms = None
    if fla is not None:
        fla_ms = fla_time(lambda: fla[2](q, k, v, beta, initial_state=state, output_final_state=True), rep, notes)
    return [DECODE_B, 1, "decode step (recurrent)", ms, fla_ms, fla_ms / ms if fla_ms else None,
            2 * DECODE_B * H * D * D * 4 / (ms * 1e-3) / bandwidth]


def as_result(row: list) -> Result:
    """A table row of `measure` or `measure_decode` as a result against fla."""
    b, t, variant, ms, fla_ms, _, fraction = row
    return Result("delta_rule", f"delta rule forward, {variant}", f"B={b} T={t} H={H} K=V={D} bf16", ms,
                  "flash-linear-attention", fla_ms, "copy bandwidth", fraction)


def run(quick: bool, bandwidth: float, device: str = "cuda") -> Report:
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
             "fla columns: chunk_delta_rule / chunk_gated_delta_rule / fused_recurrent_delta_rule",
             "`python -m workbench_kernels.delta_rule.bench --sweep` times the other configs"]
    if fla is None:
        notes.append("fla not installed: baseline columns are n/a")
    body = table(["B", "T", "variant", "ours ms", "fla ms", "speedup vs fla", "ours BW / copy BW"], rows)
    return Report([check(device, fla), section(f"delta_rule forward vs fla (H={H}, K=V={D}, bf16)", body, notes)],
                  [as_result(row) for row in rows])


def sweep_case(b: int, t: int, gated: bool, configs: dict, fla, rep: int, device, notes: set) -> tuple:
    """(fla ms, {config name: ms or None}) at one size, each printed as measured (a cut-short run keeps them)."""
    q, k, v, beta, g = make_inputs(b, t, H, device)
    g = g if gated else None
    fla_ms = fla_time(lambda: fla_call(fla, q, k, v, beta, g), rep, notes) if fla is not None else None
    times = {}
    for name, cfg in configs.items():
        try:
            times[name] = time_ms(lambda cfg=cfg: chunk_delta_rule(q, k, v, beta, g=g, config=cfg), rep)
        except Exception as err:  # noqa: BLE001 - one broken config costs one cell, not the sweep
            notes.add(f"{name}: {type(err).__name__}: {str(err).splitlines()[0][:80]}")
            times[name] = None
        print(f"sweep B={b} T={t} {'gated' if gated else 'plain'} {name}: {times[name]} ms, fla {fla_ms} ms",
              flush=True)
    return fla_ms, times


def sweep(quick: bool, bandwidth: float, device: str = "cuda", configs: dict | None = None) -> list[str]:
    """Every config against fla: one table of times (ms, fla's row first), one of errors."""
    device = torch.device(device)
    configs = SWEEP if configs is None else configs
    rep = 50 if quick else 100
    fla = load_fla()
    notes = set()
    err_rows = errors(device, configs, fla)  # first: a run cut short by its time limit still has them
    err_section = section(f"delta_rule sweep errors (B={CHECK['b']}, T={CHECK['t']}, H={CHECK['h']}; vs fp32 chunk form)",
                          table(["config", "plain max rel err", "plain RMS / torch bf16 RMS", "gated max rel err",
                                 "gated RMS / torch bf16 RMS"], err_rows),
                          ["the tests require RMS / torch bf16 RMS <= 2 (on their own inputs)"])
    print(err_section, flush=True)
    cases = [(b, t, gated) for b, t in (QUICK if quick else SIZES) for gated in (False, True)]
    times = {name: [name] for name in [*(["fla"] if fla is not None else []), *configs]}
    best = {}
    for b, t, gated in cases:
        fla_ms, case = sweep_case(b, t, gated, configs, fla, rep, device, notes)
        if fla is not None:
            times["fla"] += [fla_ms, None]
        for name, ms in case.items():
            times[name] += [ms, fla_ms / ms if fla_ms and ms else None]
            if ms is not None and ms < best.get((b, t, gated), (None, float("inf")))[1]:
                best[(b, t, gated)] = (name, ms)
        torch.cuda.empty_cache()
    heads = ["config"]
    for b, t, gated in cases:
        label = f"B={b} T={f'{t // 1024}k' if t % 1024 == 0 else t} {'gated' if gated else 'plain'}"
        heads += [f"{label} ms", f"{label} fla/ours"]
    overrides = [f"- {name}: {cfg or 'DEFAULT_CONFIG'}" for name, cfg in configs.items()]
    fastest = [f"fastest B={b} T={t} {'gated' if g else 'plain'}: {n} ({ms:.3f} ms)"
               for (b, t, g), (n, ms) in best.items()]
    return [section(f"delta_rule config sweep vs fla (H={H}, K=V={D}, bf16)", table(heads, list(times.values())),
                    [*sorted(notes), *fastest, "fla/ours > 1: ours is faster"]),
            err_section,
            "configs (overrides of chunk.DEFAULT_CONFIG = " + str(DEFAULT_CONFIG) + "):\n\n" + "\n".join(overrides) + "\n"]


if __name__ == "__main__":
    if "--sweep" in sys.argv:
        sys.argv.remove("--sweep")
        bench_main(sweep, __doc__)
    else:
        bench_main(run, __doc__)
