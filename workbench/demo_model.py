"""The bundled demo model: architecture, tokenizer, and the measurements its card reports.

A small Llama (RMSNorm, RoPE, SwiGLU, grouped-query attention) trained from scratch on
the generated corpus (``workbench.corpus``) by ``analyses/train_demo_model.py``. The
evaluation helpers take any Hugging Face Llama-family causal LM, so tests and the
model card measure the shipped files with the same code the training run used.
Imports only torch, transformers and tokenizers (no tracing or database libraries).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast

from workbench.corpus.retrieval import RetrievalItem

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


def _item(item: RetrievalItem | dict) -> tuple[str, str]:
    return (item.prompt, item.answer) if isinstance(item, RetrievalItem) else (item["prompt"], item["answer"])


@torch.no_grad()
def retrieval_correct(model, tokenizer, items: Sequence[RetrievalItem | dict],
                      batch_size: int = 16) -> list[bool]:
    """Whether greedy decoding after ``Answer:`` reproduces each item's answer exactly.

    Checked in one teacher-forced pass: greedy decoding emits the answer if and only
    if, at every answer position, the arg-max next token given the prompt and the
    answer so far is the answer's token.
    """
    encoded = []
    for item in items:
        prompt, answer = _item(item)
        p, full = tokenizer(prompt).input_ids, tokenizer(f"{prompt} {answer}").input_ids
        if full[:len(p)] != p:
            raise ValueError(f"prompt tokens change when the answer is appended: {prompt[-40:]!r}")
        encoded.append((p, full))
    order = sorted(range(len(items)), key=lambda i: len(encoded[i][1]))
    correct = [False] * len(items)
    for at in range(0, len(order), batch_size):
        chunk = order[at:at + batch_size]
        width = max(len(encoded[i][1]) for i in chunk)
        batch = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        for row, i in enumerate(chunk):
            batch[row, :len(encoded[i][1])] = torch.tensor(encoded[i][1])
        # [B, T]; right padding cannot affect earlier positions under causal attention
        predicted = model(batch.to(_device(model))).logits.argmax(-1).cpu()
        for row, i in enumerate(chunk):
            p, full = encoded[i]
            correct[i] = predicted[row, len(p) - 1:len(full) - 1].tolist() == full[len(p):]
    return correct


def retrieval_accuracy(model, tokenizer, items: Sequence[RetrievalItem | dict],
                       batch_size: int = 16) -> float:
    """Share of items whose answer greedy decoding reproduces exactly."""
    if not items:
        raise ValueError("no retrieval items given")
    return float(np.mean(retrieval_correct(model, tokenizer, items, batch_size)))


@torch.no_grad()
def block_outputs(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Residual stream after each decoder block, ``[B, T, D]`` per layer (float32)."""
    captured: list[torch.Tensor] = []

    def hook(_module, _args, output):
        captured.append((output[0] if isinstance(output, tuple) else output).float())

    handles = [layer.register_forward_hook(hook) for layer in model.model.layers]
    try:
        model(input_ids.to(_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return captured


def massive_activation_stats(model, tokenizer, prompts: Sequence[str] = MASSIVE_PROMPTS) -> list[dict]:
    """Per layer: the largest |activation| of the block outputs over all prompts, where it is
    (token position in its prompt, feature dimension, token), the median |activation| over
    all prompts' elements, and their ratio (Sun et al. call it massive when the top is
    > 100 and > 1000x the median)."""
    per_prompt = [block_outputs(model, torch.tensor([tokenizer(p).input_ids])) for p in prompts]
    rows = []
    for layer in range(len(per_prompt[0])):
        states = [outs[layer][0].abs().cpu() for outs in per_prompt]  # [T, D] each
        best = max(range(len(states)), key=lambda i: float(states[i].max()))
        flat = int(states[best].argmax())
        position, dim = divmod(flat, states[best].shape[1])
        top = float(states[best].max())
        median = float(torch.cat([s.flatten() for s in states]).median())
        token = tokenizer.convert_ids_to_tokens(tokenizer(prompts[best]).input_ids[position])
        rows.append({"layer": layer, "top_abs": top, "top_position": position, "top_dim": dim,
                     "median_abs": median, "ratio": top / max(median, 1e-12), "top_token": token})
    return rows


@torch.no_grad()
def last_token_states(model, tokenizer, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Residual stream at each text's last token after every block: ``[L, N, D]`` float32 on CPU."""
    layers: list[list[torch.Tensor]] = []
    for at in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[at:at + batch_size]), padding=True, return_tensors="pt")
        last = enc.attention_mask.sum(1) - 1  # right padding: last real token
        outs = block_outputs(model, enc.input_ids)
        layers.append([o[torch.arange(len(last)), last.to(o.device)].cpu() for o in outs])
    return torch.stack([torch.cat(parts) for parts in zip(*layers)])


def mean_difference_accuracy(train_x: torch.Tensor, train_y: torch.Tensor,
                             test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Accuracy on ``test`` of the difference-of-means direction fitted on ``train``
    ([N, D] states, boolean labels), thresholded halfway between the projected class means."""
    direction = train_x[train_y].mean(0) - train_x[~train_y].mean(0)
    threshold = (train_x[train_y].mean(0) @ direction + train_x[~train_y].mean(0) @ direction) / 2
    return float(((test_x @ direction > threshold) == test_y).float().mean())


def concept_separability(model, tokenizer, splits: dict[str, Sequence[dict]], label: str = "sentiment",
                         positive: str = "positive") -> dict:
    """Held-out accuracy of a difference-of-means direction at each layer's last token.

    ``splits`` maps train / validation / test to labelled sentences (``{"text", label}``).
    The direction is fitted on train, the best layer picked on validation, and the
    accuracy reported on test, so the choice of layer does not flatter the number.
    """
    states, labels = {}, {}
    for split in ("train", "validation", "test"):
        states[split] = last_token_states(model, tokenizer, [s["text"] for s in splits[split]])
        labels[split] = torch.tensor([s[label] == positive for s in splits[split]])
    by_layer = {split: [mean_difference_accuracy(states["train"][layer], labels["train"],
                                                 states[split][layer], labels[split])
                        for layer in range(len(states["train"]))] for split in ("validation", "test")}
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
