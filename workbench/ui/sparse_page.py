"""Sparse attention: a method and budget on a prompt or retrieval items, its selections, recall per layer,
the accuracy–sparsity curve and stored kernel timings."""

from __future__ import annotations

import json

import streamlit as st

from workbench.plots import accuracy_sparsity_figure, recall_figure, selection_figure
from workbench.sparse.inspection import inspect_texts
from workbench.sparse.selections import PICTURES, method_picture, recall_by_layer
from workbench.sparse.sweep import METHODS, accuracy_curve, record_sweep
from workbench.ui import jobs, reads
from workbench.ui.state import attempt, db_path, generative_model, store

RETRIEVAL, PROMPT = "retrieval items (one per task)", "a prompt"
LENGTHS = (128, 256, 512, 1024)


def _lengths(model) -> list[int]:
    """The retrieval lengths that fit the model's context."""
    return [n for n in LENGTHS if n <= model.max_positions] or [min(LENGTHS)]


def _run_inspection(model) -> None:
    cols = st.columns([1, 2, 1])
    methods = [m for m in METHODS if m != "dense"] + ["dense"]  # the control last
    method = cols[0].selectbox("Method", methods, key="sparse_method")
    budget = cols[1].slider("Budget (share kept)", 0.05, 1.0, 0.25, 0.05, key="sparse_budget",
                            disabled=method == "dense")
    decode = cols[2].number_input("Decoded tokens", 1, 64, 16, key="sparse_decode")
    source = st.radio("On", [RETRIEVAL, PROMPT], horizontal=True, key="sparse_source")
    if source == RETRIEVAL:
        lengths = _lengths(model)
        length = st.select_slider("Context length (tokens)", lengths, lengths[-1], key="sparse_length")
        prompt = None
    else:
        length, prompt = None, st.text_area("Prompt", "Once upon a time, there was a child named Leo.",
                                            key="sparse_prompt")
    st.caption("Each text is prefilled and its last tokens decoded teacher-forced, under the method and "
               "under dense attention; every selection is logged with its recall.")
    if st.button("Run", type="primary", key="sparse_run"):
        target = store()
        jobs.start("job:sparse", f"running {method}", lambda job: inspect_texts(
            model, method, prompt=prompt, length=length, budget=budget, decode_tokens=int(decode),
            store=target, model_spec=model.spec, progress=job.progress)[0])


def _inspection(model) -> None:
    jobs.result("job:sparse", select="sparse_analysis")
    found = reads.analyses("sparse", model=model.spec)
    if found is None or found.empty:
        st.info("No inspection stored for this model yet: pick a method and press **Run**.")
        return
    configs = found.set_index("analysis_id").config.map(json.loads)
    analysis_id = st.selectbox("Inspection", configs.index.tolist(), key="sparse_analysis",
                               format_func=lambda a: _label(a, configs[a]))
    method = configs[analysis_id]["method"]
    st.dataframe(reads.analysis(db_path(), analysis_id)["summary"]["items"], hide_index=True)
    st.caption("attended_fraction: the share of the text's causal (query, key) pairs that were computed, its "
               "prefill included, which DELTA and DeltaLLM run dense: with only the last tokens decoded under them it "
               "stays near 1, while their budget applies to those decoded steps. recall: the share of dense "
               "attention mass the method's selection kept.")
    selections = attempt(reads.sparse_selections, db_path(), analysis_id)
    if selections is None or selections.empty:
        st.info("Dense attention is the control: it keeps every key, so it logs no selections.")
        return
    st.subheader("Recall per layer")
    st.plotly_chart(recall_figure(recall_by_layer(selections)), key="sparse_recall")
    st.subheader("Selections")
    cols = st.columns(3)
    layer = cols[0].selectbox("Layer", sorted(selections.layer.unique()), key="sparse_layer")
    sequence = cols[1].selectbox("Item", sorted(selections["sequence"].unique()), key="sparse_item")
    rows_label, _, per_head = PICTURES[method]
    heads = sorted(h for h in selections["head"].unique() if h >= 0)
    head = cols[2].selectbox("Query head", heads, key="sparse_head") if per_head and heads else 0
    picture = _picture(selections, method, layer, sequence, head)
    if picture is not None:
        st.plotly_chart(selection_figure(picture, rows_label.replace("_", " ")), key="sparse_picture")


def _label(analysis_id: int, config: dict) -> str:
    """How a stored inspection is named in the picker."""
    on = f"{config['length']}-token retrieval" if config["length"] else "a prompt"
    return f"analysis {analysis_id}: {config['method']} at {config['budget_share']:.0%}, {on}"


def _picture(selections, method, layer, sequence, head):
    try:
        return method_picture(selections, method, layer, sequence=sequence, head=head)
    except ValueError as e:  # nothing logged for that layer, item and head
        st.caption(f"Nothing to draw here: {e}.")


def _curve(model) -> None:
    st.subheader("Accuracy against sparsity")
    cols = st.columns([1, 2, 1])
    length = cols[0].selectbox("Length", _lengths(model)[::-1], key="curve_length")
    budgets = cols[1].multiselect("Budgets", [1.0, 0.5, 0.25, 0.1, 0.05], [1.0, 0.5, 0.25, 0.1],
                                  key="curve_budgets")
    items = cols[2].number_input("Items per task", 1, 50, 2, key="curve_items")
    if st.button("Run sweep", key="curve_run", disabled=not budgets):
        target, config = store(), {"lengths": [length], "budgets": sorted(budgets), "items": int(items)}
        jobs.start("job:curve", "sweeping", lambda job: record_sweep(
            target, model.spec, model.hf, model.tokenizer, config, budgets=sorted(budgets, reverse=True),
            lengths=(length,), n_items=int(items), progress=job.progress)[0])
    jobs.result("job:curve", select="curve_analysis")
    found = reads.analyses("sparse-sweep", model=model.spec)
    if found is None or found.empty:
        st.info("No sweep stored for this model yet (`python analyses/sparsity_sweep.py` stores one too).")
        return
    analysis_id = st.selectbox("Sweep", found.analysis_id.tolist(), key="curve_analysis",
                               format_func=lambda a: f"analysis {a}")
    sweep = attempt(reads.sparse_sweep, db_path(), analysis_id)
    if sweep is not None and not sweep.empty:
        st.plotly_chart(accuracy_sparsity_figure(accuracy_curve(sweep)), key="curve_figure")
        st.dataframe(sweep, hide_index=True)


def _kernels() -> None:
    st.subheader("Kernel benchmarks")
    table = None
    if store().path.exists():
        table = attempt(reads.kernel_benchmarks, db_path(), reads.db_version(db_path()))
    if table is None or table.empty:
        st.caption("No kernel timings stored in this database. On a GPU, `python -m workbench_kernels.bench_all "
                   "--out run.md --results run.jsonl` measures them and `workbench benchmarks run.jsonl --db DB` "
                   "stores them here; the current results are in docs/BENCHMARKS.md.")
        return
    st.caption("Speedup: the baseline's time over ours, both measured in the same run; ceiling: the share of copy "
               "bandwidth or of matmul FLOPs ours reached.")
    st.dataframe(table[["op", "benchmark", "shape", "device", "ms", "baseline", "baseline_ms", "ratio",
                        "ceiling_fraction", "ceiling", "commit"]].rename(columns={"ratio": "speedup"}),
                 hide_index=True)


def page() -> None:
    st.title("Sparse attention")
    model = generative_model("the sparse methods here are for decoding")
    if model is None:
        return
    _run_inspection(model)
    _inspection(model)
    _curve(model)
    _kernels()
