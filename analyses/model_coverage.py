"""Measure every capability on a tiny random instance of every architecture of the installed transformers.

    python analyses/model_coverage.py                      # all of them -> docs/MODELS.md
    python analyses/model_coverage.py --only llama,phi3    # a few, printed
    python analyses/model_coverage.py --results r.json --only phi3   # check one again, rewrite the page from r.json

Each architecture runs in its own process (`workbench.coverage.check_architecture`) with a time limit, so one
that hangs or crashes is a row, not the end of the sweep. The page lists, per architecture, each capability's
result and the reason for every failure, then the totals; the README quotes the totals.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.cli import comma_list  # noqa: E402
from workbench.coverage import CAPABILITIES  # noqa: E402

CHECK = "import json, sys; from workbench.coverage import check_architecture; print(json.dumps(check_architecture(sys.argv[1])))"
CORE = ("record", "parity", "steering")  # what the headline share counts


def run_one(model_type: str, timeout: float) -> dict[str, str]:
    """One architecture's results, from a fresh process."""
    try:
        done = subprocess.run([sys.executable, "-c", CHECK, model_type], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"load": f"FAIL: over the {timeout:.0f} s limit"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"load": f"FAIL: the process ended ({done.returncode}): {tail[:200]}"}
    return json.loads(lines[-1])


def passes_core(row: dict[str, str]) -> bool:
    """Record and parity pass, and steering passes where it applies (an encoder does not generate)."""
    return all(row.get(c) == "ok" or (c == "steering" and str(row.get(c, "")).startswith("n/a")) for c in CORE)


def page(results: dict[str, dict[str, str]], kinds: dict[str, str], version: str) -> str:
    """docs/MODELS.md: the totals, then one row per architecture, then every reason in full."""
    core = sum(passes_core(r) for r in results.values())
    per = {c: Counter(r.get(c, "FAIL").split(":")[0] for r in results.values()) for c in CAPABILITIES}
    lines = [
        "# Models", "",
        f"Every causal-LM and encoder architecture of transformers {version} that has a language-model head, built "
        "as a tiny random instance (`workbench/tiny_configs.py`) and run through each capability by "
        "`workbench/coverage.py`. Regenerate with `python analyses/model_coverage.py`.", "",
        f"**{core} of {len(results)} architectures ({100 * core / len(results):.0f}%) pass record + parity + "
        "steering** (steering counts as passed for encoders, which do not generate).", "",
        "| capability | ok | n/a | FAIL | what is checked |", "|---|---|---|---|---|",
    ]
    checked = {
        "load": "built from a small config, parts found by structure discovery",
        "record": "resid_post, attn_out, mlp_out and statistics into a DuckDB file, two prompts batched with padding",
        "parity": "stored resid_post equals transformers' output_hidden_states, to 1e-4 in fp32",
        "transformer_lens": "resid_post equals TransformerLens's TransformerBridge hook_resid_post, to 1e-4, where "
                            "TransformerLens boots the architecture",
        "attention": "maps of every softmax layer (eager attention), each query's weights sum to one (less with "
                     "an attention sink)",
        "massive": "massive-activation detection on the recorded run",
        "directions": "a concept direction per layer, stored",
        "steering": "a steered nnsight trace equals the same addition by a forward hook; steered greedy "
                    "generation equals transformers' generate with that hook",
        "export": "the direction written as safetensors and read back equal",
        "sparse": "the sparse methods' dense control in place of the model's attention gives its logits",
    }
    for c in CAPABILITIES:
        lines.append(f"| {c} | {per[c]['ok']} | {per[c]['n/a']} | {per[c]['FAIL']} | {checked[c]} |")
    lines += ["", "| architecture | kind | " + " | ".join(CAPABILITIES) + " |",
              "|---|---|" + "---|" * len(CAPABILITIES)]
    notes = []
    for name, row in sorted(results.items()):
        cells = []
        for c in CAPABILITIES:
            value = row.get(c, "-")
            if value in ("ok", "-"):
                cells.append(value)
            else:
                notes.append(f"- {name}, {c}: {value}")
                cells.append(value.split(":")[0] + f" [{len(notes)}]")
        lines.append(f"| {name} | {kinds.get(name, '?')} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", "## Reasons", "", *(f"{i + 1}. {n[2:]}" for i, n in enumerate(notes)), ""])


def main() -> None:
    import transformers

    from workbench.tiny_configs import architectures

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=comma_list(str), help="comma-separated model types (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="architectures checked at once")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per architecture")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "MODELS.md",
                        help="the page, written when the results cover every architecture")
    parser.add_argument("--results", type=Path, help="a JSON file of results kept between calls: read first (only "
                                                     "the architectures in --only are checked again), then written")
    args = parser.parse_args()
    kinds = {a.model_type: a.kind for a in architectures()}
    kept = json.loads(args.results.read_text()) if args.results and args.results.is_file() else {}
    names = args.only or sorted(kinds)
    results = {name: row for name, row in kept.items() if name in kinds and name not in names}
    with ThreadPoolExecutor(args.jobs) as pool:
        for name, row in zip(names, pool.map(lambda n: run_one(n, args.timeout), names)):
            results[name] = row
            print(f"{name:28s} " + " ".join(f"{c}={row.get(c, '-').split(':')[0]}" for c in CAPABILITIES),
                  flush=True)
            if args.results:  # as it goes: an interrupted sweep keeps what it checked
                args.results.write_text(json.dumps(results, indent=1, sort_keys=True))
    if set(results) == set(kinds):
        args.out.write_text(page(results, kinds, transformers.__version__))
        print(f"written to {args.out}")
    core = sum(passes_core(r) for r in results.values())
    print(f"{core} of {len(results)} pass record + parity + steering")


if __name__ == "__main__":
    main()
