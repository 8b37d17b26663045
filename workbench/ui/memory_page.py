"""Delta-rule memory: per token what a DeltaNet head wrote and erased, the state's norm and rank over the
prompt, how long each head remembers (decay half-life, memory span, role), the exact effective attention, and which
earlier writes survive."""

from __future__ import annotations

import streamlit as st

from workbench.config import MemoryConfig
from workbench.deltanet.inspection import delta_layers, layer_views, record_memory
from workbench.config import ALIGNMENTS
from workbench.deltanet.compare import compare_memories
from workbench.plots import (divergence_map, memory_span_figure, memory_state_figure, memory_writes_figure,
                             readout_divergence_figure, retention_map, signed_map)
from workbench.ui import reads
from workbench.ui.state import MODEL_LOCK, attempt, cached_model, current_model, load_options, store

DEFAULT_PROMPT = ("Remember the value of each key.\nkey 4821 : value 7735\nkey 1093 : value 5512\n"
                  "Question: what is the value of key 4821? Answer:")


@reads.cached
def _views(spec: str, prompt: str, layer: int) -> dict:
    with MODEL_LOCK:
        return layer_views(cached_model(spec, True, **load_options()), prompt, layer)


@reads.cached
def _comparison(spec: str, prompt: str, other: str, align: str) -> dict:
    with MODEL_LOCK:
        return compare_memories(cached_model(spec, True, **load_options()), prompt, other, align=align)


def page() -> None:
    st.title("Delta-rule memory")
    model = current_model()
    if model is None:
        return
    layers = delta_layers(model)
    if not layers:
        st.info(f"{model.spec} has no delta-rule layers. Load a DeltaNet model such as **demo-hybrid** on "
                "**Model and runs**.")
        return
    st.caption(f"Delta-rule layers {layers}; the others are softmax attention. Each token erases the memory "
               "along its key and writes its value there: S ← S − β k (kᵀS) + β k vᵀ (a gated rule, as in Qwen3-Next "
               "or Kimi Linear, first decays the state by exp(g)).")
    prompt = st.text_area("Prompt", DEFAULT_PROMPT, key="memory_prompt")
    left, right = st.columns(2)
    layer = left.selectbox("Layer", layers, key="memory_layer")
    views = attempt(_views, model.spec, prompt, layer)
    if views is None:
        return
    head = right.selectbox("Head", list(range(len(views["effective_attention"]))), key="memory_head")
    tokens, rows = views["tokens"], views["rows"]
    st.subheader(f"What each token did to head {head}'s memory")
    st.plotly_chart(memory_writes_figure(rows[rows["head"] == head].sort_values("position"), tokens),
                    key="memory_writes")
    st.subheader(f"The state of layer {layer} over the prompt")
    st.plotly_chart(memory_state_figure(rows, tokens), key="memory_state")
    st.subheader(f"How long layer {layer}'s heads remember")
    st.caption("Half-life: tokens over which the decay alone halves a write (none without a gate). Span: how far "
               "back 5% of a query's effective attention still reaches, over the prompt's queries. A median span of "
               "at most 8 tokens makes a head a local mixer; one reaching a quarter of the prompt, a long-range memory.")
    st.plotly_chart(memory_span_figure(views["decay"]), key="memory_spans")
    st.plotly_chart(retention_map(rows, tokens), key="memory_retention")
    maps = st.columns(2)
    maps[0].plotly_chart(signed_map(views["effective_attention"][head], tokens, "effective attention (query × key)"),
                         key="memory_attention")
    maps[1].plotly_chart(signed_map(views["survival"][head], tokens, "surviving share of each write (step × writer)",
                                    "surviving"), key="memory_survival")
    _compare(model, prompt, layer)
    if st.button("Store this inspection in the database", key="memory_store"):
        with MODEL_LOCK:
            analysis_id = attempt(record_memory, model, [prompt], store(), MemoryConfig(layers=(layer,)))
        if analysis_id is not None:
            st.success(f"Stored as analysis {analysis_id}: every token and head, and the whole states.")


def _compare(model, prompt: str, layer: int) -> None:
    """Where a second prompt's memory diverges from this one's, when the user gives one."""
    st.subheader("Compare with another prompt")
    left, right = st.columns([3, 1])
    other = left.text_area("Second prompt (for example the same question without the key)", "",
                           key="memory_compare")
    align = right.radio("Line the tokens up at their", ALIGNMENTS, key="memory_align",
                        help="end: a shared question at the end; start: a shared beginning")
    if not other.strip():
        return
    result = attempt(_comparison, model.spec, prompt, other, align)
    if result is None:
        return
    st.plotly_chart(divergence_map(result["heads"]), key="memory_divergence")
    tokens = result["tokens"]
    st.plotly_chart(readout_divergence_figure(tokens[tokens.layer == layer]), key="memory_readout_divergence")
