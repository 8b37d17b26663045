"""Random-weight models of any architecture, built locally with a character tokenizer.

Nothing is downloaded: the tests save tiny ones as Hugging Face directories so
they exercise the real loading path, and the benchmarks build large ones in
memory to time the GPU.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers, processors

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list(string.ascii_letters + string.digits + " .,!?'\n:-")
VOCAB = {token: i for i, token in enumerate(SPECIALS + CHARS)}
SIZE = dict(vocab_size=len(VOCAB), pad_token_id=0, bos_token_id=1, eos_token_id=2)
DECODER = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
               max_position_embeddings=128)
ENCODER = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
               vocab_size=len(VOCAB), pad_token_id=0)


def char_tokenizer(bos: str | None = "<s>", eos: str | None = None) -> T.PreTrainedTokenizerFast:
    """One token per character; prepends `bos` (and appends `eos`) like the real tokenizers do."""
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    single = " ".join(t for t in (bos, "$A", eos) if t)
    specials = [(t, VOCAB[t]) for t in (bos, eos) if t]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=specials)
    return T.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


CONFIGS = {
    "gpt2": lambda: T.GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=128, **SIZE),
    "gpt_neox": lambda: T.GPTNeoXConfig(**DECODER, **SIZE),
    "llama": lambda: T.LlamaConfig(**DECODER, num_key_value_heads=2, **SIZE),
    "mistral": lambda: T.MistralConfig(**DECODER, num_key_value_heads=2, **SIZE),
    "qwen2": lambda: T.Qwen2Config(**DECODER, num_key_value_heads=2, **SIZE),
    "qwen3": lambda: T.Qwen3Config(**DECODER, num_key_value_heads=2, head_dim=8, **SIZE),
    "gemma": lambda: T.GemmaConfig(**DECODER, num_key_value_heads=2, head_dim=8, **SIZE),
    # a small soft-cap and window, so that a path that skipped either would give other numbers
    "gemma2": lambda: T.Gemma2Config(**DECODER, num_key_value_heads=2, head_dim=8, attn_logit_softcapping=2.0,
                                     final_logit_softcapping=None, sliding_window=4, query_pre_attn_scalar=8,
                                     **SIZE),
    "gemma3_text": lambda: T.Gemma3TextConfig(**DECODER, num_key_value_heads=2, head_dim=8, sliding_window=4,
                                              layer_types=["sliding_attention", "full_attention",
                                                           "sliding_attention"], query_pre_attn_scalar=8, **SIZE),
    "delta_net": lambda: _hybrid_config(),
    "bert": lambda: T.BertConfig(**ENCODER, max_position_embeddings=128),
    "roberta": lambda: T.RobertaConfig(**ENCODER, max_position_embeddings=130),  # positions start after padding
}
ENCODERS = ("bert", "roberta")
GENERATIVE = [name for name in CONFIGS if name not in ENCODERS]


def _hybrid_config():
    """flash-linear-attention's hybrid format: DeltaNet layers 0 and 2, softmax attention at layer 1.

    Imported here, not at the top: the modelling code imports transformers' model classes, which import
    Triton, and the kernel tests must set TRITON_INTERPRET before Triton is first imported.
    """
    from workbench.deltanet import DeltaNetConfig

    return DeltaNetConfig(hidden_size=32, num_hidden_layers=3, num_heads=4, intermediate_size=64,
                          max_position_embeddings=128, attn={"layers": [1], "num_heads": 4, "num_kv_heads": 2},
                          **SIZE)


def tokenizer_for(generative: bool) -> T.PreTrainedTokenizerFast:
    """The character tokenizer of a tiny model: BOS first for a decoder, [CLS] ... [SEP] for an encoder."""
    return char_tokenizer() if generative else char_tokenizer(bos="[CLS]", eos="[SEP]")


def build(family: str, folder: Path, seed: int = 0) -> Path:
    """Save a random `family` model and its tokenizer under `folder` and return the directory.

    `family` is one of `CONFIGS` (sizes chosen here, weights scaled so layers differ visibly) or any other
    architecture of the installed transformers (`workbench.tiny_configs`)."""
    torch.manual_seed(seed)
    if family not in CONFIGS:
        from workbench.tiny_configs import build_tiny

        model = build_tiny(family, seed=seed, vocab_size=len(VOCAB))[0]
        tokenizer = tokenizer_for(model.can_generate())
    else:
        config = CONFIGS[family]()
        auto = T.AutoModelForMaskedLM if family in ENCODERS else T.AutoModelForCausalLM
        model = auto.from_config(config)
        tokenizer = char_tokenizer(bos=None) if family == "gpt2" else tokenizer_for(family not in ENCODERS)
        # Random init leaves some weights tiny; scale them so layers differ visibly.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.2)
    path = folder / family
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
