"""The tables of a workbench database, by schema version, and the migration that brings an older file up.

Each version's SQL creates what that version added; a file carries its version in `meta`, and opening it
for writing runs the missing steps in one transaction. A file of a newer version, or a DuckDB file of
something else, is refused and left untouched.
"""

from __future__ import annotations

from workbench.errors import StoreError

SCHEMA_VERSION = 8

_V1 = """
CREATE SEQUENCE run_ids START 1;
CREATE TABLE runs (
    run_id BIGINT PRIMARY KEY DEFAULT nextval('run_ids'),
    kind VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    revision VARCHAR,
    model_path VARCHAR,
    model_type VARCHAR,
    n_layers INTEGER,
    d_model INTEGER,
    dtype VARCHAR,
    device VARCHAR,
    config JSON,
    status VARCHAR NOT NULL,
    error VARCHAR,
    pid INTEGER,
    host VARCHAR,
    created_at TIMESTAMP DEFAULT current_timestamp,
    finished_at TIMESTAMP
);
CREATE TABLE prompts (run_id BIGINT, prompt_id INTEGER, text VARCHAR, n_tokens INTEGER);
CREATE TABLE tokens (run_id BIGINT, prompt_id INTEGER, position INTEGER, token_id INTEGER, token VARCHAR);
CREATE TABLE layer_stats (
    run_id BIGINT, prompt_id INTEGER, position INTEGER, layer SMALLINT, site VARCHAR,
    l2_norm FLOAT, max_abs FLOAT, max_dim INTEGER, median_abs FLOAT,
    topk_dims INTEGER[], topk_values FLOAT[]
);
CREATE TABLE tensor_files (run_id BIGINT, kind VARCHAR, path VARCHAR, n_rows BIGINT);
"""
# Version 2: per prompt and layer, the exact median |x| of the whole hidden state (the massive-activation
# criterion's denominator) and where non-finite values appear (fp16 overflow); plus the analyses tables.
_V2 = """
CREATE TABLE prompt_layer_stats (
    run_id BIGINT, prompt_id INTEGER, layer SMALLINT, site VARCHAR,
    median_abs FLOAT, max_abs FLOAT, n_nonfinite BIGINT, first_nonfinite_position INTEGER
);
CREATE SEQUENCE analysis_ids START 1;
CREATE TABLE analyses (
    analysis_id BIGINT PRIMARY KEY DEFAULT nextval('analysis_ids'),
    kind VARCHAR NOT NULL, run_id BIGINT, model VARCHAR, config JSON, summary JSON,
    created_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE massive_findings (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, rank SMALLINT, position INTEGER, token VARCHAR,
    token_kind VARCHAR, dim INTEGER, value FLOAT, median_abs FLOAT, ratio FLOAT, is_massive BOOLEAN
);
CREATE TABLE sink_attention (
    analysis_id BIGINT, layer SMALLINT, head SMALLINT, sink_share FLOAT, uniform_share FLOAT, top_abs FLOAT
);
CREATE TABLE massive_dynamics (
    analysis_id BIGINT, checkpoint VARCHAR, step BIGINT, layer SMALLINT, metric VARCHAR, value DOUBLE
);
CREATE TABLE dynamics_fits (
    analysis_id BIGINT, layer SMALLINT, metric VARCHAR, parameter VARCHAR, estimate DOUBLE, stderr DOUBLE,
    r2 DOUBLE, n_points INTEGER
);
CREATE TABLE massive_trials (
    analysis_id BIGINT, layer SMALLINT, mode VARCHAR, n_ablated BIGINT, n_tokens BIGINT,
    loss_base DOUBLE, loss_ablated DOUBLE, ppl_base DOUBLE, ppl_ablated DOUBLE
);
"""
# Version 3: concept directions (one row per layer, the vector inline: one d_model array per layer is small),
# the projections they give each example, and steering trials and sweeps.
_V3 = """
CREATE TABLE directions (
    analysis_id BIGINT, layer SMALLINT, method VARCHAR, position VARCHAR, vector FLOAT[], norm FLOAT,
    relative_norm FLOAT, auroc FLOAT, accuracy FLOAT, threshold FLOAT, n_train INTEGER, n_heldout INTEGER
);
CREATE TABLE direction_projections (
    analysis_id BIGINT, layer SMALLINT, split VARCHAR, example_id INTEGER, label VARCHAR, projection FLOAT
);
CREATE TABLE steering_trials (
    analysis_id BIGINT, prompt_id INTEGER, prompt VARCHAR, layers VARCHAR, alpha FLOAT, positions VARCHAR,
    steered BOOLEAN, continuation VARCHAR, concept_score FLOAT, perplexity FLOAT
);
CREATE TABLE steering_sweep (
    analysis_id BIGINT, layer SMALLINT, alpha FLOAT, concept_shift FLOAT, success_rate FLOAT,
    perplexity_ratio FLOAT, kl FLOAT, n_prompts INTEGER
);
"""
# Version 4: sparse attention under inspection: each selection (per step, layer, sequence, head and query
# block), per-step agreement with dense attention, the accuracy-sparsity sweep, and kernel timings.
_V4 = """
CREATE TABLE sparse_selections (
    analysis_id BIGINT, phase VARCHAR, step INTEGER, layer SMALLINT, sequence INTEGER, head SMALLINT,
    query_block INTEGER, indices INTEGER[], scores FLOAT[], attended_fraction FLOAT, recall FLOAT
);
CREATE TABLE sparse_accuracy (
    analysis_id BIGINT, method VARCHAR, budget FLOAT, length INTEGER, task VARCHAR, item INTEGER, step INTEGER,
    position INTEGER, kl FLOAT, top1_agree BOOLEAN, nll FLOAT, dense_nll FLOAT
);
CREATE TABLE sparse_sweep (
    analysis_id BIGINT, method VARCHAR, budget FLOAT, length INTEGER, task VARCHAR, n_items INTEGER,
    accuracy FLOAT, ppl FLOAT, kl FLOAT, top1_agreement FLOAT, attended_fraction FLOAT, recall FLOAT
);
CREATE TABLE kernel_benchmarks (
    analysis_id BIGINT, op VARCHAR, config JSON, device VARCHAR, ms DOUBLE, baseline_ms DOUBLE, ratio DOUBLE,
    bandwidth_fraction DOUBLE
);
"""
# Version 5: the memory of delta-rule layers: per token and head what each write did (with the state's
# singular values after it), and whole states at chosen steps (NULL where too large to keep).
_V5 = """
CREATE TABLE delta_memory (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, head SMALLINT, position INTEGER, token VARCHAR,
    beta FLOAT, written FLOAT, erased FLOAT, delta FLOAT, overwrite FLOAT, state_norm FLOAT, state_rank SMALLINT,
    readout FLOAT[], singular_values FLOAT[]
);
CREATE TABLE delta_states (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, head SMALLINT, step INTEGER, key_dim INTEGER,
    value_dim INTEGER, state FLOAT[]
);
"""
# Version 6: a kernel benchmark row names what it measured and at which shape, its baseline, and the physical
# ceiling (the fraction of copy bandwidth or of peak FLOPs it reached), beside the GPU and the commit; every
# analysis kind is spelled with hyphens.
_V6 = """
UPDATE analyses SET kind = replace(kind, '_', '-') WHERE kind IN ('sparse_sweep', 'delta_memory');
ALTER TABLE kernel_benchmarks ADD COLUMN benchmark VARCHAR;
ALTER TABLE kernel_benchmarks ADD COLUMN shape VARCHAR;
ALTER TABLE kernel_benchmarks ADD COLUMN baseline VARCHAR;
ALTER TABLE kernel_benchmarks ADD COLUMN ceiling VARCHAR;
ALTER TABLE kernel_benchmarks ADD COLUMN ceiling_fraction DOUBLE;
ALTER TABLE kernel_benchmarks ADD COLUMN commit VARCHAR;
ALTER TABLE kernel_benchmarks DROP COLUMN bandwidth_fraction;
"""
# Version 7: how long delta-rule memory lasts: each token's log decay, and per head and prompt the decay's half-life
# and the effective attention's span (`workbench.deltanet.decay`); where two prompts' memories diverge
# (`workbench.deltanet.compare`); the logit and tuned lens per layer and position, the tuned lens's KL by layer
# on held-out texts, direct logit attribution per component, activation patching per site, layer and position
# (`workbench.lens`).
_V7 = """
ALTER TABLE delta_memory ADD COLUMN log_decay FLOAT;
CREATE TABLE delta_decay (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, head SMALLINT, n_tokens INTEGER, mean_log_decay DOUBLE,
    half_life DOUBLE, half_life_fastest DOUBLE, half_life_slowest DOUBLE, span_mean FLOAT, span_median FLOAT,
    span_last INTEGER, role VARCHAR
);
CREATE TABLE delta_compare_heads (
    analysis_id BIGINT, layer SMALLINT, head SMALLINT, state_distance FLOAT, state_cosine FLOAT,
    readout_distance_mean FLOAT, readout_distance_last FLOAT
);
CREATE TABLE delta_compare_tokens (
    analysis_id BIGINT, layer SMALLINT, head SMALLINT, step INTEGER, position_a INTEGER, position_b INTEGER,
    token_a VARCHAR, token_b VARCHAR, readout_distance FLOAT
);
CREATE TABLE lens (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, position INTEGER, token VARCHAR, top_tokens VARCHAR[],
    top_ids INTEGER[], top_probs FLOAT[], target_id INTEGER, target_prob FLOAT, target_rank INTEGER, entropy FLOAT,
    kl_to_final FLOAT, lens VARCHAR
);
CREATE TABLE tuned_lens_kl (analysis_id BIGINT, layer SMALLINT, logit_lens_kl FLOAT, tuned_lens_kl FLOAT);
CREATE TABLE patching (
    analysis_id BIGINT, site VARCHAR, layer SMALLINT, position INTEGER, head SMALLINT, token VARCHAR, metric FLOAT,
    restored FLOAT, estimated_metric FLOAT, estimated FLOAT
);
CREATE TABLE logit_attribution (
    analysis_id BIGINT, prompt_id INTEGER, position INTEGER, token VARCHAR, component VARCHAR, layer SMALLINT,
    head SMALLINT, attribution FLOAT
);
"""
# Version 8: attention of long prompts without maps (`workbench.attention_summaries`): the mass of every query
# block x key block tile (`block` tokens a side), each query's sink weight, entropy and mean distance, and the top
# keys of chosen queries.
_V8 = """
CREATE TABLE attention_tiles (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, head SMALLINT, block INTEGER, query_block INTEGER,
    key_block INTEGER, mass FLOAT
);
CREATE TABLE attention_queries (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, head SMALLINT, position INTEGER, token VARCHAR, sink FLOAT,
    entropy FLOAT, distance FLOAT
);
CREATE TABLE attention_top_keys (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, head SMALLINT, query INTEGER, rank SMALLINT, key INTEGER,
    token VARCHAR, weight FLOAT
);
"""
MIGRATIONS = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6, 7: _V7, 8: _V8}  # version -> SQL that brings version-1 to version
# Tables rows are appended to (every table but `runs`, `analyses` and `meta`).
APPENDABLE = ("prompts", "tokens", "layer_stats", "prompt_layer_stats", "tensor_files", "massive_findings",
              "sink_attention", "massive_dynamics", "dynamics_fits", "massive_trials", "directions",
              "direction_projections", "steering_trials", "steering_sweep", "sparse_selections", "sparse_accuracy",
              "sparse_sweep", "kernel_benchmarks", "delta_memory", "delta_states", "delta_decay",
              "delta_compare_heads", "delta_compare_tokens", "lens",
              "tuned_lens_kl", "logit_attribution", "patching", "attention_tiles", "attention_queries",
              "attention_top_keys")


def schema_version(con) -> int | None:
    """The file's schema version, or None for a DuckDB file without the workbench's `meta` table."""
    has_meta = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'").fetchone()[0]
    if not has_meta:
        return None
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def too_new(path, version: int) -> StoreError:
    return StoreError(f"{path} has schema version {version}, newer than this workbench knows ({SCHEMA_VERSION}); "
                      "upgrade the workbench")


def migrate(con, path) -> None:
    """Bring the file at `path` (open read-write on `con`) to SCHEMA_VERSION, or refuse it untouched."""
    version = schema_version(con)
    if version is None:
        if con.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0]:
            raise StoreError(f"{path} is a DuckDB database of something else (it has tables but no workbench "
                             "schema); it was left untouched: use another database file")
        version = 0
    if version > SCHEMA_VERSION:
        raise too_new(path, version)
    if version == SCHEMA_VERSION:
        return
    con.execute("BEGIN TRANSACTION")
    if version == 0:
        con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        con.execute(MIGRATIONS[target])
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    con.execute("COMMIT")
