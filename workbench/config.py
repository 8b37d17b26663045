"""Settings of each kind of job, as frozen dataclasses stored as JSON with the run."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from workbench.errors import WorkbenchError

# the delta rule of transformers' Gated DeltaNet layers: the model's own, or workbench_kernels' (`load_model`)
DELTA_KERNELS = ("model", "workbench")
# Parquet compressions of recorded vectors and attention maps (`RecordConfig.compression`)
COMPRESSIONS = ("zstd", "lz4", "snappy", "none")
# activation patching's metrics at the last position (`workbench.lens.patching`)
PATCH_METRICS = ("logit_diff", "logprob", "kl")
# massive-activation metrics per layer under their two poolings (`workbench.massive.statistics` says which is which)
POOLINGS = {"mean over prompts": ("top1", "top2", "top3", "median", "ratio"),
            "pooled": ("top1_pooled", "median_pooled", "ratio_pooled")}
# how two prompts' tokens line up when their delta-rule memories are compared (`workbench.deltanet.compare`)
ALIGNMENTS = ("end", "start")


@dataclass(frozen=True)
class RecordConfig:
    """What a recording captures and keeps.

    The residual stream after every block (TransformerLens's `hook_resid_post`)
    is always summarised per token; `attn_out` and `mlp_out` add those sites, and
    `router` a mixture-of-experts model's router logits (one value per expert: a
    token's top dimensions there are the experts it favours).
    `vectors` keeps the full vectors of every captured site, `attention` the
    full attention maps; both are sized up front and refused above
    `max_tensor_gb`, which the user can raise, and written to Parquet with
    `compression` (zstd: smallest; lz4 or snappy: faster to write and read;
    none). With `attention`, a prompt longer than `map_limit` tokens keeps the
    summaries of `workbench.attention_summaries` (tile masses, per-query sink,
    entropy and distance, the last token's top keys) instead of its T^2 maps.
    """

    batch_size: int = 8
    layers: tuple[int, ...] | None = None
    attention: bool = False
    attn_out: bool = False
    mlp_out: bool = False
    router: bool = False
    vectors: bool = False
    top_k: int = 8
    max_tensor_gb: float = 2.0
    compression: str = "zstd"
    map_limit: int | None = None

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise WorkbenchError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise WorkbenchError(f"top_k must be a positive integer, got {self.top_k!r}")
        if self.max_tensor_gb <= 0:
            raise WorkbenchError(f"max_tensor_gb must be positive, got {self.max_tensor_gb!r}")
        if self.compression not in COMPRESSIONS:
            raise WorkbenchError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        if self.map_limit is not None and (not isinstance(self.map_limit, int) or self.map_limit < 1):
            raise WorkbenchError(f"map_limit must be a positive number of tokens, got {self.map_limit!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            if not self.layers:
                raise WorkbenchError("layers is empty: pass None for every layer or a list of block indices")

    @property
    def sites(self) -> tuple[str, ...]:
        """The vector sites captured, in execution order within a block."""
        chosen = (("attn_out", self.attn_out), ("router", self.router), ("mlp_out", self.mlp_out))
        return tuple(s for s, on in chosen if on) + ("resid_post",)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MassiveConfig:
    """The massive-activation criterion (Sun et al. 2024) and how much of each hidden state to report.

    An activation is massive when |a| > `abs_threshold` and |a| > `ratio_threshold` x the median |x| of
    its hidden state (all tokens and dimensions of one prompt at one layer). `relative_only` drops the
    absolute test, for small models whose activations never reach 100 (as Gallego-Feliciano et al. do).
    """

    abs_threshold: float = 100.0
    ratio_threshold: float = 1000.0
    relative_only: bool = False
    top_n: int = 3
    site: str = "resid_post"

    def __post_init__(self):
        if self.abs_threshold < 0 or self.ratio_threshold <= 0:
            raise WorkbenchError(f"thresholds must be positive, got abs {self.abs_threshold}, "
                                 f"ratio {self.ratio_threshold}")
        if not isinstance(self.top_n, int) or self.top_n < 1:
            raise WorkbenchError(f"top_n must be a positive integer, got {self.top_n!r}")

    def is_massive(self, value_abs, median_abs):
        """Elementwise criterion over arrays of |a| and the median |x| of their hidden states."""
        relative = value_abs > self.ratio_threshold * median_abs
        return relative if self.relative_only else relative & (value_abs > self.abs_threshold)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MemoryConfig:
    """Which delta-rule layers to inspect and which whole states to keep.

    `layers` None means every DeltaNet layer; `steps` are token positions whose state S is stored whole
    (None: `n_steps` evenly spaced positions ending at the last token); a state of more than
    `max_state_floats` numbers is stored as its singular values only (they are stored for every step).
    A head's memory span is the farthest distance holding `span_mass` of a query's effective attention; a
    median span of at most `local_span` tokens makes it a local mixer (`workbench.deltanet.decay`).
    """

    layers: tuple[int, ...] | None = None
    steps: tuple[int, ...] | None = None
    n_steps: int = 8
    max_state_floats: int = 65536
    rank_rtol: float = 1e-2
    span_mass: float = 0.05
    local_span: int = 8

    def __post_init__(self):
        for name in ("layers", "steps"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(sorted({int(v) for v in value})))
                if not getattr(self, name):
                    raise WorkbenchError(f"{name} is empty: pass None for the default or a list")
        if not isinstance(self.n_steps, int) or self.n_steps < 1:
            raise WorkbenchError(f"n_steps must be a positive integer, got {self.n_steps!r}")
        if self.max_state_floats < 0 or not 0 < self.rank_rtol < 1:
            raise WorkbenchError(f"need max_state_floats >= 0 and 0 < rank_rtol < 1, got {self.max_state_floats}, "
                                 f"{self.rank_rtol}")
        if not 0 < self.span_mass < 1 or not isinstance(self.local_span, int) or self.local_span < 0:
            raise WorkbenchError(f"need 0 < span_mass < 1 and a whole local_span >= 0, got {self.span_mass}, "
                                 f"{self.local_span!r}")

    def to_dict(self) -> dict:
        return asdict(self)
