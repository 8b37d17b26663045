"""The bundled demo model: architecture, tokenizer, and the measurements its card reports.

A small Llama (RMSNorm, RoPE, SwiGLU, grouped-query attention) trained from scratch on
the generated corpus (``workbench.corpus``) by ``analyses/train_demo_model.py``. The
evaluation helpers take any Hugging Face causal LM the workbench loads (the training run's
model in memory, or the shipped files), and measure through the workbench's own functions
(block outputs, massive-activation statistics, directions, retrieval's answer check), so the
card, the tests and the app report one quantity the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast

from workbench.corpus.retrieval import RetrievalItem, answer_reproduced, item_tokens
from workbench.massive.statistics import pooled_statistics
from workbench.models import LoadedModel, wrap_model
from workbench.steering.concepts import Example
from workbench.steering.directions import direction_vectors, heldout_accuracy, midpoint_threshold, residuals

BOS, EOS, PAD = "<s>", "</s>", "<pad>"  # token ids 0, 1, 2
MAX_VOCAB = 4096

STORY_PROMPTS = (
    "One day, Maya went to the farm.", "Today, Tom goes to the bakery.",
    "Once upon a time, there was a child named Leo.",
    "In the morning, Sara wakes up early.", "Ben lived near the harbour with his grandmother.",
    "The storm was cold and harsh.", "Nora gets a good mark on the test.", "The train is late and crowded.",
    "Omar had a plan for the day.", "At the zoo, Lily",
)
MASSIVE_PROMPTS = (
    "One day, Maya went to the farm with her dog. The sun was bright, and everyone was happy.",
    "Tom hated the soup. It was cold and stale, and the day ended in tears.",
    "Remember the value of each key.\nkey 4821 : value 7735\nkey 1093 : value 5512\n"
    "Question: what is the value of key 4821? Answer: 7735",
    "After school, Priya studied for the history lesson. The teacher praised her, and she smiled.",
)


@dataclass(frozen=True)
class Architecture:
    """Shape of a demo model; ``model_config`` turns it into its transformers config.

    With ``softmax_layers`` None the model is a Llama; with a tuple it is the DeltaNet hybrid (fla's format):
    DeltaNet layers of ``num_heads`` heads everywhere except those layers, which keep grouped-query softmax
    attention.
    """

    hidden_size: int = 192
    num_layers: int = 8
    num_heads: int = 6
    num_kv_heads: int = 2
    intermediate_size: int = 384
    context_length: int = 1024
    rope_theta: float = 10000.0
    softmax_layers: tuple[int, ...] | None = None

    def model_config(self, vocab_size: int):
        return self.llama_config(vocab_size) if self.softmax_layers is None else self.hybrid_config(vocab_size)

    def hybrid_config(self, vocab_size: int):
        from workbench.deltanet import DeltaNetConfig

        return DeltaNetConfig(
            vocab_size=-(-vocab_size // 64) * 64, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_heads=self.num_heads, intermediate_size=self.intermediate_size, norm_eps=1e-5,
            max_position_embeddings=self.context_length,
            attn={"layers": list(self.softmax_layers), "num_heads": self.num_heads,
                  "num_kv_heads": self.num_kv_heads, "rope_theta": self.rope_theta},
            tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=2,
        )

    def llama_config(self, vocab_size: int) -> LlamaConfig:
        if self.num_heads % self.num_kv_heads or self.num_kv_heads >= self.num_heads:
            raise ValueError("need fewer KV heads than heads, dividing them; "
                             f"got {self.num_kv_heads} KV heads for {self.num_heads} heads")
        return LlamaConfig(
            vocab_size=-(-vocab_size // 64) * 64,  # round up: tensor-core friendly, spare rows never used
            hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads, head_dim=self.hidden_size // self.num_heads,
            max_position_embeddings=self.context_length, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=2,
        )


TINY = Architecture(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                    context_length=256)
# The demo model's retrieval dies when the attention of layer 1 or 6 is zeroed (to 0% of the 512-token
# held-out items; any other layer: 40-90%; tests/test_demo_model.py checks it), so the hybrid keeps softmax attention there and is warm-started
# from the demo model (`workbench.deltanet.from_llama`). (The DeltaNet paper's from-scratch hybrids use the
# second and the (N/2 + 1)-th layer.)
HYBRID = Architecture(softmax_layers=(1, 6))
TINY_HYBRID = Architecture(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                           context_length=256, softmax_layers=(1,))


def train_tokenizer(texts: Iterable[str], vocab_size: int = MAX_VOCAB) -> PreTrainedTokenizerFast:
    """Byte-level BPE that splits digits one by one and prepends BOS to every encoding.

    Single digits make numbers tokenize the same way wherever they appear, which the
    retrieval tasks rely on. The corpus has a closed vocabulary, so training stops
    when every word is one token, usually below ``vocab_size``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD], min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def encode_documents(tokenizer: PreTrainedTokenizerFast, docs: Sequence[str],
                     chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Token stream ``BOS doc EOS BOS doc EOS ...`` (int32) and each document's start offset."""
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    pieces, lengths = [], []
    for at in range(0, len(docs), chunk):
        for enc in encode(list(docs[at:at + chunk])):
            ids = enc.ids + [tokenizer.eos_token_id]
            pieces.append(np.asarray(ids, dtype=np.int32))
            lengths.append(len(ids))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return np.concatenate(pieces), starts


def document_windows(tokens: np.ndarray, starts: np.ndarray, length: int,
                     limit: int | None = None) -> np.ndarray:
    """Non-overlapping windows of ``length`` tokens, each beginning at a document start."""
    out, end = [], 0
    for s in starts:
        if s >= end and s + length <= len(tokens):
            out.append(tokens[s:s + length])
            end = s + length
            if limit and len(out) == limit:
                break
    return np.stack(out) if out else np.zeros((0, length), dtype=tokens.dtype)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def heldout_loss(model, windows: np.ndarray | torch.Tensor, batch_size: int = 16, bos_id: int = 0) -> float:
    """Mean next-token cross-entropy over windows ``[N, T+1]``; predicting BOS is not counted
    (it only marks where packing joined two documents)."""
    windows = torch.as_tensor(windows, dtype=torch.long)
    if len(windows) == 0:
        raise ValueError("no windows to evaluate: the held-out split is shorter than one window")
    total, count = 0.0, 0
    for at in range(0, len(windows), batch_size):
        batch = windows[at:at + batch_size].to(_device(model))
        logits = model(batch[:, :-1]).logits.float()  # [B, T, V]
        target = batch[:, 1:].masked_fill(batch[:, 1:] == bos_id, -100)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100, reduction="sum")
        total += loss.item()
        count += int((target != -100).sum())
    return total / max(count, 1)


@torch.no_grad()
def retrieval_correct(model, tokenizer, items: Sequence[RetrievalItem | dict],
                      batch_size: int = 16) -> list[bool]:
    """Whether greedy decoding after ``Answer:`` reproduces each item's answer exactly
    (`retrieval.answer_reproduced`), checked for a batch of items in one teacher-forced pass."""
    encoded = [item_tokens(tokenizer, item) for item in items]  # (full ids, prompt length)
    order = sorted(range(len(items)), key=lambda i: len(encoded[i][0]))
    correct = [False] * len(items)
    for at in range(0, len(order), batch_size):
        chunk = order[at:at + batch_size]
        width = max(len(encoded[i][0]) for i in chunk)
        batch = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        for row, i in enumerate(chunk):
            batch[row, :len(encoded[i][0])] = torch.tensor(encoded[i][0])
        # [B, T]; right padding cannot affect earlier positions under causal attention
        predicted = model(batch.to(_device(model))).logits.argmax(-1).cpu()
        for row, i in enumerate(chunk):
            full, n_prompt = encoded[i]
            correct[i] = answer_reproduced(predicted[row, n_prompt - 1:len(full) - 1].tolist(), full[n_prompt:])
    return correct


def retrieval_accuracy(model, tokenizer, items: Sequence[RetrievalItem | dict],
                       batch_size: int = 16) -> float:
    """Share of items whose answer greedy decoding reproduces exactly."""
    if not items:
        raise ValueError("no retrieval items given")
    return float(np.mean(retrieval_correct(model, tokenizer, items, batch_size)))


def as_loaded(model, tokenizer) -> LoadedModel:
    """A model in memory (a training run's) as the workbench's `LoadedModel`, so the card's measurements run
    through the same functions as the app's."""
    return model if isinstance(model, LoadedModel) else wrap_model(model, tokenizer, "demo")


def massive_activation_stats(model, tokenizer, prompts: Sequence[str] = MASSIVE_PROMPTS) -> list[dict]:
    """Per layer, the pooled massive-activation statistics of the block outputs over `prompts`
    (`workbench.massive.statistics.pooled_statistics`)."""
    return pooled_statistics(as_loaded(model, tokenizer), prompts)


def concept_separability(model, tokenizer, splits: dict[str, Sequence[dict]], label: str = "sentiment",
                         positive: str = "positive") -> dict:
    """Held-out accuracy of a difference-of-means direction at each layer's last token, thresholded at the
    midpoint of the training projections (`directions.midpoint_threshold`).

    ``splits`` maps train / validation / test to labelled sentences (``{"text", label}``). The direction is
    fitted on train, the best layer picked on validation, and the accuracy reported on test, so the choice of
    layer does not flatter the number.
    """
    loaded = as_loaded(model, tokenizer)
    layers = list(range(loaded.n_layers))
    examples = {split: [Example(s["text"], "positive" if s[label] == positive else "negative")
                        for s in splits[split]] for split in ("train", "validation", "test")}
    states = {split: residuals(loaded, rows, layers, "last") for split, rows in examples.items()}  # [N, L, D]
    units = direction_vectors(states["train"], examples["train"], "positive", "diff_means")
    units = units / units.norm(dim=-1, keepdim=True)  # [L, D]

    def scores(split, layer):
        projected = (states[split][:, layer] @ units[layer]).numpy()
        is_positive = np.array([e.label == "positive" for e in examples[split]])
        return projected[is_positive], projected[~is_positive]

    thresholds = [midpoint_threshold(*scores("train", layer)) for layer in layers]
    by_layer = {split: [heldout_accuracy(*scores(split, layer), thresholds[layer]) for layer in layers]
                for split in ("validation", "test")}
    best = int(np.argmax(by_layer["validation"]))
    return {"label": label, "positive": positive, "best_layer": best, "test_accuracy": by_layer["test"][best],
            "validation_accuracy_by_layer": by_layer["validation"],
            "test_accuracy_by_layer": by_layer["test"],
            "n": {split: len(splits[split]) for split in splits}}


@torch.no_grad()
def sample_continuations(model, tokenizer, prompts: Sequence[str] = STORY_PROMPTS, max_new_tokens: int = 48,
                         temperature: float = 0.8, seed: int = 0) -> list[dict]:
    """Greedy and sampled continuations of each prompt (sampling seeded, so repeatable)."""
    out = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt).input_ids], device=_device(model))
        row = {"prompt": prompt}
        for name, kwargs in (("greedy", {"do_sample": False}),
                             ("sampled", {"do_sample": True, "temperature": temperature, "top_k": 0})):
            torch.manual_seed(seed)
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                 **kwargs)
            row[name] = tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
        out.append(row)
    return out
