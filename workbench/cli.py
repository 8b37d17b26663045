"""The `workbench` command: record, list runs, query the database, list models.

Every command takes `--json` for scripting. Bad input exits with code 2 and a
one-line message; Ctrl-C exits with 130 after marking the run interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import pandas as pd

from workbench.config import (ALIGNMENTS, COMPRESSIONS, DELTA_KERNELS, PATCH_METRICS, POOLINGS, MassiveConfig,
                              MemoryConfig, RecordConfig)
from workbench.errors import WorkbenchError
from workbench.steering.export import FORMATS


def _print_frame(frame: pd.DataFrame, as_json: bool) -> None:
    if as_json:
        print(frame.to_json(orient="records", date_format="iso"))
    elif frame.empty:
        print("(no rows)")
    else:
        print(frame.to_string(index=False))


def _report(args, table: pd.DataFrame, key: str, note: str, **fields) -> None:
    """With --json one object: `fields` and the table's rows under `key`; else the table, then `note`."""
    if args.json:
        print(json.dumps({**fields, key: json.loads(table.to_json(orient="records"))}, default=str))
        return
    if not table.empty:
        _print_frame(table, False)
        print()
    print(note)


def _prompts(args) -> list[str]:
    """The prompts given inline (--prompt TEXT ...) or in a file (--prompts FILE), exactly one of the two."""
    from workbench.prompts import load_prompts, validate_prompts

    if bool(args.prompt) == bool(args.prompts):
        raise WorkbenchError("give prompts either inline (--prompt TEXT ...) or from a file (--prompts FILE)")
    return validate_prompts(args.prompt) if args.prompt else load_prompts(args.prompts)


def comma_list(kind):
    """An argparse type: comma-separated values of `kind` (int or float); a bad value is a usage error."""
    names = {int: "integers", float: "numbers"}

    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {names.get(kind, kind.__name__)}, "
                                             f"got {text!r}") from None
    return parse


def _load(args, check_db: bool = True, **options):
    """The model the command's --model, --revision, --device, --device-map, --dtype, --delta-kernel and
    --trust-remote-code name; `options` are the command's own (attention=True), and a dtype here is the default
    --dtype overrides."""
    from workbench.models import load_model

    _check_before_loading(args, check_db)
    dtype = args.dtype or options.pop("dtype", None)
    device_map = args.device_map
    if device_map and device_map.startswith("{"):
        try:
            device_map = json.loads(device_map)
        except json.JSONDecodeError as e:
            raise WorkbenchError(f"--device-map is not valid JSON: {e}") from None
    return load_model(args.model, args.revision, device=args.device, dtype=dtype, device_map=device_map,
                      trust_remote_code=args.trust_remote_code, delta_kernel=args.delta_kernel, **options)


def _check_before_loading(args, check_db: bool) -> None:
    """Refuse a misspelled model, a database the command cannot write (`check_db`) and layers out of range before
    the model's weights load."""
    from workbench.models import model_config, structure_of
    from workbench.store import Store

    model_config(args.model, args.revision, trust_remote_code=args.trust_remote_code)
    if check_db and hasattr(args, "db"):
        Store(args.db).check()
    if getattr(args, "layers", None):
        n_layers = len(structure_of(args.model, args.revision, trust_remote_code=args.trust_remote_code).attn)
        if bad := [layer for layer in args.layers if not 0 <= layer < n_layers]:
            raise WorkbenchError(f"layer {bad[0]} is out of range: {args.model} has layers 0..{n_layers - 1}")


def cmd_record(args) -> None:
    from workbench.recording import record

    prompts = _prompts(args)
    config = RecordConfig(
        batch_size=args.batch_size, layers=args.layers, attention=args.attention, attn_out=args.attn_out,
        mlp_out=args.mlp_out, router=args.router, vectors=args.vectors, top_k=args.top_k, max_tensor_gb=args.max_gb,
        compression=args.compression, map_limit=args.map_limit,
    )
    model = _load(args, attention=args.attention)
    run_id = record(model, prompts, args.db, config, progress=not args.json)
    print(json.dumps({"run_id": run_id}) if args.json else run_id)


def cmd_runs(args) -> None:
    from workbench.store import Store

    _print_frame(Store(args.db).list_runs(), args.json)


def cmd_clean(args) -> None:
    from workbench.store import Store

    store = Store(args.db)
    files = store.orphan_files() if args.list else store.remove_orphan_files()
    size = sum(f.stat().st_size for f in files if f.exists()) if args.list else None
    if args.json:
        print(json.dumps({"files": [str(f) for f in files], "removed": not args.list}))
        return
    for file in files:
        print(file)
    verb = "would remove" if args.list else "removed"
    print(f"{verb} {len(files)} tensor file(s) no run registered" + (f" ({size / 1e6:.1f} MB)" if size else ""))


def cmd_sql(args) -> None:
    from workbench.store import Store

    _print_frame(Store(args.db).query(args.query), args.json)


def cmd_models(args) -> None:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    from workbench.models import BUNDLED_MODELS, bundled_models, structure_of

    if args.model:
        structure = structure_of(args.model, args.revision, trust_remote_code=args.trust_remote_code)
        info = {"model": args.model, "structure": structure.describe()}
        print(json.dumps(info) if args.json else "\n".join(f"{k:15s} {v}" for k, v in info["structure"].items()))
        return
    present = bundled_models()
    info = {
        "architectures": {"causal_lm": len(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
                          "masked_lm": len(MODEL_FOR_MASKED_LM_MAPPING_NAMES)},
        "bundled": {name: str(present[name]) if name in present else None for name in BUNDLED_MODELS},
    }
    if args.json:
        print(json.dumps(info))
        return
    print(f"Any causal LM ({info['architectures']['causal_lm']} architectures in this transformers) or encoder "
          "loads; docs/MODELS.md lists what each capability does on each. `workbench models --model SPEC` shows "
          "the parts found in one model.")
    print("Bundled models:")
    for name, path in info["bundled"].items():
        print(f"  {name:12s} {path or f'not present (train it: {BUNDLED_MODELS[name]})'}")


def _massive_config(args):
    return MassiveConfig(abs_threshold=args.abs_threshold, ratio_threshold=args.ratio,
                         relative_only=args.relative_only, top_n=args.top_n)


def _prompt_list(args) -> list[str]:
    from workbench.prompts import load_prompts

    return load_prompts(args.prompts)


def cmd_massive(args) -> None:
    from workbench.massive.detection import detect, detect_prompts, layer_table, sink_attention
    from workbench.store import Store

    if bool(args.prompts) == (args.run is not None):
        raise WorkbenchError("give either --prompts FILE (record them now) or --run ID (an earlier recording)")
    store, config = Store(args.db), _massive_config(args)
    model = _load(args, attention=args.sinks) if args.prompts or args.sinks else None
    if args.prompts:
        analysis_id = detect_prompts(model, _prompt_list(args), store, config, progress=not args.json)
    else:
        analysis_id = detect(store, args.run, config)
    analysis = store.analysis(analysis_id)
    found = store.massive_findings(analysis_id)
    table = layer_table(found) if not found.empty else found
    if args.sinks:
        sinks = sink_attention(model, store, analysis_id)
        shares = store.sink_attention(sinks).groupby("layer").agg(
            max_head_sink_share=("sink_share", "max"), uniform=("uniform_share", "mean")).reset_index()
        table = table.merge(shares, on="layer", how="left")
    _report(args, table, "layers", f"analysis {analysis_id}: {analysis['summary']['statement']}",
            analysis_id=analysis_id, summary=analysis["summary"])


def cmd_massive_dynamics(args) -> None:
    from workbench.massive.dynamics import dynamics, failure_lines, fit_summary
    from workbench.store import Store

    store = Store(args.db)
    analysis_id = dynamics(args.model, args.checkpoints.split(","), _prompt_list(args), store, args.steps,
                           _massive_config(args), progress=not args.json)
    fits = fit_summary(store.dynamics_fits(analysis_id, args.metric), args.metric)
    failed = failure_lines(store.analysis(analysis_id)["summary"].get("failed_fits", []), args.metric)
    _report(args, fits, "fits", "\n".join([f"analysis {analysis_id}", *failed]), analysis_id=analysis_id,
            not_fitted=failed)


def cmd_massive_ablate(args) -> None:
    from workbench.massive.ablation import ablate
    from workbench.store import Store

    model = _load(args)
    trials = ablate(model, _prompt_list(args), args.layer, args.dims, Store(args.db), _massive_config(args),
                    tuple(args.mode or ("zero", "mean")))
    _print_frame(trials, args.json)


def cmd_direction(args) -> None:
    from workbench.steering.concepts import concept_set_path, load_concept_set
    from workbench.steering.directions import compute_directions
    from workbench.store import Store

    concepts = load_concept_set(concept_set_path(args.concepts), args.positive)
    model = _load(args)
    table, _, analysis_id = compute_directions(model, concepts, Store(args.db), args.layers, args.method,
                                               args.position, args.normalize)
    shown = table.drop(columns=["vector", "method", "position"])
    best = table.loc[table.auroc.idxmax()]
    _report(args, shown, "layers", f"direction {analysis_id}: {concepts.negative} -> {concepts.positive}; best "
            f"layer {best.layer} (held-out AUROC {best.auroc:.3f}, accuracy {best.accuracy:.3f})",
            analysis_id=analysis_id)


def cmd_steer(args) -> None:
    from workbench.steering.directions import stored_directions
    from workbench.steering.steer import EMPTY_GENERATION, Steer, generate
    from workbench.store import Store

    if args.direction is None and args.vector is None:
        raise WorkbenchError("give a stored direction (--direction ID) or a vector file (--vector PATH)")
    if not math.isfinite(args.alpha):
        raise WorkbenchError(f"--alpha must be a finite number, got {args.alpha}")
    if args.fast and args.sample:
        raise WorkbenchError("--fast decodes greedily: drop --sample, or --fast to sample")
    prompts = _prompts(args)
    best = None
    if args.direction is not None:  # read before the model loads: a wrong id fails at once
        store = Store(args.db)
        vectors = stored_directions(store, args.direction)
        best = store.analysis(args.direction)["summary"].get("best_layer")
    model = _load(args, check_db=False)
    if args.vector:
        from workbench.steering.export import import_vector

        vectors, _ = import_vector(args.vector, expected_d_model=model.d_model, expected_n_layers=model.n_layers)
    layers = args.layers or (sorted(vectors) if args.vector else [best if best in vectors else max(vectors)])
    if missing := [layer for layer in layers if layer not in vectors]:
        raise WorkbenchError(f"no vector for layer(s) {missing}; the direction has layers {sorted(vectors)}")
    steers = [Steer(layer, vectors[layer], args.alpha) for layer in layers]
    if args.fast:
        from workbench.steering.fast_generate import fast_generate

        options = dict(max_new_tokens=args.max_new_tokens, compile=model.device.type == "cuda")
        plain = fast_generate(model, prompts, **options)
        steered = fast_generate(model, prompts, steers, positions=args.positions, **options)
    else:
        options = dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample, seed=args.seed)
        plain = generate(model, prompts, **options)
        steered = generate(model, prompts, steers, positions=args.positions, **options)
    rows = [{"prompt": p, "unsteered": a, "steered": b} for p, a, b in zip(prompts, plain, steered)]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"steering layer(s) {layers} at alpha {args.alpha:g}\n")
    for row in rows:
        shown = {k: row[k] or EMPTY_GENERATION for k in ("unsteered", "steered")}
        print(f"prompt:    {row['prompt']}\nunsteered: {shown['unsteered']}\nsteered:   {shown['steered']}\n")


def cmd_export_vector(args) -> None:
    from workbench.steering.directions import stored_directions
    from workbench.steering.export import export_vector
    from workbench.steering.vector_files import direction_meta
    from workbench.store import Store

    store = Store(args.db)
    analysis = store.analysis(args.analysis_id)
    vectors = stored_directions(store, args.analysis_id)
    if args.layers:
        vectors = {layer: vectors[layer] for layer in args.layers if layer in vectors}
    elif args.format in ("gguf", "repeng") and 0 in vectors:
        vectors.pop(0)
        print("layer 0 left out: llama.cpp keeps no control vector for block 0", file=sys.stderr)
    path = export_vector(vectors, direction_meta(analysis, sorted(vectors), args.alpha), args.out, args.format)
    print(json.dumps({"path": str(path)}) if args.json else path)


def cmd_import_vector(args) -> None:
    from workbench.steering.export import import_vector

    vectors, meta = import_vector(args.path, expected_d_model=args.d_model)
    info = {"layers": sorted(vectors), "d_model": len(next(iter(vectors.values()))),
            "norms": {layer: float(np.linalg.norm(v)) for layer, v in sorted(vectors.items())}, "meta": meta}
    print(json.dumps(info, default=str) if args.json else json.dumps(info, indent=2, default=str))


def cmd_sparse(args) -> None:
    from workbench.sparse.inspection import inspect_texts
    from workbench.store import Store

    if args.task is not None and args.length is None:
        raise WorkbenchError("--task retrieval needs --length N (tokens per item)")
    if (args.prompt is None) == (args.task is None):
        raise WorkbenchError("give either --prompt TEXT or --task retrieval --length N")
    model = _load(args, dtype="float32")
    analysis_id, table = inspect_texts(model, args.method, prompt=args.prompt, length=args.length,
                                       budget=args.budget, decode_tokens=args.decode_tokens, store=Store(args.db),
                                       model_spec=args.model, progress=not args.json)
    _report(args, table, "items", f"analysis {analysis_id}: every selection and the per-step agreement with "
            "dense attention are stored with it", analysis_id=analysis_id)


def cmd_memory(args) -> None:
    from workbench.deltanet.compare import record_comparison
    from workbench.deltanet.inspection import record_memory
    from workbench.store import Store

    prompts = _prompts(args)
    config = MemoryConfig(layers=args.layers, steps=args.steps, n_steps=args.n_steps,
                          max_state_floats=args.max_state_floats, span_mass=args.span_mass)
    if args.compare is not None and len(prompts) != 1:
        raise WorkbenchError(f"--compare compares one --prompt with its text; got {len(prompts)} prompts")
    if args.compare is not None and not args.compare.strip():
        raise WorkbenchError("--compare is empty: give the second prompt's text")
    model = _load(args, dtype="float32")
    store = Store(args.db)
    if args.compare is not None:
        analysis_id = record_comparison(model, prompts[0], args.compare, store, config, args.align)
        table = store.delta_comparison_by_layer(analysis_id)
        _report(args, table, "layers", f"analysis {analysis_id}: per layer and head (delta_compare_heads) and per "
                "shared token (delta_compare_tokens)", analysis_id=analysis_id)
        return
    analysis_id = record_memory(model, prompts, store, config)
    table = store.delta_memory_by_layer(analysis_id)
    _report(args, table, "layers", f"analysis {analysis_id}: per token and head, and whole states at the chosen "
            "steps", analysis_id=analysis_id)


def cmd_lens(args) -> None:
    from workbench.lens.logit_lens import record_lens
    from workbench.lens.tuned_lens import load_tuned_lens
    from workbench.store import Store

    prompts = _prompts(args)
    if args.top_k < 1:
        raise WorkbenchError(f"--top-k must be at least 1, got {args.top_k}")
    if args.target is not None and not args.target:
        raise WorkbenchError("--target is empty: give a token, or leave it out to follow the prompt's next tokens")
    model = _load(args, dtype="float32")
    tuned = load_tuned_lens(args.tuned, model) if args.tuned else None
    store = Store(args.db)
    analysis_id = record_lens(model, prompts, store, target=args.target, top_k=args.top_k, layers=args.layers,
                              tuned=tuned)
    _report(args, store.lens_by_layer(analysis_id), "layers", f"analysis {analysis_id}: per layer and position in "
            "the table lens", analysis_id=analysis_id)


def cmd_attention_summary(args) -> None:
    from workbench.attention_summaries import record_summaries
    from workbench.store import Store

    prompts = _prompts(args)
    if args.tiles < 1 or args.top_k < 1:
        raise WorkbenchError(f"--tiles and --top-k must be at least 1, got {args.tiles} and {args.top_k}")
    model = _load(args)
    store = Store(args.db)
    analysis_id = record_summaries(model, prompts, store, layers=args.layers, tiles=args.tiles,
                                   queries=args.queries, top_k=args.top_k, progress=not args.json)
    table = store.attention_summary_by_layer(analysis_id)
    _report(args, table, "layers", f"analysis {analysis_id}: tile masses in attention_tiles, per query sink, "
            "entropy and distance in attention_queries", analysis_id=analysis_id)


def cmd_patch(args) -> None:
    from workbench.lens.patching import record_patching
    from workbench.store import Store

    model = _load(args, dtype="float32")
    store = Store(args.db)
    analysis_id = record_patching(model, args.clean, args.corrupt, store, args.answer, args.wrong, args.metric,
                                  tuple(args.sites))
    correlation = store.analysis(analysis_id)["summary"]["correlation"]
    _report(args, store.patching_by_layer(analysis_id), "layers", f"analysis {analysis_id}: every site, layer and "
            "position in the table patching (restored: 1 = the clean run's metric, 0 = the corrupted run's; "
            f"estimated: attribution patching's; correlation of the two grids by site: {correlation})",
            analysis_id=analysis_id, correlation=correlation)


def cmd_dla(args) -> None:
    from workbench.lens.attribution import record_attribution
    from workbench.store import Store

    prompts = _prompts(args)
    if not args.target or (args.other is not None and not args.other):
        raise WorkbenchError("--target (and --other, when given) must name a token")
    model = _load(args, dtype="float32")
    store = Store(args.db)
    analysis_id = record_attribution(model, prompts, store, args.target, args.other, args.position, args.heads)
    _report(args, store.logit_attribution(analysis_id), "terms", f"analysis {analysis_id}: the terms sum to the "
            "model's own logit difference (table logit_attribution)", analysis_id=analysis_id)


def cmd_tune_lens(args) -> None:
    from workbench.lens.tuned_lens import record_tuned_lens
    from workbench.prompts import load_prompts
    from workbench.store import Store

    if args.steps < 1:
        raise WorkbenchError(f"--steps must be at least 1, got {args.steps}")
    texts = load_prompts(args.texts) if args.texts else None
    model = _load(args, dtype="float32")
    store = Store(args.db)
    analysis_id = record_tuned_lens(model, store, args.out, texts, steps=args.steps, lr=args.lr)
    _report(args, store.tuned_lens_kl(analysis_id), "layers", f"analysis {analysis_id}: the translators are in "
            f"{args.out}; use them with `workbench lens --tuned {args.out}`", analysis_id=analysis_id)


def cmd_benchmarks(args) -> None:
    from workbench.kernel_benchmarks import store_kernel_results
    from workbench.store import Store

    store = Store(args.db)
    ids = store_kernel_results(store, args.results)
    table = store.kernel_benchmarks()
    table = table[table.analysis_id.isin(ids)][["op", "benchmark", "shape", "device", "ms", "baseline_ms", "ratio",
                                                "ceiling_fraction", "commit"]]
    _report(args, table, "rows", f"stored as analyses {', '.join(map(str, ids))} (the Sparse page shows them)",
            analysis_ids=ids)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(func=func)
        return p

    def with_model(p, required=True, help_text="hub id, local directory, or a bundled model such as 'demo'"):
        p.add_argument("--model", required=required, help=help_text)
        p.add_argument("--revision", help="hub revision or bundled checkpoint (e.g. step1000)")
        p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
        p.add_argument("--device-map", help="shard the model instead: auto, balanced or sequential (over every GPU, "
                                            "then the CPU), or a JSON object of module path -> device")
        p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                       help="default: float32 on CPU, bf16 on GPU")
        p.add_argument("--delta-kernel", choices=DELTA_KERNELS, default="model",
                       help="the delta rule of Gated DeltaNet layers (Qwen3-Next, Qwen3.5, OLMo hybrid): the model's "
                            "own (flash-linear-attention or transformers' fallback) or the workbench's Triton kernel")
        p.add_argument("--trust-remote-code", action="store_true", help="allow a model's own modelling code")
        return p

    def with_db(p):
        p.add_argument("--db", help="DuckDB file (default: $WORKBENCH_DB or data/workbench.duckdb)")
        return p

    def with_prompts(p):  # what `_prompts` reads
        p.add_argument("--prompt", action="extend", nargs="+", help="prompt text (repeatable)")
        p.add_argument("--prompts", help="file of prompts: one per line, or JSONL with 'prompt'/'text'")

    p = with_db(command("record", cmd_record, "record activations of prompts into the database; prints the run id"))
    with_model(p)
    with_prompts(p)
    p.add_argument("--attention", action="store_true", help="also store full attention maps (eager attention)")
    p.add_argument("--map-limit", type=int, help="with --attention: prompts longer than this many tokens keep "
                                                 "attention summaries (tiles, sink, entropy, distance) instead of "
                                                 "T^2 maps (see attention-summary)")
    p.add_argument("--attn-out", action="store_true", help="also capture the attention output of each block")
    p.add_argument("--mlp-out", action="store_true", help="also capture the MLP output of each block")
    p.add_argument("--router", action="store_true", help="also capture a mixture-of-experts model's router logits "
                                                         "(one value per expert)")
    p.add_argument("--vectors", action="store_true", help="store full vectors, not only per-token summaries")
    p.add_argument("--compression", choices=COMPRESSIONS, default=RecordConfig.compression,
                   help="Parquet compression of vectors and attention maps: zstd (smallest), lz4 or snappy (faster), "
                        "none")
    p.add_argument("--layers", type=comma_list(int), help="comma-separated block indices (default: all)")
    p.add_argument("--batch-size", type=int, default=RecordConfig.batch_size)
    p.add_argument("--top-k", type=int, default=RecordConfig.top_k,
                   help=f"how many top dimensions by |x| to keep per token (default {RecordConfig.top_k})")
    p.add_argument("--max-gb", type=float, default=RecordConfig.max_tensor_gb,
                   help=f"refuse to write more tensor data than this (default {RecordConfig.max_tensor_gb:g})")

    with_db(command("runs", cmd_runs, "list recorded runs with model, status, prompt and token counts"))
    p = with_db(command("clean", cmd_clean, "remove tensor files that no run registered (left by a killed "
                                            "recording); runs and their data are untouched"))
    p.add_argument("--list", action="store_true", help="only list them")
    p = with_db(command("sql", cmd_sql, "run a read-only SQL query over the database"))
    p.add_argument("query", help='read-only SQL, e.g. "SHOW TABLES"')
    p = command("models", cmd_models, "the bundled models on disk, or (--model) the parts found in one model "
                                      "without loading its weights")
    p.add_argument("--model", help="a model spec whose structure to show")
    p.add_argument("--revision")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model's own modelling code")

    def with_criterion(p):
        p.add_argument("--abs-threshold", type=float, default=MassiveConfig.abs_threshold,
                       help=f"|a| must exceed this (default {MassiveConfig.abs_threshold:g})")
        p.add_argument("--ratio", type=float, default=MassiveConfig.ratio_threshold,
                       help=f"|a| must exceed this x the median (default {MassiveConfig.ratio_threshold:g})")
        p.add_argument("--relative-only", action="store_true", help="drop the absolute test (small models)")
        p.add_argument("--top-n", type=int, default=MassiveConfig.top_n,
                       help=f"largest activations reported per layer (default {MassiveConfig.top_n})")
        return with_db(p)

    p = with_criterion(command("massive", cmd_massive, "find massive activations per layer, token and dimension"))
    with_model(p, required=False, help_text="model spec (needed with --prompts or --sinks)")
    p.add_argument("--prompts", help="prompt file to record and search")
    p.add_argument("--run", type=int, help="search an earlier recorded run instead")
    p.add_argument("--sinks", action="store_true", help="also measure attention to the massive tokens per head")

    p = with_criterion(command("massive-dynamics", cmd_massive_dynamics,
                               "follow massive activations across checkpoints and fit their emergence curve"))
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoints", required=True,
                   help="comma-separated revisions of --model (step1000,step2000) or checkpoint directories")
    p.add_argument("--steps", type=comma_list(int),
                   help="comma-separated training steps (default: read from the checkpoint names)")
    p.add_argument("--prompts", required=True)
    p.add_argument("--metric", default="ratio_pooled", choices=[*POOLINGS["mean over prompts"], *POOLINGS["pooled"]],
                   help="which metric's fits to print (default ratio_pooled, as the model card pools)")

    p = with_criterion(command("massive-ablate", cmd_massive_ablate,
                               "zero or mean-set massive activations at a layer and measure the loss"))
    with_model(p)
    p.add_argument("--prompts", required=True, help="held-out texts to measure loss on")
    p.add_argument("--layer", type=int, required=True, help="the layer where the massive activations appear")
    p.add_argument("--dims", type=comma_list(int), required=True, help="comma-separated dimensions to ablate")
    p.add_argument("--mode", action="append", choices=["zero", "mean"], help="default: both")

    p = with_db(command("direction", cmd_direction, "compute a concept direction per layer from a concept set"))
    with_model(p)
    p.add_argument("--concepts", required=True, help="a bundled set (sentiment, tense, ...) or a JSONL file")
    p.add_argument("--positive", help="the label the direction points to (default: 'positive' or the first)")
    p.add_argument("--method", default="diff_means", choices=["diff_means", "pca_pairs"])
    p.add_argument("--position", default="last", choices=["last", "mean", "mark"])
    p.add_argument("--layers", type=comma_list(int), help="comma-separated block indices (default: all)")
    p.add_argument("--normalize", action="store_true", help="store unit vectors")

    p = with_db(command("steer", cmd_steer, "generate with and without a steering vector, side by side"))
    with_model(p)
    p.add_argument("--direction", type=int, help="a stored direction analysis id")
    p.add_argument("--vector", help="or a vector file (safetensors or GGUF control vector)")
    p.add_argument("--layers", type=comma_list(int), help="layers to steer (default: with --vector every layer the file "
                   "holds, as llama.cpp and repeng apply a control vector; with --direction its best layer by held-out AUROC)")
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--prompt", action="extend", nargs="+")
    p.add_argument("--prompts")
    p.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--sample", action="store_true", help="seeded sampling instead of greedy decoding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="greedy decoding on a fixed-shape KV cache with the steering "
                                                       "as forward hooks (CUDA graphs on a GPU); same tokens")

    p = with_db(command("export-vector", cmd_export_vector, "write a stored direction in a steering-vector format"))
    p.add_argument("analysis_id", type=int)
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="safetensors (one tensor per layer; steering-vectors and PyTorch users read it), or llama.cpp's "
                        "control-vector GGUF (gguf, and repeng, which reads and writes the same file)")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=comma_list(int), help="layers to export (default: all)")
    p.add_argument("--alpha", type=float, default=1.0, help="suggested alpha stored in the metadata")

    p = command("import-vector", cmd_import_vector, "read and validate a steering-vector file")
    p.add_argument("path")
    p.add_argument("--d-model", type=int, help="refuse vectors of another hidden size")

    p = with_db(command("sparse", cmd_sparse, "run a sparse-attention method against dense attention, logging "
                                              "every selection"))
    p.add_argument("--method", required=True, choices=["delta", "anchor", "deltallm", "dense"])
    with_model(p)
    p.add_argument("--prompt", help="text to prefill; its last --decode-tokens tokens are decoded")
    p.add_argument("--task", choices=["retrieval"], help="one retrieval item per task (kv, passkey, multihop)")
    p.add_argument("--length", type=int, help="tokens per retrieval item")
    p.add_argument("--budget", type=float, default=0.25, help="share kept, in (0, 1] (default 0.25)")
    p.add_argument("--decode-tokens", type=int, default=16, help="tokens decoded at the end (default 16)")

    p = with_db(command("memory", cmd_memory, "inspect the memory of a model's delta-rule layers: what each token "
                                              "wrote and erased, the states at chosen steps, how long each head "
                                              "remembers; or, with --compare, where two prompts' memories diverge"))
    with_model(p, help_text="a delta-rule model: 'demo-hybrid', an fla-format directory, or a Qwen3-Next, Qwen3.5, "
                            "OLMo hybrid or Kimi Linear model")
    with_prompts(p)
    p.add_argument("--layers", type=comma_list(int), help="comma-separated DeltaNet layers (default: all of them)")
    p.add_argument("--steps", type=comma_list(int), help="token positions whose whole state is kept (default: evenly "
                                                  "spaced, ending at the last token)")
    p.add_argument("--n-steps", type=int, default=MemoryConfig.n_steps,
                   help=f"how many evenly spaced states to keep (default {MemoryConfig.n_steps})")
    p.add_argument("--max-state-floats", type=int, default=MemoryConfig.max_state_floats,
                   help=f"keep only singular values of states larger than this (default {MemoryConfig.max_state_floats})")
    p.add_argument("--span-mass", type=float, default=MemoryConfig.span_mass,
                   help=f"a head's memory span reaches as far back as this share of a query's effective attention "
                        f"(default {MemoryConfig.span_mass})")
    p.add_argument("--compare", metavar="TEXT", help="a second prompt: store where its memory diverges from the "
                                                     "--prompt's, per layer, head and shared token")
    p.add_argument("--align", choices=ALIGNMENTS, default="end",
                   help="with --compare: line the two prompts' tokens up at their ends (a shared question) or starts")

    p = with_db(command("attention-summary", cmd_attention_summary, "long prompts' attention without its T^2 maps: "
                                                                    "the mass of every query block x key block tile, "
                                                                    "each query's sink weight, entropy and distance"))
    with_model(p)
    with_prompts(p)
    p.add_argument("--layers", type=comma_list(int), help="comma-separated softmax layers (default: all of them)")
    p.add_argument("--tiles", type=int, default=128, help="tiles a side of each prompt's map (default 128)")
    p.add_argument("--queries", type=comma_list(int), help="query positions whose top keys are kept (negative: from "
                                                           "the end; default -1, the last token)")
    p.add_argument("--top-k", type=int, default=8, help="keys kept per chosen query (default 8)")

    p = with_db(command("lens", cmd_lens, "the logit lens: every layer's residual read out through the model's final "
                                          "norm and unembedding, per position (top tokens, a target's probability "
                                          "and rank, KL to the final layer)"))
    with_model(p)
    with_prompts(p)
    p.add_argument("--target", help="a token to follow at every position (default: each position's next token)")
    p.add_argument("--top-k", type=int, default=5, help="top tokens kept per layer and position (default 5)")
    p.add_argument("--layers", type=comma_list(int), help="comma-separated layers (default: all)")
    p.add_argument("--tuned", help="a tuned-lens file (from tune-lens): store the tuned lens beside the logit lens")

    p = with_db(command("patch", cmd_patch, "activation patching: run the corrupted prompt with one activation at a "
                                            "time (layer x position) taken from the clean prompt, and measure how "
                                            "much of the clean answer comes back"))
    with_model(p)
    p.add_argument("--clean", required=True, help="the prompt whose behaviour is traced")
    p.add_argument("--corrupt", required=True, help="the same prompt, changed where it matters (same token count)")
    p.add_argument("--answer", required=True, help="the clean prompt's answer token")
    p.add_argument("--wrong", help="the corrupted prompt's answer token (needed by logit_diff)")
    p.add_argument("--metric", choices=PATCH_METRICS, default="logit_diff", help="default logit_diff")
    p.add_argument("--sites", type=comma_list(str), default=["resid_post"],
                   help="comma-separated: resid_post, attn_out, mlp_out (layer x position), head (layer x head, "
                        "each head's output at every position) (default resid_post)")

    p = with_db(command("dla", cmd_dla, "direct logit attribution: how much the embedding and each layer's attention "
                                        "and MLP output push a token's logit (or the difference of two) at a position"))
    with_model(p)
    with_prompts(p)
    p.add_argument("--target", required=True, help="the token whose logit is attributed")
    p.add_argument("--other", help="a second token: attribute logit(target) - logit(other)")
    p.add_argument("--position", type=int, default=-1, help="the position read (default -1: the last)")
    p.add_argument("--heads", action="store_true", help="also split each attention term by head")

    p = with_db(command("tune-lens", cmd_tune_lens, "train a tuned lens (per-layer affine translators, Belrose et al. "
                                                    "2023), write it to --out, and store its KL by layer beside the "
                                                    "logit lens's on held-out texts"))
    with_model(p)
    p.add_argument("--out", required=True, help="the safetensors file to write the translators to")
    p.add_argument("--texts", help="training texts, one per line or JSONL (default: 64 stories of the demo corpus)")
    p.add_argument("--steps", type=int, default=250, help="Adam steps (default 250)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")

    p = with_db(command("benchmarks", cmd_benchmarks, "store kernel benchmark results (the --results files of "
                                                      "python -m workbench_kernels.bench_all) in the database"))
    p.add_argument("results", nargs="+", help="JSON Lines results files")
    return parser


def run_command(work, *args) -> int:
    """`work(*args)` as a command's exit code: its own (0 when it returns None), 2 after a one-line message for
    bad input, 130 after Ctrl-C (what finished is stored; a recording is marked interrupted). The CLI and every
    script in analyses/ end through here."""
    try:
        code = work(*args)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: what finished is stored and earlier runs are intact", file=sys.stderr)
        return 130
    return code or 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
