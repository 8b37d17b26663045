"""DELTA (arXiv 2510.09883; official code hoenza/DELTA), emulated inside a Hugging Face model.

What we follow, from the paper and the official engine (public_config.py, model.py, backend.py,
page_selector_v2.py, run_reason_accuracy_8gpu.sh):
- Layer groups: `full_layers` run full attention; a full layer whose next layer is not full is a selection
  (Δ) layer: it also scores the tokens and picks the subset every following sparse layer attends to, until
  the next Δ layer re-selects. The official runs use full layers [0, 1, 2, 14, 22] of 28 (so layers 2, 14
  and 22 select); by default we scale that pattern to the model's depth (`default_full_layers`).
- Scores: the last query's softmax probabilities per head, max over all query heads (one selection shared
  by every head), summed per 16-token page; the budget is a number of pages (official default 64), the
  last L pages are always kept (official L = 8) and a bias of -1e-7 per page index breaks ties towards
  earlier pages; the chosen pages are sorted. Sink pages are not forced. (`selection_scores` with
  page_size, `page_topk` (one Triton launch on CUDA) and `pages_to_tokens` of `workbench_kernels.selection_scores`
  implement exactly this.)
- Refresh: selection happens at every decode step (the Δ layers run full attention each step), the full
  KV cache is kept, and prefill runs full attention in every layer (the selective path is decode-only).
Departures: the budget may be a fraction of the current pages (rounded up) as well as a token count; when
not given, L is budget/8 pages (the official 8 of 64), at least 1, so short contexts keep a proportionate
recent window; `per_kv_head=True` selects per KV group instead (not in the paper). On the CPU the
emulation computes masked dense scores and the softmax over the kept tokens; on CUDA, with `fast=True`,
decode runs through our Triton kernels instead (`fast_decode`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from workbench.errors import WorkbenchError
from workbench.sparse.dense import AttentionCall, attend, dense_probs
from workbench.sparse.selections import block_fraction
from workbench_kernels.selection_scores import page_scores, page_topk, pages_to_tokens, selection_scores
from workbench_kernels.sparse_decode import sparse_decode

OFFICIAL_LAYERS, OFFICIAL_FULL = 28, (0, 1, 2, 14, 22)


def default_full_layers(n_layers: int) -> tuple[int, ...]:
    """The official full/Δ layer pattern scaled from 28 layers to n_layers (28 -> 0, 1, 2, 14, 22)."""
    initial = max(1, round(3 * n_layers / OFFICIAL_LAYERS))
    deltas = {round(layer * n_layers / OFFICIAL_LAYERS) for layer in OFFICIAL_FULL[3:]}
    return tuple(sorted(set(range(initial)) | {d for d in deltas if d < n_layers}))


@dataclass(frozen=True)
class DeltaConfig:
    """DELTA's settings. budget: a float in (0, 1] is a share of the pages, an int >= 1 a number of tokens."""

    budget: float | int = 0.25
    page_size: int = 16
    recent_pages: int | None = None
    full_layers: tuple[int, ...] | None = None
    position_bias: float = 1e-7
    per_kv_head: bool = False
    name = "delta"
    carries = "layers"  # the selection of a Δ layer serves the layers after it

    def __post_init__(self):
        b = self.budget
        share = isinstance(b, float) and 0 < b <= 1
        count = isinstance(b, int) and not isinstance(b, bool) and b >= 1
        if not (share or count):
            raise WorkbenchError(f"DELTA budget must be a share in (0, 1] (float) or a token count >= 1 (int), got {b!r}")
        if self.page_size < 1 or (self.recent_pages is not None and self.recent_pages < 0):
            raise WorkbenchError(f"page_size must be >= 1 and recent_pages >= 0, got {self.page_size}, {self.recent_pages}")
        if self.full_layers is not None:
            object.__setattr__(self, "full_layers", tuple(sorted(set(self.full_layers))))

    def validate(self, n_layers: int) -> None:
        full = self.layers_for(n_layers)
        if not full or full[0] != 0 or full[-1] >= n_layers:
            raise WorkbenchError(f"DELTA full_layers must start with layer 0 (a sparse layer needs an earlier "
                                 f"selection) and lie in 0..{n_layers - 1}, got {full}")

    def layers_for(self, n_layers: int) -> tuple[int, ...]:
        return self.full_layers if self.full_layers is not None else default_full_layers(n_layers)

    def roles(self, n_layers: int) -> list[str]:
        """'full', 'select' (full, and picks the subset) or 'sparse' for each layer."""
        full = set(self.layers_for(n_layers))
        return ["sparse" if i not in full else "select" if i + 1 < n_layers and i + 1 not in full else "full"
                for i in range(n_layers)]

    def budget_pages(self, n_tokens: int) -> int:
        pages = -(-n_tokens // self.page_size)
        if isinstance(self.budget, float):
            return max(1, math.ceil(self.budget * pages))
        return -(-self.budget // self.page_size)

    def recent_for(self, budget_pages: int) -> int:
        return self.recent_pages if self.recent_pages is not None else max(1, budget_pages // 8)

    def to_dict(self) -> dict:
        return {"method": self.name, **asdict(self)}

    def select(self, page_scores: torch.Tensor, n: int) -> torch.Tensor:
        """Token indices kept [..., K] int32 ascending, -1 padded, from the page scores [..., P] of n tokens."""
        k = self.budget_pages(n)
        pages = page_topk(page_scores, k, page_size=1, recent=self.recent_for(k),
                                  position_bias=self.position_bias)
        return pages_to_tokens(pages, self.page_size, n)

    def apply(self, call: AttentionCall, session) -> torch.Tensor:
        role = self.roles(session.n_layers)[call.layer]
        if call.phase == "prefill":
            session.state.pop("delta", None)
        if call.phase == "prefill" or role != "sparse":
            session.log.account(call, call.allowed)
            if call.phase == "decode" and role == "select":
                self._select(call, session)
            return attend(call.scores, None, call.value)
        tokens = session.state["delta"]  # [B, Hkv or 1, K]
        groups = _token_mask(tokens, call.scores.shape[-1])  # [B, Hkv or 1, 1, N]
        keep = groups.repeat_interleave(call.scores.shape[1] // groups.shape[1], dim=1) if groups.shape[1] > 1 else groups
        recall = session.log.account(call, keep)
        for b in range(tokens.shape[0]):
            for h in range(tokens.shape[1]):
                session.log.add(call, sequence=b, head=h if self.per_kv_head else -1, query_block=0,
                                indices=tokens[b, h][tokens[b, h] >= 0],
                                attended_fraction=block_fraction(groups[b, h], call.allowed[b, 0]),
                                recall=None if recall is None else float(_head_slice(recall[b], h, tokens).mean()))
        return attend(call.scores, keep, call.value)

    def _select(self, call: AttentionCall, session) -> None:
        probs = dense_probs(call)  # [B, Hq, 1, N]
        b, _hq, _, n = probs.shape
        if self.per_kv_head:
            scores = probs.view(b, call.key.shape[1], -1, 1, n).amax(2).sum(2)  # [B, Hkv, N]
        else:
            scores = probs.amax(1).sum(1)[:, None]  # [B, 1, N]
        tokens = self.select(page_scores(scores, self.page_size), n)
        session.state["delta"] = tokens
        for i in range(b):
            for h in range(tokens.shape[1]):
                chosen = tokens[i, h][tokens[i, h] >= 0]
                session.log.add(call, sequence=i, head=h if self.per_kv_head else -1, query_block=0,
                                indices=chosen, scores=scores[i, h, chosen.long()], attended_fraction=1.0,
                                recall=1.0 if session.log.recall else None)

    def fast_decode(self, query, key, value, scale, layer: int, session) -> torch.Tensor:
        """One decode step through the kernels: query [B, Hq, 1, D], key/value [B, Hkv, N, D] -> [B, Hq, 1, D].

        Full and Δ layers run dense attention (SDPA over the KV groups); Δ layers also score the pages
        with `selection_scores`; sparse layers run `sparse_decode` over the chosen tokens.
        """
        from workbench.sparse.decode import dense_decode

        role = self.roles(session.n_layers)[layer]
        b, hkv = query.shape[0], key.shape[1]
        if role == "sparse":
            out = sparse_decode(query[:, :, 0], key, value, session.state["delta"], scale=scale)
            return out[:, :, None]
        if role == "select":
            pages = selection_scores(query[:, :, 0], key, scale=scale, per_kv_head=self.per_kv_head,
                                             page_size=self.page_size)  # summed in the kernel's own pass
            tokens = self.select(pages if self.per_kv_head else pages[:, None], key.shape[2])  # [B, Hkv or 1, K]
            session.state["delta"] = tokens.expand(b, hkv, -1).contiguous()
        return dense_decode(query, key, value, scale)


def _token_mask(tokens: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean keep mask [B, H, 1, N] from token indices [B, H, K] (-1 = none)."""
    b, h, _ = tokens.shape
    cols = torch.where(tokens >= 0, tokens.long(), n)
    mask = torch.zeros(b, h, n + 1, dtype=torch.bool, device=tokens.device).scatter_(-1, cols, True)[..., :n]
    return mask[:, :, None]


def _head_slice(recall: torch.Tensor, h: int, tokens: torch.Tensor) -> torch.Tensor:
    """The recall rows [Hq, T] of KV group h (all heads when one selection serves them all)."""
    if tokens.shape[1] == 1:
        return recall
    g = recall.shape[0] // tokens.shape[1]
    return recall[h * g:(h + 1) * g]
