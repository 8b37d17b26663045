"""The `workbench` command: record, list runs, query the database, list models.

Every command takes `--json` for scripting. Bad input exits with code 2 and a
one-line message; Ctrl-C exits with 130 after marking the run interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from workbench.errors import WorkbenchError


def _print_frame(frame: pd.DataFrame, as_json: bool) -> None:
    if as_json:
        print(frame.to_json(orient="records", date_format="iso"))
    elif frame.empty:
        print("(no rows)")
    else:
        print(frame.to_string(index=False))


def _layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated integers, got {text!r}") from None


def cmd_record(args) -> None:
    from workbench.config import RecordConfig
    from workbench.models import load_model
    from workbench.prompts import load_prompts, validate_prompts
    from workbench.recording import record

    if bool(args.prompt) == bool(args.prompts):
        raise WorkbenchError("give prompts either inline (--prompt TEXT ...) or from a file (--prompts FILE)")
    prompts = validate_prompts(args.prompt) if args.prompt else load_prompts(args.prompts)
    config = RecordConfig(
        batch_size=args.batch_size, layers=args.layers, attention=args.attention, attn_out=args.attn_out,
        mlp_out=args.mlp_out, vectors=args.vectors, top_k=args.top_k, max_tensor_gb=args.max_gb,
    )
    model = load_model(args.model, args.revision, device=args.device, dtype=args.dtype,
                       attention=args.attention, trust_remote_code=args.trust_remote_code)
    run_id = record(model, prompts, args.db, config, progress=not args.json)
    print(json.dumps({"run_id": run_id}) if args.json else run_id)


def cmd_runs(args) -> None:
    from workbench.store import Store

    _print_frame(Store(args.db).list_runs(), args.json)


def cmd_sql(args) -> None:
    from workbench.store import Store

    _print_frame(Store(args.db).query(args.query), args.json)


def cmd_models(args) -> None:
    from workbench.models import BUNDLED_MODELS, FAMILIES, bundled_models

    present = bundled_models()
    info = {
        "families": {name: ("generative" if fam.generative else "encoder") for name, fam in sorted(FAMILIES.items())},
        "bundled": {name: str(present[name]) if name in present else None for name in BUNDLED_MODELS},
    }
    if args.json:
        print(json.dumps(info))
        return
    print("Supported families:")
    for name, kind in info["families"].items():
        print(f"  {name:12s} {kind}")
    print("Bundled models:")
    for name, path in info["bundled"].items():
        print(f"  {name:12s} {path or 'not present (train it: analyses/train_demo_model.py)'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(func=func)
        return p

    def with_db(p):
        p.add_argument("--db", help="DuckDB file (default: $WORKBENCH_DB or data/workbench.duckdb)")
        return p

    p = with_db(command("record", cmd_record, "record activations of prompts into the database; prints the run id"))
    p.add_argument("--model", required=True, help="hub id, local directory, or a bundled model such as 'demo'")
    p.add_argument("--revision", help="hub revision or bundled checkpoint (e.g. step1000)")
    p.add_argument("--prompt", action="extend", nargs="+", help="prompt text (repeatable)")
    p.add_argument("--prompts", help="file of prompts: one per line, or JSONL with 'prompt'/'text'")
    p.add_argument("--attention", action="store_true", help="also store full attention maps (eager attention)")
    p.add_argument("--attn-out", action="store_true", help="also capture the attention output of each block")
    p.add_argument("--mlp-out", action="store_true", help="also capture the MLP output of each block")
    p.add_argument("--vectors", action="store_true", help="store full vectors, not only per-token summaries")
    p.add_argument("--layers", type=_layers, help="comma-separated block indices (default: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--top-k", type=int, default=8, help="how many top dimensions by |x| to keep per token")
    p.add_argument("--max-gb", type=float, default=2.0, help="refuse to write more tensor data than this")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="default: float32 on CPU, bf16 on GPU")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model's own modelling code")

    with_db(command("runs", cmd_runs, "list recorded runs with model, status, prompt and token counts"))
    p = with_db(command("sql", cmd_sql, "run a read-only SQL query over the database"))
    p.add_argument("query", help='e.g. "SELECT * FROM runs"')
    command("models", cmd_models, "list the supported families and the bundled models found on disk")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the run was marked interrupted; earlier runs are intact", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
