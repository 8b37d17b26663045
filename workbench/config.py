"""Settings of each kind of job, as frozen dataclasses stored as JSON with the run."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class RecordConfig:
    """What a recording captures and keeps.

    The residual stream after every block (TransformerLens's `hook_resid_post`)
    is always summarised per token; `attn_out` and `mlp_out` add those sites.
    `vectors` keeps the full vectors of every captured site, `attention` the
    full attention maps; both are sized up front and refused above
    `max_tensor_gb`, which the user can raise.
    """

    batch_size: int = 8
    layers: tuple[int, ...] | None = None
    attention: bool = False
    attn_out: bool = False
    mlp_out: bool = False
    vectors: bool = False
    top_k: int = 8
    max_tensor_gb: float = 2.0

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise WorkbenchError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise WorkbenchError(f"top_k must be a positive integer, got {self.top_k!r}")
        if self.max_tensor_gb <= 0:
            raise WorkbenchError(f"max_tensor_gb must be positive, got {self.max_tensor_gb!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            if not self.layers:
                raise WorkbenchError("layers is empty: pass None for every layer or a list of block indices")

    @property
    def sites(self) -> tuple[str, ...]:
        """The vector sites captured, in execution order within a block."""
        return tuple(s for s, on in (("attn_out", self.attn_out), ("mlp_out", self.mlp_out)) if on) + ("resid_post",)

    def to_dict(self) -> dict:
        return asdict(self)
