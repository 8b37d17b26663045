"""Prefill of a Qwen3-Next-style model with each Gated DeltaNet rule: transformers' PyTorch fallback,
flash-linear-attention (where it is installed) and the workbench kernel (`load_model(..., delta_kernel="workbench")`).

    python analyses/bench_gated_delta.py                                 # hidden 2048, 16k and 64k tokens
    python analyses/bench_gated_delta.py --shape tiny --device cpu --lengths 128   # a smoke run

The model is random (nothing downloaded), saved and loaded through `load_model` as a user loads one: Qwen3-Next's
layer pattern (three Gated DeltaNet layers, then one gated softmax attention layer) at hidden 2048, the Gated
DeltaNet layers with 16 query/key heads and 16 value heads of 128, softmax attention with 16 heads of 256 and 2 KV
heads, dense MLPs of 5632, vocabulary 32000, bf16, batch 1. A prefill computes the last position's logits only
(logits_to_keep=1), as generation does. For each rule and length it prints the milliseconds of the whole forward
and of one layer's rule call on that layer's own inputs, the ratio to the fastest other rule measured in the same
run, the ceiling (the FLOPs of the forward, or of the rule, at the GPU's measured bf16 matmul rate, or the bytes it
must move at the measured copy bandwidth, whichever takes longer), and the error of
the last position's logits and of the rule's output against the PyTorch fallback, which computes in fp32.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.deltanet.gated import gated_rule, replace_while_running  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.random_models import char_tokenizer  # noqa: E402

SHAPES = {  # hidden, layers, delta heads, delta head dim, attention heads, kv heads, attention head dim, mlp, vocab
    "qwen3-next": (2048, 4, 16, 128, 16, 2, 256, 5632, 32000),
    "tiny": (64, 4, 2, 16, 2, 1, 16, 128, 128),
}
CHUNK = 64  # the chunk of every chunked rule here


def save_model(shape: str, folder: Path) -> Path:
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    hidden, layers, dh, dd, ah, kv, ad, mlp, vocab = SHAPES[shape]
    config = Qwen3NextConfig(
        hidden_size=hidden, num_hidden_layers=layers, vocab_size=vocab, intermediate_size=mlp,
        layer_types=["linear_attention" if (i + 1) % 4 else "full_attention" for i in range(layers)],
        linear_num_key_heads=dh, linear_num_value_heads=dh, linear_key_head_dim=dd, linear_value_head_dim=dd,
        num_attention_heads=ah, num_key_value_heads=kv, head_dim=ad, mlp_only_layers=list(range(layers)),
        max_position_embeddings=1 << 20, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    Qwen3NextForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def fallback_rules(model) -> list:
    """Make every Gated DeltaNet layer of `model` run transformers' PyTorch fallback (not fla) while the returned
    hook handles are in place."""
    handles = []
    for layer in range(model.n_layers):
        mixer = model.module("attn", layer)
        if rule := gated_rule(mixer):
            torch_rule = vars(sys.modules[type(mixer).__module__])[rule.chunk.name]
            torch_rule = getattr(torch_rule, "__wrapped__", torch_rule)  # past transformers' fla dispatch
            handles += replace_while_running(mixer, rule.chunk, lambda _, f=torch_rule: f)
    return handles


def first_rule_call(model, ids) -> tuple:
    """(rule function, args, kwargs) of the first Gated DeltaNet layer's chunked rule call on `ids`."""
    mixer = next(m for i in range(model.n_layers) if gated_rule(m := model.module("attn", i)))
    seen = []

    def spy(original):
        def call(*args, **kwargs):
            seen.append((original, args, kwargs))
            return original(*args, **kwargs)
        return call
    handles = replace_while_running(mixer, gated_rule(mixer).chunk, spy)
    with torch.no_grad():
        model.hf(input_ids=ids, logits_to_keep=1)
    for handle in handles:
        handle.remove()
    return seen[0]


def work(shape: str, t: int) -> dict[str, tuple[float, float]]:
    """{"forward": (FLOPs, bytes), "rule, one layer": (FLOPs, bytes)} at length t. FLOPs: the projections and MLPs
    (2 a weight a token), causal softmax attention (QK and PV over half the T x T pairs), and the chunked rule
    (per chunk of C: k k^T, q k^T, the triangular inverse, w and u, the state pass's w S and k^T e, the output's
    q S and P e). Bytes, the least each must move: the forward its bf16 weights and each layer's input and output
    [T, hidden]; the rule q, k, v in and o out in bf16, beta and g in fp32."""
    hidden, layers, dh, dd, ah, kv, ad, mlp, vocab = SHAPES[shape]
    n_delta = sum(1 for i in range(layers) if (i + 1) % 4)
    delta_weights = hidden * (4 * dh * dd + 2 * dh) + dh * dd * hidden  # in_proj_qkvz, in_proj_ba, out_proj
    attn_weights = hidden * (2 * ah * ad + 2 * kv * ad) + ah * ad * hidden  # q with its gate, k, v, o
    weights = n_delta * delta_weights + (layers - n_delta) * attn_weights + layers * 3 * hidden * mlp
    attention = (layers - n_delta) * 2 * t * t * ah * ad  # 4 T^2/2 H d
    c = CHUNK
    rule_per_token = dh * (2 * c * (3 * dd + 2 * dd) + 6 * dd * dd + 2 * c * c / 3)
    rule = rule_per_token * t
    rule_bytes = t * dh * (4 * dd * 2 + 2 * 4)
    forward_bytes = 2 * (weights + hidden * vocab) + layers * 2 * t * hidden * 2
    return {"forward": (2 * weights * t + 2 * hidden * vocab + attention + n_delta * rule, forward_bytes),
            "rule, one layer": (rule, rule_bytes)}


def timer(device: str):
    """Median ms of fn(): on CUDA `workbench_kernels._bench.time_ms` (L2 flushed, warmed up); on a CPU (a smoke
    run) one warm-up call and three timed ones."""
    if device.startswith("cuda"):
        from workbench_kernels._bench import time_ms
        return lambda fn: time_ms(fn, rep_ms=300)

    def cpu(fn):
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return sorted(times)[1]
    return cpu


def max_rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=SHAPES, default="qwen3-next")
    p.add_argument("--lengths", default="16384,65536", help="comma-separated prompt lengths")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")]
    ms = timer(args.device)
    peak = bandwidth = None
    if args.device.startswith("cuda"):
        from workbench_kernels._bench import copy_bandwidth, matmul_flops
        peak, bandwidth = matmul_flops(args.device), copy_bandwidth(args.device)
    with tempfile.TemporaryDirectory() as folder:
        path = str(save_model(args.shape, Path(folder)))
        own = load_model(path, device=args.device, dtype="bfloat16")
        ours = load_model(path, device=args.device, dtype="bfloat16", delta_kernel="workbench")
    # transformers runs flash-linear-attention's rule wherever fla imports and the inputs are on CUDA
    fla = importlib.util.find_spec("fla") is not None and args.device.startswith("cuda")
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"## Gated DeltaNet prefill: {args.shape} (hidden {SHAPES[args.shape][0]}, {SHAPES[args.shape][1]} "
          f"layers), bf16, B=1, {gpu}\n")
    print(f"`python analyses/bench_gated_delta.py {' '.join(argv if argv is not None else sys.argv[1:])}`; the "
          f"model's own rule here: {'flash-linear-attention' if fla else 'transformers PyTorch fallback'}"
          f"{'' if fla else ' (no fla column)'}\n")
    print("| T | what | torch fallback ms | fla ms | workbench ms | workbench vs fastest other | ceiling ms "
          "(FLOPs at matmul peak, bytes at copy bandwidth) | workbench / ceiling | logits err vs fallback | "
          "rule err vs fallback |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t in lengths:
        ids = torch.randint(3, SHAPES[args.shape][8], (1, t), device=args.device)
        results = {}
        handles = fallback_rules(own)
        try:
            results["fallback"] = _measure(own, ids, ms)
        finally:
            for handle in handles:
                handle.remove()
        if fla:
            results["fla"] = _measure(own, ids, ms)
        results["workbench"] = _measure(ours, ids, ms)
        ref_logits, ref_out = results["fallback"][2], results["fallback"][3]
        for index, (what, (flops, moved)) in enumerate(work(args.shape, t).items()):
            times = {name: r[index] for name, r in results.items()}
            others = min(v for k, v in times.items() if k != "workbench")
            ceiling = max(flops / peak, moved / bandwidth) * 1e3 if peak else None
            errs = "" if index else (f"{max_rel_err(results['workbench'][2], ref_logits):.2e} | "
                                     f"{max_rel_err(results['workbench'][3], ref_out):.2e}")
            print(f"| {t} | {what} | {times['fallback']:.2f} | {_cell(times.get('fla'))} | {times['workbench']:.2f} "
                  f"| {others / times['workbench']:.2f}x | {_cell(ceiling, 3)} | "
                  f"{_cell(times['workbench'] / ceiling if ceiling else None)}{'x' if ceiling else ''} | "
                  f"{errs or ' | '} |")
        if fla:
            print(f"\nfla at T={t}: logits err vs fallback {max_rel_err(results['fla'][2], ref_logits):.2e}, rule err "
                  f"{max_rel_err(results['fla'][3], ref_out):.2e}\n")
        del results
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return 0


def _measure(model, ids, ms) -> tuple:
    """(ms of the forward, ms of one layer's rule call, last logits, that rule call's output) for `model` as its
    rules are set now."""
    rule, rule_args, rule_kwargs = first_rule_call(model, ids)
    with torch.no_grad():
        forward = ms(lambda: model.hf(input_ids=ids, logits_to_keep=1))
        logits = model.hf(input_ids=ids, logits_to_keep=1).logits
        rule_ms = ms(lambda: rule(*rule_args, **rule_kwargs))
        out = rule(*rule_args, **rule_kwargs)[0]
    return forward, rule_ms, logits, out


def _cell(x, digits=2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
