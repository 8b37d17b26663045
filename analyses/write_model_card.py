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
    lines = [f"At the final checkpoint (step {steps[-1]:,}) the largest residual-stream activation is "
             f"|a| = {_num(top['top_abs'])} in layer {top['layer']} (dimension {top['top_dim']}, position "
             f"{top['top_position']}, token `{top['top_token']}`), {_num(top['ratio'])} times the median "
             f"|activation| ({top['median_abs']:.3g})."]
    sun = [r["layer"] for r in final if r["top_abs"] > SUN_ABS and r["ratio"] > SUN_RATIO]
    relative = [r["layer"] for r in final if r["ratio"] > SUN_RATIO]
    if sun:
        lines.append(f"By Sun et al.'s criterion (|a| > {SUN_ABS:.0f} and > {SUN_RATIO:.0f}x the median) massive "
                     f"activations appear, in layers {', '.join(map(str, sun))}.")
    else:
        lines.append(f"By Sun et al.'s criterion (|a| > {SUN_ABS:.0f} and > {SUN_RATIO:.0f}x the median) this model "
                     "has no massive activations.")
    best_ratio = max(final, key=lambda r: r["ratio"])
    if relative:
        lines.append(f"Read relatively only (> {SUN_RATIO:.0f}x the median at any magnitude) they appear in layers "
                     f"{', '.join(map(str, relative))}.")
    else:
        lines.append(f"Read relatively only (> {SUN_RATIO:.0f}x the median at any magnitude) none appear either; the "
                     f"largest ratio is {_num(best_ratio['ratio'])}, in layer {best_ratio['layer']}.")
    ratio_at = {s: max(r["ratio"] for r in rows if r["step"] == s) for s in steps}
    lines.append(f"Over training the largest ratio across layers went from {_num(ratio_at[steps[0]])} at step "
                 f"{steps[0]} to {_num(ratio_at[steps[-1]])} at step {steps[-1]:,}.")
    layer = best_ratio["layer"]
    trail = [r for s in steps for r in rows if r["step"] == s and r["layer"] == layer]
    since = next(r["step"] for i, r in enumerate(trail)
                 if all(t["top_dim"] == best_ratio["top_dim"] for t in trail[i:]))
    lines.append(f"In layer {layer} the top activation has sat in dimension {best_ratio['top_dim']} since step "
                 f"{since:,} (of the checkpoints recorded).")
    return " ".join(lines)


def render(metrics: dict, massive: list[dict]) -> str:
    m, t, c = metrics["model"], metrics["training"], metrics["corpus"]
    cfg = t["config"]
    out = ["---", "library_name: transformers", "pipeline_tag: text-generation",
           "tags: [llama, interpretability, synthetic-data, delta-workbench]", "---", "",
           "# Delta Workbench demo model", "",
           "A small Llama-architecture language model trained from scratch on a corpus that the project "
           "generates from a seed (stories with known sentiment, topic and tense, and long-context retrieval "
           "tasks), so that the workbench opens on a real trained model with no download and its analyses "
           "have something true to find. Every number below was measured by `analyses/train_demo_model.py` "
           "(in `metrics.json` and `massive_by_checkpoint.csv` beside this card) and rendered by "
           "`analyses/write_model_card.py`.", "",
           "## Architecture", "",
           _table(["property", "value"], [
               ["architecture", f"{m['architecture']} (RMSNorm, RoPE, SwiGLU, grouped-query attention)"],
               ["layers", m["num_layers"]], ["hidden size", m["hidden_size"]],
               ["attention heads / KV heads", f"{m['num_heads']} / {m['num_kv_heads']}"],
               ["MLP size", m["intermediate_size"]], ["context length", m["context_length"]],
               ["vocabulary", f"{m['vocab_size']:,} tokens (byte-level BPE, digits split; {m['embedding_rows']:,} "
                              "embedding rows)"],
               ["parameters", f"{m['parameters']:,} (input and output embeddings tied)"],
               ["weights", m["dtype"]]]), "",
           "## Training", "",
           _table(["property", "value"], [
               ["steps", f"{t['steps']:,}"], ["tokens seen", f"{t['tokens_seen']:,}"],
               ["batch", f"{cfg['batch_size']} x {m['context_length']} tokens"],
               ["optimiser", f"AdamW, peak lr {cfg['lr']}, {cfg['warmup_steps']} warm-up steps, cosine to "
                             f"{cfg['min_lr_ratio']} x peak, weight decay {cfg['weight_decay']}"],
               ["training time", f"{t['train_seconds']:.0f} s (whole script {t['total_seconds']:.0f} s)"],
               ["GPU", t["gpu"]], ["torch.compile", t["compiled"]],
               ["software", f"torch {t['torch']}, transformers {t['transformers']}"], ["seed", cfg["seed"]]]), "",
           "## Corpus", "",
           f"Generated by `python analyses/build_corpus.py --seed {c['seed']} --size {c['size']}`; nothing is "
           "downloaded and no external text is used (the optional public-domain prose part is not included). "
           f"Each training batch is {_pct(c['training_mix']['retrieval'])} retrieval documents and "
           f"{_pct(c['training_mix']['stories'])} stories by rows. Retrieval documents are key-value recall, "
           "pass keys buried in story sentences, and two-link pointer chasing (task weights "
           + ", ".join(f"{k} {v}" for k, v in c["retrieval_task_weights"].items())
           + "), 128 to 1,024 tokens long. Held-out splits are never trained on; story splits are disjoint "
           "sentence by sentence.", "",
           _table(["part", "split", "documents", "tokens"],
                  [[part, split, f"{v['documents']:,}", f"{v['tokens']:,}"]
                   for part, splits in c["parts"].items() for split, v in splits.items()]), "",
           "## Held-out loss", "",
           _table(["part", "loss (nats/token)", "perplexity"],
                  [[part, f"{v['loss']:.3f}", f"{v['perplexity']:.2f}"] for part, v in metrics["heldout"].items()]),
           ""]
    r = metrics["retrieval"]["by_length"]
    tasks = sorted({task for v in r.values() for task in v["by_task"]})
    longest = r[max(r, key=int)]
    out += ["## Retrieval", "",
            f"Greedy decoding after `Answer:` must reproduce the answer exactly; {metrics['retrieval']['split']} "
            "split items, one question each.", "",
            _table(["context length", "items", "mean tokens", "accuracy", *tasks],
                   [[length, v["n"], f"{v['mean_tokens']:.0f}", _pct(v["accuracy"]),
                     *[_pct(v["by_task"][task]) for task in tasks]] for length, v in r.items()]), "",
            f"Target at {max(r, key=int)} tokens: at least 90%; measured {_pct(longest['accuracy'])} "
            f"({'met' if longest['accuracy'] >= 0.9 else 'not met'}).", ""]
    out += ["## Concept separability", "",
            "A difference-of-means direction of the residual stream at the last token, fitted on the train "
            "sentences, thresholded halfway between the class means; the layer is chosen on validation and the "
            "accuracy reported on test.", ""]
    rows = []
    for name, v in metrics["concepts"].items():
        rows.append([name, v["best_layer"], _pct(v["test_accuracy"]),
                     " ".join(_pct(a) for a in v["test_accuracy_by_layer"]), v["n"]["train"], v["n"]["test"]])
    sentiment = metrics["concepts"]["sentiment"]
    out += [_table(["concept", "best layer", "test accuracy", "test accuracy by layer", "train", "test"], rows), "",
            f"Target for sentiment: at least 95%; measured {_pct(sentiment['test_accuracy'])} "
            f"({'met' if sentiment['test_accuracy'] >= 0.95 else 'not met'}).", ""]
    final_step = max(r["step"] for r in massive)
    per_step = [max((r for r in massive if r["step"] == s), key=lambda r: r["ratio"])
                for s in sorted({r["step"] for r in massive})]
    out += ["## Massive activations", "",
            "Per layer, over four fixed prompts (`workbench.demo_model.MASSIVE_PROMPTS`): the largest |activation| "
            "of each block's output, where it sits, the median |activation|, and their ratio.", "",
            massive_summary(massive), "",
            _table(["step", "tokens seen", "layer with largest ratio", "top \\|a\\|", "ratio", "dim", "position", "token"],
                   [[f"{r['step']:,}", f"{r['tokens_seen']:,}", r["layer"], f"{r['top_abs']:.3g}", _num(r["ratio"]),
                     r["top_dim"], r["top_position"], f"`{r['top_token']}`"] for r in per_step]), "",
            f"Final checkpoint (step {final_step:,}), every layer:", "",
            _table(["layer", "top \\|a\\|", "position", "dim", "token", "median \\|a\\|", "ratio"],
                   [[r["layer"], f"{r['top_abs']:.3g}", r["top_position"], r["top_dim"], f"`{r['top_token']}`",
                     f"{r['median_abs']:.3g}", _num(r["ratio"])] for r in massive if r["step"] == final_step]), ""]
    out += ["## Samples", "", "Greedy and sampled (temperature 0.8) continuations of story prompts.", ""]
    for s in metrics["samples"]:
        out += [f"- **{s['prompt']}**", f"  - greedy: {s['greedy'].strip()}", f"  - sampled: {s['sampled'].strip()}"]
    out += ["", "## Files and reproduction", "",
            "`model.safetensors`, `config.json`, `generation_config.json` and the tokenizer files load with "
            "`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`; the tokenizer prepends "
            f"`<s>` itself. Checkpoints at steps {', '.join(f'{s:,}' for s in t['shipped_checkpoints'])} ship in "
            "the sibling directory `demo-checkpoints/`. `heldout_retrieval.jsonl` holds test items for smoke "
            "tests.", "",
            "```", f"python analyses/train_demo_model.py --out data/models/demo --seed {cfg['seed']}",
            "python analyses/write_model_card.py --model data/models/demo", "```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="data/models/demo", help="model directory (default: data/models/demo)")
    args = parser.parse_args(argv)
    model = Path(args.model)
    missing = [n for n in ("metrics.json", "massive_by_checkpoint.csv") if not (model / n).exists()]
    if missing:
        parser.error(f"{model} lacks {', '.join(missing)}: run analyses/train_demo_model.py --out {model} first")
    card = render(json.loads((model / "metrics.json").read_text()), read_massive(model / "massive_by_checkpoint.csv"))
    (model / "README.md").write_text(card)
    print(f"wrote {model / 'README.md'} ({len(card.splitlines())} lines)")
    return card


if __name__ == "__main__":
    main()
