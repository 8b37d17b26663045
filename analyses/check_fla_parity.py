"""Check that flash-linear-attention's DeltaNet models load in the workbench and compute the same logits.

    python analyses/check_fla_parity.py            # needs CUDA and flash-linear-attention

Builds random DeltaNet models with fla's own classes (plain and with the output gate; fla's softmax
attention layers need flash-attn, so the hybrid layers are compared through our model alone), saves them
in fla's Hugging Face format, loads each with `workbench.load_model`, and prints the largest logit
difference against fla's model: with our Triton delta-rule kernel, and with fla's kernel swapped into our
model (which isolates the rest of the modelling code).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def compare(fla_config: dict, dtype: torch.dtype, seq: int) -> dict:
    from fla.models import DeltaNetConfig as FlaConfig
    from fla.models import DeltaNetForCausalLM as FlaModel
    from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule

    import workbench
    from workbench import deltanet
    from workbench.deltanet.modeling import DeltaRule

    torch.manual_seed(0)
    reference = FlaModel(FlaConfig(**fla_config)).cuda().eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, "<unk>")),
                                unk_token="<unk>").save_pretrained(folder)
        deltanet.register()  # importing fla registered its own classes for "delta_net"
        ours = workbench.load_model(folder, device="cuda", dtype=dtype)
    reference = reference.to(dtype)
    ids = torch.randint(0, fla_config["vocab_size"], (2, seq), device="cuda")
    with torch.no_grad():
        want = reference(ids).logits.float()
        got = ours.hf(ids).logits.float()
        for module in ours.hf.modules():
            if isinstance(module, DeltaRule):
                module.function = fused_recurrent_delta_rule if seq <= 64 else chunk_delta_rule  # as fla's layer
        swapped = ours.hf(ids).logits.float()
    scale = want.abs().max().item()
    return {"kind": type(ours.hf).__name__, "max_abs_logit": scale,
            "ours_vs_fla": (got - want).abs().max().item(), "ours_with_fla_rule_vs_fla": (swapped - want).abs().max().item()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (fla's kernels are Triton on CUDA)")
    base = {"vocab_size": 512, "hidden_size": 256, "num_hidden_layers": 2, "num_heads": 4, "fuse_cross_entropy": False}
    rows = []
    for name, extra in (("DeltaNet", {}), ("DeltaNet, output gate", {"use_gate": True})):
        # fla's chunk kernel refuses fp32; fla's layer runs its recurrent kernel (which takes fp32) up to 64 tokens
        for dtype, seq in ((torch.float32, 64), (torch.bfloat16, 300)):
            row = {"model": name, "dtype": str(dtype).removeprefix("torch."), "tokens": seq,
                   **compare({**base, **extra}, dtype, seq)}
            rows.append(row)
    print("| model | dtype | tokens | max abs logit | ours vs fla | ours with fla's rule vs fla |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['dtype']} | {r['tokens']} | {r['max_abs_logit']:.3g} | {r['ours_vs_fla']:.2e} | "
              f"{r['ours_with_fla_rule_vs_fla']:.2e} |")
    return rows


if __name__ == "__main__":
    main()
