"""Every capability on a representative set of architectures, one of each structural kind, as tiny random
instances: the CI share of the sweep that writes docs/MODELS.md (`python analyses/model_coverage.py`)."""

import pytest

from workbench.coverage import CAPABILITIES, check_architecture

REPRESENTATIVE = [
    "gpt2", "gpt_bigcode", "gptj", "bloom", "opt",  # GPT-2 style, fused QKV, blocks adding the residual, no MLP module
    "llama", "qwen2", "qwen3", "gemma", "granite", "smollm3", "olmo", "olmo2", "phi3", "starcoder2",  # rotary
    "gpt_neox", "phi", "cohere", "falcon",  # parallel attention and MLP
    "mistral", "gemma3_text",  # sliding window
    "gemma2",  # logit soft-capping
    "mixtral", "qwen3_moe", "olmoe",  # mixture of experts
    "deepseek_v3",  # multi-head latent attention
    "hy_v4", "gemma3n_text",  # several residual streams (hyper-connections, AltUp)
    "bert", "roberta", "modernbert",  # encoders
]


@pytest.mark.parametrize("model_type", REPRESENTATIVE)
def test_every_capability_runs_and_checks_out(model_type):
    result = check_architecture(model_type)
    failures = {name: outcome for name, outcome in result.items() if outcome.startswith("FAIL")}
    assert not failures, failures
    assert list(result) == list(CAPABILITIES)
    assert result["record"] == result["parity"] == "ok"
    if model_type in ("bert", "roberta", "modernbert"):
        assert result["steering"].startswith("n/a") and result["sparse"].startswith("n/a")
    else:
        assert result["steering"] == "ok"


def test_a_capability_that_fails_is_reported_with_its_reason(monkeypatch):
    """A broken capability is a FAIL with the error's reason, and the others still run."""
    from workbench import coverage

    def broken(*args):
        raise RuntimeError("the store is gone")

    monkeypatch.setattr(coverage, "_massive", broken)
    result = check_architecture("llama")
    assert result["massive"].startswith("FAIL: RuntimeError: the store is gone")
    assert result["steering"] == "ok" and result["export"] == "ok"


def test_the_readme_quotes_the_sweeps_totals():
    """docs/MODELS.md is written by the sweep; the README states the same totals."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    headline = re.search(r"\*\*(\d+) of (\d+) architectures \((\d+)%\) pass record \+ parity \+ steering\*\*",
                         (root / "docs" / "MODELS.md").read_text())
    assert headline, "docs/MODELS.md has no totals line: run python analyses/model_coverage.py"
    passed, total, share = headline.groups()
    assert f"{passed} of the {total} architectures ({share}%)" in (root / "README.md").read_text()
