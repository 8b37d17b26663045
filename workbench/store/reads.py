"""Every read the workbench makes, by name: a run's prompts, a detection's findings, a direction's vectors...

Callers (the command line, the app's pages, the analyses) ask for what they need here instead of writing
SQL, so the tables can change in one place. `query` runs a user's own read-only SQL (the SQL page, the
`sql` command). Every result is a DataFrame unless a docstring says otherwise.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from workbench.errors import StoreError
from workbench.store.connection import Connections, one_line

_RUNS = """
SELECT r.run_id, r.kind, r.model, r.revision, r.status, r.pid, r.host,
       coalesce(p.n, 0) AS prompts, coalesce(p.t, 0)::BIGINT AS tokens, r.created_at, r.finished_at
FROM runs r LEFT JOIN (SELECT run_id, count(*) AS n, sum(n_tokens) AS t FROM prompts GROUP BY run_id) p USING (run_id)
ORDER BY r.run_id
"""
# Each token's top-k dimensions, ranked within its prompt and layer; the n largest entries of a hidden state
# are among the n largest of their own tokens, so the top n per prompt and layer are exact for n <= k.
_TOP_ACTIVATIONS = """
WITH flat AS (
    SELECT prompt_id, layer, position, unnest(topk_dims) AS dim, unnest(topk_values) AS value
    FROM layer_stats WHERE run_id = $run AND site = $site
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY prompt_id, layer ORDER BY abs(value) DESC, position, dim) AS rank
    FROM flat
)
SELECT r.prompt_id, r.layer, r.rank, r.position, t.token, r.dim, r.value, p.median_abs
FROM ranked r
JOIN tokens t ON t.run_id = $run AND t.prompt_id = r.prompt_id AND t.position = r.position
JOIN prompt_layer_stats p ON p.run_id = $run AND p.prompt_id = r.prompt_id AND p.layer = r.layer AND p.site = $site
WHERE r.rank <= $top_n
ORDER BY r.prompt_id, r.layer, r.rank
"""
_LAYER_DIM_MAX = """
WITH flat AS (
    SELECT layer, unnest(topk_dims) AS dim, unnest(topk_values) AS value
    FROM layer_stats WHERE run_id = ? AND site = ?
)
SELECT layer, dim, max(abs(value)) AS max_abs FROM flat GROUP BY layer, dim ORDER BY layer, dim
"""
_ATTENTION_RUNS = """
SELECT r.run_id, r.model, count(DISTINCT p.prompt_id) AS prompts, r.created_at
FROM runs r JOIN prompts p USING (run_id)
WHERE r.status = 'complete' AND r.run_id IN (SELECT run_id FROM tensor_files WHERE kind = 'attention')
GROUP BY ALL ORDER BY r.run_id DESC
"""
_SINK_MASS = """
WITH per_query AS (
    SELECT prompt_id, layer, head, query, sum(weight) FILTER (WHERE key = 0) AS sink, count(*) AS n_keys
    FROM read_parquet(?) WHERE query > 0 GROUP BY prompt_id, layer, head, query
)
SELECT layer, head, avg(sink) AS sink_mass, avg(1.0 / n_keys) AS uniform_mass, count(*) AS n_queries
FROM per_query GROUP BY layer, head ORDER BY layer, head
"""
EXAMPLE_QUERY = "SELECT * FROM runs ORDER BY run_id DESC LIMIT 20"  # what the SQL page opens with
SQL_HELP = ("Read-only: SELECT, SHOW, DESCRIBE and EXPLAIN (SHOW TABLES lists the tables). Full vectors and "
            "attention maps are the views resid_post, attn_out, mlp_out, router and attention (run_id, prompt_id, "
            "...), read in place from the runs' Parquet files, e.g. SELECT layer, avg(list_max(vector)) FROM "
            "resid_post WHERE run_id = 1 GROUP BY layer.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _abandoned_shown(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` rows (with pid and host) with a `running` run whose writer on this host is gone marked `abandoned`."""
    here = socket.gethostname()
    running = (runs["status"] == "running") & (runs["host"] == here) & runs["pid"].notna()
    dead = running & ~runs["pid"].where(running, 0).astype(int).map(_pid_alive)
    return runs.assign(status=runs["status"].where(~dead, "abandoned"))


class Reads(Connections):
    """The read side of a `Store`."""

    def _select(self, sql: str, params: list | dict | None = None) -> pd.DataFrame:
        """The rows of a query; numpy scalars among `params` (ids read from a frame) are taken as Python's."""
        def plain(value):
            return value.item() if isinstance(value, np.generic) else value
        params = ({k: plain(v) for k, v in params.items()} if isinstance(params, dict)
                  else [plain(v) for v in params or []])
        with self.read() as con:
            return con.execute(sql, params).df()

    def _results(self, table: str, analysis_id: int, order: str | None = None) -> pd.DataFrame:
        """An analysis's rows of one result table (without analysis_id), in `order`."""
        return self._select(f"SELECT * EXCLUDE (analysis_id) FROM {table} WHERE analysis_id = ?"
                            + (f" ORDER BY {order}" if order else ""), [analysis_id])

    def _stored_paths(self, run_id: int, kind: str) -> list[str]:
        """`tensor_paths`, or a `StoreError` when the run kept none of that kind."""
        paths = self.tensor_paths(run_id, kind)
        if not paths:
            what = "attention maps" if kind == "attention" else f"{kind!r} vectors"
            raise StoreError(f"run {run_id} stored no {what} (record with the option that keeps them)")
        return paths

    def _tensor_views(self, con) -> None:
        """A temporary view per kind of stored tensor (`resid_post`, `attention`, ...) over every registered
        Parquet file of that kind, read in place, with the run_id its folder names. A kind whose files cannot be
        read (deleted by hand) gets no view, so queries of the tables still run."""
        files = con.execute("SELECT kind, list(path ORDER BY run_id, path) FROM tensor_files GROUP BY kind").fetchall()
        for kind, paths in files:
            if not kind.replace("_", "").isalnum():
                continue  # kinds are the workbench's own site names; anything else is not made a view
            listed = ", ".join("'" + str(self.tensor_dir / p).replace("'", "''") + "'" for p in paths)
            try:
                con.execute(f"CREATE OR REPLACE TEMP VIEW {kind} AS SELECT TRY_CAST(regexp_extract(filename, "
                            f"'run_([0-9]+)/[^/]*$', 1) AS BIGINT) AS run_id, * EXCLUDE (filename) FROM "
                            f"read_parquet([{listed}], filename = true)")
            except duckdb.Error:
                continue

    def query(self, sql: str, params: list | dict | None = None) -> pd.DataFrame:
        """Run the user's read-only SQL (SELECT, SHOW, DESCRIBE, EXPLAIN only) and return the result."""
        if not isinstance(sql, str) or not sql.strip():
            raise StoreError("the query is empty")
        with self.read() as con:
            self._tensor_views(con)
            try:
                statements = con.extract_statements(sql)
            except duckdb.Error as e:
                raise StoreError(f"SQL does not parse: {one_line(e)}") from e
            allowed = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
            refused = [s.type.name for s in statements if s.type not in allowed]
            if refused or len(statements) != 1:
                raise StoreError(f"only one read-only query (SELECT, SHOW, DESCRIBE, EXPLAIN) is allowed, got "
                                 f"{refused or f'{len(statements)} statements'}")
            try:
                return con.execute(sql, params or []).df()
            except duckdb.Error as e:
                raise StoreError(f"query failed: {one_line(e)}") from e

    # -- runs and analyses -------------------------------------------------------

    def list_runs(self) -> pd.DataFrame:
        """Every run with its prompt and token counts; a dead writer's `running` run shows as `abandoned`."""
        if not self.path.exists():
            return pd.DataFrame(columns=["run_id", "kind", "model", "revision", "status", "prompts", "tokens",
                                         "created_at", "finished_at"])
        return _abandoned_shown(self._select(_RUNS)).drop(columns=["pid", "host"])

    def run(self, run_id: int) -> dict:
        """One run's row as a dict (config parsed; status `abandoned` for a dead writer's run, as `list_runs`
        says); `StoreError` if there is no such run."""
        found = self._select("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if found.empty:
            raise StoreError(f"no run {run_id} in {self.path}")
        row = _abandoned_shown(found).iloc[0].to_dict()
        row["config"] = json.loads(row["config"]) if row["config"] else {}
        return row

    def completed_run(self, run_id: int) -> dict:
        """Like `run`, but refuses a run that did not finish, so it is never read as complete."""
        row = self.run(run_id)
        if row["status"] != "complete":
            raise StoreError(f"run {run_id} is {row['status']}, not complete: what it stored is partial (read it "
                             "anyway with partial=True)")
        return row

    def analysis(self, analysis_id: int) -> dict:
        """One analysis row as a dict (config and summary parsed)."""
        found = self._select("SELECT * FROM analyses WHERE analysis_id = ?", [analysis_id])
        if found.empty:
            raise StoreError(f"no analysis {analysis_id} in {self.path}")
        row = found.iloc[0].to_dict()
        return {**row, "config": json.loads(row["config"]), "summary": json.loads(row["summary"])}

    def analyses(self, kind: str, run_id: int | None = None, model: str | None = None) -> pd.DataFrame:
        """Stored analyses of one kind (optionally of one run or model), newest first; config and summary as
        JSON text."""
        columns = ["analysis_id", "run_id", "model", "config", "summary", "created_at"]
        if not self.path.exists():
            return pd.DataFrame(columns=columns)
        return self._select(
            f"SELECT {', '.join(columns)} FROM analyses WHERE kind = $kind AND ($run IS NULL OR run_id = $run) "
            "AND ($model IS NULL OR model = $model) ORDER BY analysis_id DESC",
            {"kind": kind, "run": run_id, "model": model})

    # -- what a recording stored --------------------------------------------------

    def prompts(self, run_id: int) -> pd.DataFrame:
        """A run's prompts: prompt_id, text, n_tokens."""
        return self._select("SELECT prompt_id, text, n_tokens FROM prompts WHERE run_id = ? ORDER BY prompt_id",
                            [run_id])

    def tokens(self, run_id: int, prompt_id: int) -> pd.DataFrame:
        """One prompt's tokens: position, token_id, token (its text)."""
        return self._select("SELECT position, token_id, token FROM tokens WHERE run_id = ? AND prompt_id = ? "
                            "ORDER BY position", [run_id, prompt_id])

    def token_stats(self, run_id: int, prompt_id: int, site: str = "resid_post") -> pd.DataFrame:
        """One prompt's per-token statistics at every recorded layer: position, layer, l2_norm, max_abs, max_dim,
        median_abs."""
        return self._select("SELECT position, layer, l2_norm, max_abs, max_dim, median_abs FROM layer_stats "
                            "WHERE run_id = ? AND prompt_id = ? AND site = ? ORDER BY layer, position",
                            [run_id, prompt_id, site])

    def top_activations(self, run_id: int, site: str, top_n: int) -> pd.DataFrame:
        """Per prompt and layer, the `top_n` largest |activations| (exact for top_n <= the run's top-k): prompt_id,
        layer, rank, position, token, dim, value, and median_abs, the median |x| of the prompt's hidden state."""
        return self._select(_TOP_ACTIVATIONS, {"run": run_id, "site": site, "top_n": top_n})

    def first_nonfinite(self, run_id: int, site: str) -> dict | None:
        """The earliest layer (then prompt, position) holding inf or NaN in a run, or None."""
        rows = self._select(
            "SELECT layer, prompt_id, first_nonfinite_position AS position FROM prompt_layer_stats "
            "WHERE run_id = ? AND site = ? AND n_nonfinite > 0 ORDER BY layer, prompt_id LIMIT 1", [run_id, site])
        return None if rows.empty else {k: int(v) for k, v in rows.iloc[0].items()}

    def layer_dim_max(self, run_id: int, site: str) -> pd.DataFrame:
        """Per layer and dimension, the largest |activation| among the tokens' top-k entries: layer, dim, max_abs."""
        return self._select(_LAYER_DIM_MAX, [run_id, site])

    def tensor_paths(self, run_id: int, kind: str) -> list[str]:
        """Absolute Parquet paths holding `kind` tensors of a run."""
        rows = self._select("SELECT path FROM tensor_files WHERE run_id = ? AND kind = ? ORDER BY path",
                            [run_id, kind])
        return [str(self.tensor_dir / p) for p in rows.path]

    def orphan_files(self) -> list[Path]:
        """Files in the tensor folder that no run registered (a recording killed after writing a file and before
        registering it, or a half-written `.partial`), except those of a run still being written."""
        if not self.tensor_dir.is_dir():
            return []
        registered = set(self._select("SELECT path FROM tensor_files").path) if self.path.exists() else set()
        writing = set(self.list_runs().query("status == 'running'").run_id)
        orphans = []
        for file in sorted(self.tensor_dir.glob("run_*/*")):
            run = file.parent.name.removeprefix("run_")
            if str(file.relative_to(self.tensor_dir)) not in registered and not (run.isdigit() and int(run) in writing):
                orphans.append(file)
        return orphans

    def read_tensors(self, run_id: int, kind: str, *, prompt_id: int | None = None,
                     partial: bool = False) -> pd.DataFrame:
        """Rows of a run's `kind` tensor files (`resid_post`, `attn_out`, `mlp_out`: prompt_id, position, layer,
        vector; `attention`: prompt_id, layer, head, query, key, weight), of one prompt or all. A run that did not
        complete (running, interrupted, failed, abandoned) is refused unless `partial`."""
        if not partial:
            self.completed_run(run_id)
        paths = self._stored_paths(run_id, kind)
        if prompt_id is None:
            return self._select("SELECT * FROM read_parquet(?)", [paths])
        return self._select("SELECT * FROM read_parquet(?) WHERE prompt_id = ?", [paths, prompt_id])

    def attention_runs(self) -> pd.DataFrame:
        """Complete runs that kept attention maps: run_id, model, prompts, created_at, newest first."""
        return self._select(_ATTENTION_RUNS)

    def sink_mass(self, run_id: int) -> pd.DataFrame:
        """Per layer and head of a run's attention maps, the mean weight on position 0 over every query after it
        (sink_mass), the same for uniform attention over the visible keys (uniform_mass), and n_queries."""
        return self._select(_SINK_MASS, [self._stored_paths(run_id, "attention")])

    # -- stored analyses ----------------------------------------------------------

    def massive_findings(self, analysis_id: int) -> pd.DataFrame:
        """A massive-activation detection's findings, by prompt, layer and rank."""
        return self._results("massive_findings", analysis_id, "prompt_id, layer, rank")

    def sink_attention(self, analysis_id: int) -> pd.DataFrame:
        """Per layer and head, the attention share on a detection's massive-activation tokens."""
        return self._results("sink_attention", analysis_id, "layer, head")

    def massive_dynamics(self, analysis_id: int) -> pd.DataFrame:
        """The per-checkpoint metrics of a dynamics analysis: checkpoint, step, layer, metric, value."""
        return self._results("massive_dynamics", analysis_id, "step, layer, metric")

    def dynamics_fits(self, analysis_id: int, metric: str | None = None) -> pd.DataFrame:
        """The fitted curve parameters of a dynamics analysis (of one metric, or all)."""
        return self._select("SELECT * EXCLUDE (analysis_id) FROM dynamics_fits WHERE analysis_id = $id AND "
                            "($metric IS NULL OR metric = $metric) ORDER BY metric, layer, parameter",
                            {"id": analysis_id, "metric": metric})

    def direction_quality(self, analysis_id: int) -> pd.DataFrame:
        """Per layer, a direction analysis's quality (norm, AUROC, accuracy, ...), without the vectors."""
        return self._select("SELECT * EXCLUDE (analysis_id, vector) FROM directions WHERE analysis_id = ? "
                            "ORDER BY layer", [analysis_id])

    def direction_vectors(self, analysis_id: int) -> dict[int, np.ndarray]:
        """The vectors of a direction analysis, by layer (empty when it holds none)."""
        rows = self._select("SELECT layer, vector FROM directions WHERE analysis_id = ? ORDER BY layer",
                            [analysis_id])
        return {int(r.layer): np.asarray(r.vector, dtype=np.float32) for r in rows.itertuples()}

    def direction_projections(self, analysis_id: int) -> pd.DataFrame:
        """Each example's projection on a direction analysis's direction, per layer and split."""
        return self._select("SELECT layer, split, example_id, label, projection FROM direction_projections "
                            "WHERE analysis_id = ? ORDER BY layer, split, example_id", [analysis_id])

    def steering_sweep(self, analysis_id: int) -> pd.DataFrame:
        """A steering sweep's rows, by layer and alpha."""
        return self._results("steering_sweep", analysis_id, "layer, alpha")

    def steering_trials(self, analysis_id: int) -> pd.DataFrame:
        """A steering sweep's continuations, steered and not, with their scores and perplexities."""
        return self._results("steering_trials", analysis_id, "steered, layers, alpha, prompt_id")

    def sparse_selections(self, analysis_id: int) -> pd.DataFrame:
        """The selections of a sparse-attention inspection."""
        return self._results("sparse_selections", analysis_id)

    def sparse_sweep(self, analysis_id: int) -> pd.DataFrame:
        """The rows of an accuracy-sparsity sweep."""
        return self._results("sparse_sweep", analysis_id)

    def kernel_benchmarks(self) -> pd.DataFrame:
        """Every stored kernel benchmark row, newest run first."""
        if not self.path.exists():
            return pd.DataFrame()
        return self._select("SELECT * FROM kernel_benchmarks ORDER BY analysis_id DESC, op")

    def delta_memory_by_layer(self, analysis_id: int) -> pd.DataFrame:
        """Per layer of a delta-memory analysis: mean beta, mean overwrite, largest state norm and rank, the
        heads' median decay half-life and memory span, and how many heads act as long-range memory or local
        mixers (over every prompt)."""
        return self._select(
            "WITH writes AS (SELECT layer, avg(beta) AS mean_beta, avg(overwrite) AS mean_overwrite, "
            "max(state_norm) AS max_state_norm, max(state_rank) AS max_rank FROM delta_memory WHERE analysis_id = ? "
            "GROUP BY layer), spans AS (SELECT layer, median(half_life) AS median_half_life, "
            "median(span_median) AS median_span, count_if(role = 'long-range memory') AS long_range_heads, "
            "count_if(role = 'local mixer') AS local_heads FROM delta_decay WHERE analysis_id = ? GROUP BY layer) "
            "SELECT * FROM writes LEFT JOIN spans USING (layer) ORDER BY layer", [analysis_id, analysis_id])

    def delta_comparison_by_layer(self, analysis_id: int) -> pd.DataFrame:
        """Per layer of a delta-memory comparison: the heads' mean and largest final-state distance, the head that
        diverges most, and the mean read-out distance over the shared tokens."""
        return self._select("SELECT layer, avg(state_distance) AS mean_state_distance, max(state_distance) AS "
                            "max_state_distance, arg_max(head, state_distance) AS most_divergent_head, "
                            "avg(readout_distance_mean) AS mean_readout_distance FROM delta_compare_heads WHERE "
                            "analysis_id = ? GROUP BY layer ORDER BY layer", [analysis_id])

    def lens_by_layer(self, analysis_id: int) -> pd.DataFrame:
        """Per lens (logit, tuned) and layer of a logit-lens analysis, over every prompt and position: mean KL to
        the final layer, mean entropy, the target's mean probability and how often it is the lens's top token."""
        return self._select("SELECT lens, layer, avg(kl_to_final) AS mean_kl_to_final, avg(entropy) AS "
                            "mean_entropy, avg(target_prob) FILTER (WHERE target_rank >= 0) AS mean_target_prob, "
                            "avg(CASE WHEN target_rank = 0 THEN 1.0 WHEN target_rank > 0 THEN 0.0 END) AS "
                            "target_top1 FROM lens WHERE analysis_id = ? GROUP BY lens, layer ORDER BY lens, layer",
                            [analysis_id])

    def tuned_lens_kl(self, analysis_id: int) -> pd.DataFrame:
        """A tuned-lens analysis's KL to the final layer by layer: logit lens and tuned lens on held-out texts."""
        return self._results("tuned_lens_kl", analysis_id, "layer")

    def attention_tiles(self, analysis_id: int, prompt_id: int, layer: int, head: int) -> pd.DataFrame:
        """One head's tile map of an attention-summary analysis: block, query_block, key_block, mass."""
        return self._select("SELECT block, query_block, key_block, mass FROM attention_tiles WHERE analysis_id = ? "
                            "AND prompt_id = ? AND layer = ? AND head = ? ORDER BY query_block, key_block",
                            [analysis_id, prompt_id, layer, head])

    def attention_top_keys(self, analysis_id: int, prompt_id: int, layer: int) -> pd.DataFrame:
        """The top keys of an attention-summary analysis's chosen queries at one layer: head, query, rank, key,
        token, weight."""
        return self._select("SELECT head, query, rank, key, token, weight FROM attention_top_keys WHERE analysis_id = "
                            "? AND prompt_id = ? AND layer = ? ORDER BY head, query, rank",
                            [analysis_id, prompt_id, layer])

    def attention_summary_by_layer(self, analysis_id: int) -> pd.DataFrame:
        """Per layer of an attention-summary analysis, over its prompts, heads and queries: mean sink weight,
        entropy and distance, and the largest head's mean distance (how far its longest-reaching head looks)."""
        return self._select("SELECT layer, avg(sink) AS mean_sink, avg(entropy) AS mean_entropy, avg(distance) AS "
                            "mean_distance, max(distance) AS farthest_head_distance FROM (SELECT layer, head, "
                            "avg(sink) AS sink, avg(entropy) AS entropy, avg(distance) AS distance FROM "
                            "attention_queries WHERE analysis_id = ? GROUP BY layer, head) GROUP BY layer ORDER BY "
                            "layer", [analysis_id])

    def attention_queries(self, analysis_id: int, prompt_id: int, layer: int) -> pd.DataFrame:
        """Per head and position of one layer of an attention-summary analysis: token, sink, entropy, distance."""
        return self._select("SELECT head, position, token, sink, entropy, distance FROM attention_queries WHERE "
                            "analysis_id = ? AND prompt_id = ? AND layer = ? ORDER BY head, position",
                            [analysis_id, prompt_id, layer])

    def patching(self, analysis_id: int) -> pd.DataFrame:
        """An activation-patching analysis's cells: per site, layer and position (or head), exact and estimated."""
        return self._results("patching", analysis_id, "site, layer, position, head")

    def patching_by_layer(self, analysis_id: int) -> pd.DataFrame:
        """Per site and layer of an activation-patching analysis: the position (or head) that restores most, how
        much, and the attribution-patching estimate there."""
        return self._select("SELECT site, layer, arg_max(position, restored) AS best_position, "
                            "arg_max(head, restored) AS best_head, "
                            "arg_max(token, restored) AS best_token, max(restored) AS max_restored, "
                            "arg_max(estimated, restored) AS estimated_there FROM patching "
                            "WHERE analysis_id = ? GROUP BY site, layer ORDER BY site, layer", [analysis_id])

    def logit_attribution(self, analysis_id: int) -> pd.DataFrame:
        """A logit-attribution analysis's terms: per prompt, component and layer, in the residual's order."""
        return self._results("logit_attribution", analysis_id, "prompt_id, layer, component, head")

    def delta_state(self, analysis_id: int, prompt_id: int, layer: int, head: int, step: int) -> np.ndarray | None:
        """A whole state kept by a delta-memory analysis as a [K, V] array; None when it was too large to keep;
        `StoreError` when none was kept at that step."""
        row = self._select("SELECT key_dim, value_dim, state, state IS NULL AS dropped FROM delta_states WHERE "
                           "analysis_id = ? AND prompt_id = ? AND layer = ? AND head = ? AND step = ?",
                           [analysis_id, prompt_id, layer, head, step])
        if row.empty:
            raise StoreError(f"analysis {analysis_id} kept no state for prompt {prompt_id}, layer {layer}, "
                             f"head {head}, step {step}")
        if row.dropped[0]:
            return None
        return np.asarray(row.state[0], dtype=np.float32).reshape(int(row.key_dim[0]), int(row.value_dim[0]))
