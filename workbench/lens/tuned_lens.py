"""The tuned lens (Belrose et al. 2023): per layer an affine translator h -> h + W h + b, trained so that the
translated residual read out through the model's final norm and LM head matches the final layer's distribution.

Each translator starts as the identity (W = 0, b = 0: the logit lens) and is trained by Adam to minimise the KL
divergence from the final layer's next-token distribution to the translated layer's, averaged over the training
texts' positions; the model stays frozen. The last layer's translator is the identity (its lens is the model's own
output). The translators are a safetensors file (`translator.L.weight` [D, D], `translator.L.bias` [D], the model
and training settings in its metadata) that `load_tuned_lens` reads back and `logit_lens(..., tuned=...)` applies.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.config import RecordConfig
from workbench.errors import WorkbenchError
from workbench.lens.logit_lens import check_readable, kl_divergence, read_out
from workbench.models import LoadedModel
from workbench.prompts import validate_prompts
from workbench.recording import capture, tokenize


@dataclass
class TunedLens:
    """Per layer (all but the last) the translator's W [D, D] and b [D], and how it was made."""

    weights: dict[int, torch.Tensor]
    biases: dict[int, torch.Tensor]
    meta: dict

    def translate(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """h + W h + b for `layer` (h itself for a layer without a translator: the last)."""
        if layer not in self.weights:
            return hidden
        w, b = self.weights[layer].to(hidden), self.biases[layer].to(hidden)
        return hidden + hidden @ w.T + b


def default_texts(n: int = 64, split: str = "train", seed: int = 0) -> list[str]:
    """Stories of the demo corpus's generator (`workbench.corpus.stories`), `n` of them from `split`."""
    from workbench.corpus import stories

    rng = random.Random(f"tuned-lens/{split}/{seed}")
    return [stories.story(rng, stories.random_attributes(rng), split) for _ in range(n)]


@torch.no_grad()
def _activations(model: LoadedModel, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer's residual [L, N, D] and the final log-probabilities [N, V] over all texts' positions (fp32)."""
    hidden, final = [], []
    for row in tokenize(model, validate_prompts(texts)):
        ids = torch.tensor([row], device=model.device)
        residual = capture(model, ids, torch.ones_like(ids), list(range(model.n_layers)), RecordConfig())
        hidden.append(torch.stack([h[0].float() for h in residual["resid_post"]]))
        final.append(torch.log_softmax(model.hf(input_ids=ids).logits[0].float(), dim=-1))
    return torch.cat(hidden, dim=1), torch.cat(final)


def lens_kl(model: LoadedModel, lens: TunedLens | None, texts: list[str]) -> list[float]:
    """Per layer, the mean KL(final || lens) over the texts' positions: the logit lens's with `lens` None."""
    return _kl_by_layer(model, lens, *_activations(model, texts))


@torch.no_grad()
def _kl_by_layer(model: LoadedModel, lens: TunedLens | None, hidden: torch.Tensor, final: torch.Tensor
                 ) -> list[float]:
    """`lens_kl` of activations already taken (`_activations`)."""
    return [float(_kl(final, torch.log_softmax(read_out(model, lens.translate(layer, hidden[layer]) if lens
                                                           else hidden[layer]), dim=-1)))
            for layer in range(model.n_layers)]


def _kl(final: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    return kl_divergence(final, logp).mean()


def train_tuned_lens(model: LoadedModel, texts: list[str] | None = None, *, steps: int = 250, lr: float = 1e-3,
                     batch_tokens: int = 512, seed: int = 0) -> TunedLens:
    """Train every layer's translator on `texts` (default: `default_texts()`), `steps` Adam steps of
    `batch_tokens` random positions each."""
    check_readable(model, "tuned lens")
    if not isinstance(steps, int) or steps < 1 or lr <= 0 or batch_tokens < 1:
        raise WorkbenchError(f"need steps >= 1, lr > 0 and batch_tokens >= 1, got {steps}, {lr}, {batch_tokens}")
    texts = default_texts() if texts is None else texts
    hidden, final = _activations(model, texts)
    d = hidden.shape[-1]
    layers = list(range(model.n_layers - 1))
    weights = {layer: torch.zeros(d, d, device=hidden.device, requires_grad=True) for layer in layers}
    biases = {layer: torch.zeros(d, device=hidden.device, requires_grad=True) for layer in layers}
    optimiser = torch.optim.Adam([*weights.values(), *biases.values()], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    frozen = [p.requires_grad for p in model.hf.parameters()]
    for p in model.hf.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            picked = torch.randint(final.shape[0], (min(batch_tokens, final.shape[0]),), generator=generator)
            picked = picked.to(hidden.device)
            loss = sum(_kl(final[picked], torch.log_softmax(read_out(
                model, hidden[layer, picked] + hidden[layer, picked] @ weights[layer].T + biases[layer]), dim=-1))
                for layer in layers) / max(1, len(layers))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        for p, was in zip(model.hf.parameters(), frozen, strict=True):
            p.requires_grad_(was)
    meta = {"model": model.spec, "d_model": d, "n_layers": model.n_layers, "steps": steps, "lr": lr,
            "batch_tokens": batch_tokens, "texts": len(texts), "seed": seed}
    return TunedLens({k: v.detach().cpu() for k, v in weights.items()},
                     {k: v.detach().cpu() for k, v in biases.items()}, meta)


def save_tuned_lens(lens: TunedLens, path: str | Path) -> Path:
    """Write the translators to a safetensors file; it appears whole or not at all."""
    from safetensors.torch import save_file

    from workbench.steering.export import write_atomically

    tensors = {f"translator.{layer}.weight": w.contiguous() for layer, w in lens.weights.items()}
    tensors |= {f"translator.{layer}.bias": b.contiguous() for layer, b in lens.biases.items()}
    return write_atomically(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata={
        "workbench": json.dumps(lens.meta)}))


def load_tuned_lens(path: str | Path, model: LoadedModel | None = None) -> TunedLens:
    """Read translators written by `save_tuned_lens`; with `model`, check they were made for its shape."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"no tuned-lens file at {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("workbench", "null"))
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    except (SafetensorError, OSError, ValueError) as e:
        raise WorkbenchError(f"{path} is not a tuned-lens file: {e}") from e
    if not isinstance(meta, dict) or "d_model" not in meta:
        raise WorkbenchError(f"{path} is a safetensors file but not a tuned lens (no workbench metadata)")
    lens = TunedLens({int(n.split(".")[1]): t for n, t in tensors.items() if n.endswith(".weight")},
                     {int(n.split(".")[1]): t for n, t in tensors.items() if n.endswith(".bias")}, meta)
    if model is not None and (meta["d_model"] != model.d_model or meta["n_layers"] != model.n_layers):
        raise WorkbenchError(f"{path} was trained for {meta['n_layers']} layers of width {meta['d_model']} "
                             f"({meta.get('model')}), but {model.spec} has {model.n_layers} of {model.d_model}")
    return lens


def record_tuned_lens(model: LoadedModel, store, path: str | Path, texts: list[str] | None = None,
                      heldout: list[str] | None = None, **training) -> int:
    """Train a tuned lens (`train_tuned_lens(model, texts, **training)`), write it to `path`, and store as one
    `tuned-lens` analysis the KL to the final layer by layer of the logit and the tuned lens on `heldout` texts
    (default: 32 stories of the test split); returns its id."""
    import pandas as pd

    heldout = default_texts(32, split="test") if heldout is None else heldout
    lens = train_tuned_lens(model, texts, **training)
    activations = _activations(model, heldout)  # taken once, read by both lenses
    logit, tuned = _kl_by_layer(model, None, *activations), _kl_by_layer(model, lens, *activations)
    save_tuned_lens(lens, path)
    rows = pd.DataFrame({"layer": range(model.n_layers), "logit_lens_kl": logit, "tuned_lens_kl": tuned})
    return store.save_analysis("tuned-lens", {**lens.meta, "path": str(Path(path).resolve()),
                                              "heldout": len(heldout)}, {"kl": rows}, model=model.spec,
                               summary={"mean_logit_lens_kl": float(rows.logit_lens_kl[:-1].mean()),
                                        "mean_tuned_lens_kl": float(rows.tuned_lens_kl[:-1].mean())})
