"""Render a demo model's card (README.md) from the files its training run wrote.

    python analyses/write_model_card.py [--model data/models/demo]
    python analyses/write_model_card.py --model data/models/demo-hybrid --compare data/models/demo

Every number in the card is read from ``metrics.json`` and ``massive_by_checkpoint.csv``
in the model directory (both written by ``analyses/train_demo_model.py``); nothing is
typed in by hand, so re-running after a new training run keeps the card true. ``--compare`` adds a
side-by-side table of the same measurements of another model (the hybrid's card against the demo's).
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
        return [{**r, **{k: float(r[k]) for k in ("top1_pooled", "median_pooled", "ratio_pooled")},
                 **{k: int(r[k]) for k in ("step", "tokens_seen", "layer", "top_position", "top_dim")}}
                for r in csv.DictReader(f)]


def massive_summary(rows: list[dict]) -> str:
    """Plain sentences on whether massive activations appear, and how they developed."""
    steps = sorted({r["step"] for r in rows})
    final = [r for r in rows if r["step"] == steps[-1]]
    top = max(final, key=lambda r: r["top1_pooled"])
    best = max(final, key=lambda r: r["ratio_pooled"])
    criterion = f"(|a| > {SUN_ABS:.0f} and > {SUN_RATIO:.0f}x the median)"
    relative = f"(> {SUN_RATIO:.0f}x the median at any magnitude)"
    sun = [str(r["layer"]) for r in final if r["top1_pooled"] > SUN_ABS and r["ratio_pooled"] > SUN_RATIO]
    rel = [str(r["layer"]) for r in final if r["ratio_pooled"] > SUN_RATIO]
    lines = [
        f"At the final checkpoint (step {steps[-1]:,}) the largest residual-stream activation is "
        f"|a| = {_num(top['top1_pooled'])} in layer {top['layer']} (dimension {top['top_dim']}, position "
        f"{top['top_position']}, token {_token(top['top_token'])}), {_num(top['ratio_pooled'])} times the median "
        f"|activation| of that layer ({top['median_pooled']:.3g}).",
        f"By Sun et al.'s criterion {criterion} massive activations appear, in layers {', '.join(sun)}."
        if sun else f"By Sun et al.'s criterion {criterion} this model has no massive activations.",
        f"Read relatively only {relative} they appear in layers {', '.join(rel)}." if rel else
        f"Read relatively only {relative} none appear either; the largest ratio is {_num(best['ratio_pooled'])}, "
        f"in layer {best['layer']}.",
    ]
    ratio_at = {s: max(r["ratio_pooled"] for r in rows if r["step"] == s) for s in steps}
    lines.append(f"Over training the largest ratio across layers went from {_num(ratio_at[steps[0]])} at "
                 f"step {steps[0]} to {_num(ratio_at[steps[-1]])} at step {steps[-1]:,}.")
    trail = [r for s in steps for r in rows if r["step"] == s and r["layer"] == best["layer"]]
    since = next(r["step"] for i, r in enumerate(trail)
                 if all(t["top_dim"] == best["top_dim"] for t in trail[i:]))
    lines.append(f"In layer {best['layer']} the top activation has sat in dimension {best['top_dim']} since "
                 f"step {since:,} (of the checkpoints recorded).")
    return " ".join(lines)


def _is_hybrid(metrics: dict) -> bool:
    return metrics["model"].get("softmax_layers") is not None


def _architecture(m: dict) -> str:
    if m.get("softmax_layers") is None:
        return f"{m['architecture']} (RMSNorm, RoPE, SwiGLU, grouped-query attention)"
    delta = [i for i in range(m["num_layers"]) if i not in m["softmax_layers"]]
    return (f"{m['architecture']} in flash-linear-attention's format: DeltaNet layers {delta} ({m['num_heads']} "
            f"heads, short convolutions, L2-normalised q and k, write strength beta = sigmoid), softmax attention "
            f"(RoPE, grouped-query) at layers {m['softmax_layers']}; RMSNorm, SwiGLU")


def _about(metrics: dict) -> list[str]:
    """Title and first paragraph."""
    cfg = metrics["training"]["config"]
    if not _is_hybrid(metrics):
        return ["# Delta Workbench demo model", "",
                "A small Llama-architecture language model trained from scratch on a corpus that the project "
                "generates from a seed (stories with known sentiment, topic and tense, and long-context retrieval "
                "tasks), so that the workbench opens on a real trained model with no download and its analyses "
                "have something true to find."]
    start = (f"initialised from `{cfg['init_from']}` wherever shapes match (embeddings, norms, MLPs, the "
             f"attention layers {metrics['model']['softmax_layers']}; the DeltaNet layers take its q and o projections and its k and v projections "
             "repeated over each KV group, see `workbench/deltanet/from_llama.py`) and then trained"
             if cfg.get("init_from") else "trained from scratch")
    return ["# Delta Workbench demo-hybrid model", "",
            "A small hybrid of DeltaNet (linear attention with the delta rule) and softmax-attention layers, "
            f"{start} on the same generated corpus with the same tokenizer as the demo model, so the workbench "
            "can show what a delta-rule layer's memory holds next to softmax attention in one model. The "
            "softmax layers sit where zeroing the demo model's attention destroys its retrieval."]


def _intro(metrics: dict) -> list[str]:
    m, t, c = metrics["model"], metrics["training"], metrics["corpus"]
    cfg = t["config"]
    arch = [["architecture", _architecture(m)],
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
        f"tags: [{'delta_net' if _is_hybrid(metrics) else 'llama'}, interpretability, synthetic-data, "
        "delta-workbench]", "---", "",
        *_about(metrics)[:-1],
        _about(metrics)[-1] + " Every number below was measured by `analyses/train_demo_model.py` (it is in "
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


def _token(text: str) -> str:
    """A token's text quoted so that a space or a newline shows: `' her'`, `'\\n'`."""
    return f"`{text!r}`"


def _massive(massive: list[dict]) -> list[str]:
    final_step = max(r["step"] for r in massive)
    per_step = [max((r for r in massive if r["step"] == s), key=lambda r: r["ratio_pooled"])
                for s in sorted({r["step"] for r in massive})]
    a = "\\|a\\|"  # a pipe inside a table cell must be escaped
    trajectory = [[f"{r['step']:,}", f"{r['tokens_seen']:,}", r["layer"], f"{r['top1_pooled']:.3g}",
                   _num(r["ratio_pooled"]), r["top_dim"], r["top_position"], _token(r["top_token"])]
                  for r in per_step]
    final = [[r["layer"], f"{r['top1_pooled']:.3g}", r["top_position"], r["top_dim"], _token(r["top_token"]),
              f"{r['median_pooled']:.3g}", _num(r["ratio_pooled"])] for r in massive if r["step"] == final_step]
    return [
        "## Massive activations", "",
        "Per layer, pooled over four fixed prompts (`workbench.demo_model.MASSIVE_PROMPTS`): the largest "
        "|activation| of the block's output over every prompt's tokens, where it sits, the median |activation| "
        "over every element of every prompt, and their ratio (`workbench.massive.statistics.pooled_statistics`; "
        "the Massive page's detection averages each prompt's top-1 and median instead, and names that pooling "
        "'mean over prompts').", "",
        massive_summary(massive), "",
        _table(["step", "tokens seen", "layer with largest ratio", f"top {a}", "ratio", "dim", "position",
                "token"], trajectory), "",
        f"Final checkpoint (step {final_step:,}), every layer:", "",
        _table(["layer", f"top {a}", "position", "dim", "token", f"median {a}", "ratio"], final), "",
    ]


def _side_by_side(metrics: dict, other: dict, other_name: str) -> list[str]:
    """The card's headline measurements of this model and `other`, one row each."""
    def row(label, get, fmt):
        return [label, fmt(get(metrics)), fmt(get(other))]

    rows = [row(f"held-out loss, {part}", lambda m, p=part: m["heldout"][p]["loss"], lambda x: f"{x:.3f}")
            for part in metrics["heldout"]]
    rows += [row(f"retrieval accuracy, {n} tokens", lambda m, n=n: m["retrieval"]["by_length"][n]["accuracy"], _pct)
             for n in metrics["retrieval"]["by_length"]]
    rows += [row(f"{name} separability (best layer)", lambda m, c=name: m["concepts"][c]["test_accuracy"], _pct)
             for name in metrics["concepts"]]
    rows += [row("parameters", lambda m: m["model"]["parameters"], lambda x: f"{x:,}"),
             row("tokens trained on", lambda m: m["training"]["tokens_seen"], lambda x: f"{x:,}"),
             row("training time (s)", lambda m: m["training"]["train_seconds"], lambda x: f"{x:.0f}")]
    return ["## Side by side with the demo model", "",
            f"The same measurements, by the same code on the same test items, for this model and `{other_name}`."
            + (" This model's training continues from the demo's weights: its tokens come on top of the demo's."
               if metrics["training"]["config"].get("init_from") else ""),
            "", _table(["measurement", "this model", other_name], rows), ""]


def render(metrics: dict, massive: list[dict], compare: tuple[dict, str] | None = None) -> str:
    t = metrics["training"]
    out = _intro(metrics) + (_side_by_side(metrics, *compare) if compare else []) + _results(metrics)
    out += _massive(massive)
    out += ["## Samples", "", "Greedy and sampled (temperature 0.8) continuations of story prompts.", ""]
    for s in metrics["samples"]:
        out += [f"- **{s['prompt']}**",
                *(f"  - {kind}: {_continuation(s[kind])}" for kind in ("greedy", "sampled"))]
    shipped = ", ".join(f"{s:,}" for s in t["shipped_checkpoints"])
    hybrid = _is_hybrid(metrics)
    loading = ("`import workbench.deltanet` first (it registers the `delta_net` model type with transformers; the delta "
               "rule runs on the workbench's Triton kernel on CUDA, its PyTorch reference elsewhere), then "
               if hybrid else "")
    checkpoints = (f"Checkpoints at steps {shipped} ship in the sibling directory `demo-checkpoints/`. "
                   if shipped else "No intermediate checkpoints ship (the `data/` size budget). ")
    name = "demo-hybrid" if hybrid else "demo"
    out += ["", "## Files and reproduction", "",
            f"`model.safetensors`, `config.json`, `generation_config.json` and the tokenizer files load with {loading}"
            "`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`; the tokenizer "
            f"prepends `<s>` itself. {checkpoints}"
            "`heldout_retrieval.jsonl` holds test-split retrieval items for smoke tests.", "",
            "```", f"python analyses/train_demo_model.py {'--arch hybrid ' if hybrid else ''}--out data/models/{name} "
            f"--seed {t['config']['seed']} --minutes {t['config']['minutes']:g}",
            f"python analyses/write_model_card.py --model data/models/{name}"
            f"{' --compare data/models/demo' if hybrid else ''}", "```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="data/models/demo",
                        help="model directory (default: data/models/demo)")
    parser.add_argument("--compare", help="another model directory whose measurements to show side by side")
    args = parser.parse_args(argv)
    model = Path(args.model)
    missing = [n for n in ("metrics.json", "massive_by_checkpoint.csv") if not (model / n).exists()]
    if missing:
        parser.error(f"{model} lacks {', '.join(missing)}: run analyses/train_demo_model.py --out {model}")
    metrics = json.loads((model / "metrics.json").read_text())
    compare = None
    if args.compare:
        if not (Path(args.compare) / "metrics.json").exists():
            parser.error(f"{args.compare} has no metrics.json to compare with")
        compare = (json.loads((Path(args.compare) / "metrics.json").read_text()), Path(args.compare).name)
    card = render(metrics, read_massive(model / "massive_by_checkpoint.csv"), compare)
    (model / "README.md").write_text(card)
    print(f"wrote {model / 'README.md'} ({len(card.splitlines())} lines)")
    return card


if __name__ == "__main__":
    main()
