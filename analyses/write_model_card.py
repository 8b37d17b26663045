"""Render the demo model's card (README.md) from the files its training run wrote.

    python analyses/write_model_card.py [--model data/models/demo]

Every number in the card is read from ``metrics.json`` and ``massive_by_checkpoint.csv``
in the model directory (both written by ``analyses/train_demo_model.py``); nothing is
typed in by hand, so re-running after a new training run keeps the card true.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

SUN_ABS, SUN_RATIO = 100.0, 1000.0  # Sun et al. (2024): |a| > 100 and about 1000x the median


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _continuation(text: str) -> str:
    """A sample as the card shows it; an empty one is the model ending the document (EOS) at once."""
    return text.strip() or ("*(none: the model ends the document here, as the corpus's short "
                            "everyday-sentence documents do)*")


def read_massive(path: Path) -> list[dict]:
    with path.open() as f:
        return [{**r, **{k: float(r[k]) for k in ("top_abs", "median_abs", "ratio")},
                 **{k: int(r[k]) for k in ("step", "tokens_seen", "layer", "top_position", "top_dim")}}
                for r in csv.DictReader(f)]


def massive_summary(rows: list[dict]) -> str:
    """Plain sentences on whether massive activations appear, and how they developed."""
    steps = sorted({r["step"] for r in rows})
    final = [r for r in rows if r["step"] == steps[-1]]
    top = max(final, key=lambda r: r["top_abs"])
    best = max(final, key=lambda r: r["ratio"])
    criterion = f"(|a| > {SUN_ABS:.0f} and > {SUN_RATIO:.0f}x the median)"
    relative = f"(> {SUN_RATIO:.0f}x the median at any magnitude)"
    sun = [str(r["layer"]) for r in final if r["top_abs"] > SUN_ABS and r["ratio"] > SUN_RATIO]
    rel = [str(r["layer"]) for r in final if r["ratio"] > SUN_RATIO]
    lines = [
        f"At the final checkpoint (step {steps[-1]:,}) the largest residual-stream activation is "
        f"|a| = {_num(top['top_abs'])} in layer {top['layer']} (dimension {top['top_dim']}, position "
        f"{top['top_position']}, token `{top['top_token']}`), {_num(top['ratio'])} times the median "
        f"|activation| of that layer ({top['median_abs']:.3g}).",
        f"By Sun et al.'s criterion {criterion} massive activations appear, in layers {', '.join(sun)}."
        if sun else f"By Sun et al.'s criterion {criterion} this model has no massive activations.",
        f"Read relatively only {relative} they appear in layers {', '.join(rel)}." if rel else
        f"Read relatively only {relative} none appear either; the largest ratio is {_num(best['ratio'])}, "
        f"in layer {best['layer']}.",
    ]
    ratio_at = {s: max(r["ratio"] for r in rows if r["step"] == s) for s in steps}
    lines.append(f"Over training the largest ratio across layers went from {_num(ratio_at[steps[0]])} at "
                 f"step {steps[0]} to {_num(ratio_at[steps[-1]])} at step {steps[-1]:,}.")
    trail = [r for s in steps for r in rows if r["step"] == s and r["layer"] == best["layer"]]
    since = next(r["step"] for i, r in enumerate(trail)
                 if all(t["top_dim"] == best["top_dim"] for t in trail[i:]))
    lines.append(f"In layer {best['layer']} the top activation has sat in dimension {best['top_dim']} since "
                 f"step {since:,} (of the checkpoints recorded).")
    return " ".join(lines)


def _intro(metrics: dict) -> list[str]:
    m, t, c = metrics["model"], metrics["training"], metrics["corpus"]
    cfg = t["config"]
    arch = [["architecture", f"{m['architecture']} (RMSNorm, RoPE, SwiGLU, grouped-query attention)"],
            ["layers", m["num_layers"]], ["hidden size", m["hidden_size"]],
            ["attention heads / KV heads", f"{m['num_heads']} / {m['num_kv_heads']}"],
            ["MLP size", m["intermediate_size"]], ["context length", m["context_length"]],
            ["vocabulary", f"{m['vocab_size']:,} tokens (byte-level BPE, digits split one by one; "
                           f"{m['embedding_rows']:,} embedding rows)"],
            ["parameters", f"{m['parameters']:,} (input and output embeddings tied)"],
            ["weights", m["dtype"]]]
    optimiser = (f"AdamW, peak lr {cfg['lr']}, {cfg['warmup_steps']} warm-up steps, cosine to "
                 f"{cfg['min_lr_ratio']} x peak, weight decay {cfg['weight_decay']}")
    training = [["steps", f"{t['steps']:,}"], ["tokens seen", f"{t['tokens_seen']:,}"],
                ["batch", f"{cfg['batch_size']} x {m['context_length']} tokens"], ["optimiser", optimiser],
                ["training time", f"{t['train_seconds']:.0f} s (whole script {t['total_seconds']:.0f} s)"],
                ["GPU", t["gpu"]], ["torch.compile", t["compiled"]],
                ["software", f"torch {t['torch']}, transformers {t['transformers']}"], ["seed", cfg["seed"]]]
    weights = ", ".join(f"{k} {v}" for k, v in c["retrieval_task_weights"].items())
    corpus = [[part, split, f"{v['documents']:,}", f"{v['tokens']:,}"]
              for part, splits in c["parts"].items() for split, v in splits.items()]
    return [
        "---", "library_name: transformers", "pipeline_tag: text-generation",
        "tags: [llama, interpretability, synthetic-data, delta-workbench]", "---", "",
        "# Delta Workbench demo model", "",
        "A small Llama-architecture language model trained from scratch on a corpus that the project "
        "generates from a seed (stories with known sentiment, topic and tense, and long-context retrieval "
        "tasks), so that the workbench opens on a real trained model with no download and its analyses have "
        "something true to find. Every number below was measured by `analyses/train_demo_model.py` (it is in "
        "`metrics.json` and `massive_by_checkpoint.csv` beside this card) and rendered by "
        "`analyses/write_model_card.py`.", "",
        "## Architecture", "", _table(["property", "value"], arch), "",
        "## Training", "", _table(["property", "value"], training), "",
        "## Corpus", "",
        f"Generated by `python analyses/build_corpus.py --seed {c['seed']} --size {c['size']}`; nothing is "
        "downloaded and no external text is used (the optional public-domain prose part is left out). "
        f"Each training batch is {_pct(c['training_mix']['retrieval'])} retrieval documents and "
        f"{_pct(c['training_mix']['stories'])} stories by rows, every row a window starting at a document "
        "start. Retrieval documents (128 to 1,024 tokens) are key-value recall, a pass key buried in story "
        "sentences, "
        f"and pointer chasing over one to three links (two in evaluation); task weights {weights}. Held-out "
        "splits are never trained on; story splits are disjoint sentence by sentence.", "",
        _table(["part", "split", "documents", "tokens"], corpus), "",
    ]


def _results(metrics: dict) -> list[str]:
    heldout = [[part, f"{v['loss']:.3f}", f"{v['perplexity']:.2f}"] for part, v in metrics["heldout"].items()]
    r = metrics["retrieval"]["by_length"]
    tasks = sorted({task for v in r.values() for task in v["by_task"]})
    longest = max(r, key=int)
    acc = r[longest]["accuracy"]
    retrieval = [[length, v["n"], f"{v['mean_tokens']:.0f}", _pct(v["accuracy"]),
                  *[_pct(v["by_task"][task]) for task in tasks]] for length, v in r.items()]
    concepts = [[name, v["best_layer"], _pct(v["test_accuracy"]),
                 " ".join(_pct(a) for a in v["test_accuracy_by_layer"]), v["n"]["train"], v["n"]["test"]]
                for name, v in metrics["concepts"].items()]
    sentiment = metrics["concepts"]["sentiment"]["test_accuracy"]
    return [
        "## Held-out loss", "", _table(["part", "loss (nats/token)", "perplexity"], heldout), "",
        "## Retrieval", "",
        "Greedy decoding after `Answer:` must reproduce the answer exactly; "
        f"{metrics['retrieval']['split']} split items, one question each.", "",
        _table(["context length", "items", "mean tokens", "accuracy", *tasks], retrieval), "",
        f"Target at {longest} tokens: at least 90%; measured {_pct(acc)} "
        f"({'met' if acc >= 0.9 else 'not met'}).",
        "", "## Concept separability", "",
        "A difference-of-means direction of the residual stream at the last token, fitted on the train "
        "sentences and thresholded halfway between the class means; the layer is chosen on validation and "
        "the accuracy reported on test.", "",
        _table(["concept", "best layer", "test accuracy", "test accuracy by layer", "train", "test"],
               concepts),
        "", f"Target for sentiment: at least 95%; measured {_pct(sentiment)} "
            f"({'met' if sentiment >= 0.95 else 'not met'}).", "",
    ]


def _massive(massive: list[dict]) -> list[str]:
    final_step = max(r["step"] for r in massive)
    per_step = [max((r for r in massive if r["step"] == s), key=lambda r: r["ratio"])
                for s in sorted({r["step"] for r in massive})]
    a = "\\|a\\|"  # a pipe inside a table cell must be escaped
    trajectory = [[f"{r['step']:,}", f"{r['tokens_seen']:,}", r["layer"], f"{r['top_abs']:.3g}",
                   _num(r["ratio"]), r["top_dim"], r["top_position"], f"`{r['top_token']}`"]
                  for r in per_step]
    final = [[r["layer"], f"{r['top_abs']:.3g}", r["top_position"], r["top_dim"], f"`{r['top_token']}`",
              f"{r['median_abs']:.3g}", _num(r["ratio"])] for r in massive if r["step"] == final_step]
    return [
        "## Massive activations", "",
        "Per layer, over four fixed prompts (`workbench.demo_model.MASSIVE_PROMPTS`): the largest "
        "|activation| of the block's output, where it sits, the median |activation|, and their ratio.", "",
        massive_summary(massive), "",
        _table(["step", "tokens seen", "layer with largest ratio", f"top {a}", "ratio", "dim", "position",
                "token"], trajectory), "",
        f"Final checkpoint (step {final_step:,}), every layer:", "",
        _table(["layer", f"top {a}", "position", "dim", "token", f"median {a}", "ratio"], final), "",
    ]


def render(metrics: dict, massive: list[dict]) -> str:
    t = metrics["training"]
    out = _intro(metrics) + _results(metrics) + _massive(massive)
    out += ["## Samples", "", "Greedy and sampled (temperature 0.8) continuations of story prompts.", ""]
    for s in metrics["samples"]:
        out += [f"- **{s['prompt']}**",
                *(f"  - {kind}: {_continuation(s[kind])}" for kind in ("greedy", "sampled"))]
    shipped = ", ".join(f"{s:,}" for s in t["shipped_checkpoints"])
    out += ["", "## Files and reproduction", "",
            "`model.safetensors`, `config.json`, `generation_config.json` and the tokenizer files load with "
            "`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`; the tokenizer "
            f"prepends `<s>` itself. Checkpoints at steps {shipped} ship in the sibling directory "
            "`demo-checkpoints/`. "
            "`heldout_retrieval.jsonl` holds test-split retrieval items for smoke tests.", "",
            "```", f"python analyses/train_demo_model.py --out data/models/demo --seed {t['config']['seed']} "
            f"--minutes {t['config']['minutes']:g}",
            "python analyses/write_model_card.py --model data/models/demo", "```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="data/models/demo",
                        help="model directory (default: data/models/demo)")
    args = parser.parse_args(argv)
    model = Path(args.model)
    missing = [n for n in ("metrics.json", "massive_by_checkpoint.csv") if not (model / n).exists()]
    if missing:
        parser.error(f"{model} lacks {', '.join(missing)}: run analyses/train_demo_model.py --out {model}")
    metrics = json.loads((model / "metrics.json").read_text())
    card = render(metrics, read_massive(model / "massive_by_checkpoint.csv"))
    (model / "README.md").write_text(card)
    print(f"wrote {model / 'README.md'} ({len(card.splitlines())} lines)")
    return card


if __name__ == "__main__":
    main()
