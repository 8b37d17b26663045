"""Where a model makes up its mind: the logit and tuned lens, direct logit attribution and activation patching on
one clean / corrupted pair, each stored in the database.

    python analyses/lens_report.py --model demo --db runs.duckdb          # about a minute on a 2-core CPU
    python analyses/lens_report.py --model demo --steps 50 --db runs.duckdb   # a quicker tuned lens

Defaults: the demo model and one of its retrieval tasks, the corrupted prompt asking for the other key (answers
begin "7" and "5"). Prints the tuned
lens's KL by layer beside the logit lens's (held-out stories), the lens's KL and the answer's rank by layer on the
clean prompt, the attention and MLP terms of the answer's logit over the wrong token's, and for each site the layer
and position (or head) whose patch restores the clean answer most, with the correlation of attribution patching's
estimate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.errors import WorkbenchError  # noqa: E402
from workbench.lens.attribution import record_attribution  # noqa: E402
from workbench.lens.logit_lens import record_lens  # noqa: E402
from workbench.lens.patching import record_patching  # noqa: E402
from workbench.lens.tuned_lens import load_tuned_lens, record_tuned_lens  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.store import Store  # noqa: E402

RETRIEVAL = ("Remember the value of each key.\nkey 4821 : value 7735\nkey 1093 : value 5512\n"
             "Question: what is the value of key {key}? Answer: ")
CLEAN, CORRUPT = RETRIEVAL.format(key="4821"), RETRIEVAL.format(key="1093")  # answers 7735 and 5512


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo", help="model spec: 'demo', a local directory or a hub id")
    p.add_argument("--clean", default=CLEAN, help="the prompt whose answer is traced")
    p.add_argument("--corrupt", default=CORRUPT, help="the same prompt changed where it matters (same token count)")
    p.add_argument("--answer", default="7", help="the clean prompt's answer token")
    p.add_argument("--wrong", default="5", help="the corrupted prompt's answer token")
    p.add_argument("--steps", type=int, default=250, help="tuned-lens training steps (default 250)")
    p.add_argument("--lens-out", help="where to keep the tuned lens (default: a temporary file)")
    p.add_argument("--db", help="DuckDB file (default: $WORKBENCH_DB or data/workbench.duckdb)")
    args = p.parse_args(argv)
    try:
        model = load_model(args.model, dtype="float32")
        store = Store(args.db)
        with tempfile.TemporaryDirectory() as folder:
            path = args.lens_out or str(Path(folder) / "tuned-lens.safetensors")
            tuned_id = record_tuned_lens(model, store, path, steps=args.steps)
            lens_id = record_lens(model, [args.clean], store, target=args.answer, tuned=load_tuned_lens(path, model))
        dla_id = record_attribution(model, [args.clean], store, args.answer, args.wrong)
        patch_id = record_patching(model, args.clean, args.corrupt, store, args.answer, args.wrong,
                                   sites=("resid_post", "attn_out", "mlp_out", "head"))
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    show = {"float_format": lambda x: f"{x:.4g}", "index": False}
    print(f"tuned lens (analysis {tuned_id}): KL to the final layer on held-out stories")
    print(store.tuned_lens_kl(tuned_id).to_string(**show))
    print(f"\nlens on the clean prompt (analysis {lens_id}), following {args.answer!r}")
    print(store.lens_by_layer(lens_id).to_string(**show))
    print(f"\ndirect logit attribution of {args.answer!r} over {args.wrong!r} (analysis {dla_id})")
    print(store.logit_attribution(dla_id)[["component", "layer", "attribution"]].to_string(**show))
    summary = store.analysis(patch_id)["summary"]
    print(f"\nactivation patching (analysis {patch_id}): clean {summary['clean_metric']:.4g}, corrupted "
          f"{summary['corrupt_metric']:.4g}; attribution patching's correlation by site {summary['correlation']}")
    print(store.patching_by_layer(patch_id).to_string(**show))
    return 0


if __name__ == "__main__":
    sys.exit(main())
