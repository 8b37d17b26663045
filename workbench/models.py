"""Load a model spec into a traced model with one uniform view of its parts.

A spec is a hub id (`gpt2`), a hub id plus a revision (`EleutherAI/pythia-70m`
at `step1000`), a local Hugging Face directory, or the name of a model bundled
in `data/models/` (`demo`). Whatever the family, the result exposes the same
parts: blocks, attention, MLP, final norm, embedding and unembedding, as nnsight
envoys (for tracing) and as plain torch modules (for hooks).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from workbench.errors import ModelSpecError
from workbench.paths import DATA_DIR

BUNDLED_DIR = DATA_DIR / "models"
BUNDLED_MODELS = {  # name -> the command that trains it
    "demo": "python analyses/train_demo_model.py",
    "demo-hybrid": "python analyses/train_demo_model.py --arch hybrid",
}


@dataclass(frozen=True)
class Family:
    """Where the parts of one architecture family live, as dotted module paths.

    `attn` is the module whose output is `(attention_output, attention_weights)`;
    `attn_out` names a separate module for the attention output when `attn`'s
    first output is not it (BERT's self-attention returns the context before
    its output projection). Paths under a block are relative to the block.
    `sparse_attention` says whether the family's attention runs through transformers'
    attention interface and KV cache, which the sparse-attention methods replace.
    """

    blocks: str
    attn: str
    mlp: str
    final_norm: str
    embed: str
    unembed: str
    generative: bool = True
    attn_out: str | None = None
    sparse_attention: bool = True


_LLAMA_LIKE = Family("model.layers", "self_attn", "mlp", "model.norm", "model.embed_tokens", "lm_head")
_BERT_LIKE = dict(attn="attention.self", attn_out="attention.output.dense", mlp="output.dense", generative=False)

FAMILIES: dict[str, Family] = {
    "gpt2": Family("transformer.h", "attn", "mlp", "transformer.ln_f", "transformer.wte", "lm_head"),
    "gpt_neox": Family(
        "gpt_neox.layers", "attention", "mlp", "gpt_neox.final_layer_norm", "gpt_neox.embed_in", "lm_head"
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    # flash-linear-attention's format; modelling code in workbench/deltanet (DeltaNet or softmax `attn`)
    "delta_net": Family("model.layers", "attn", "mlp", "model.norm", "model.embeddings", "lm_head",
                        sparse_attention=False),
    "bert": Family(
        "bert.encoder.layer", final_norm="bert.embeddings.LayerNorm", embed="bert.embeddings.word_embeddings",
        unembed="cls.predictions.decoder", **_BERT_LIKE,
    ),
    "roberta": Family(
        "roberta.encoder.layer", final_norm="roberta.embeddings.LayerNorm",
        embed="roberta.embeddings.word_embeddings", unembed="lm_head.decoder", **_BERT_LIKE,
    ),
}
# BERT-style encoders have no final norm after the last block; the embedding
# LayerNorm stands in so that every family answers `final_norm`.

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# nnsight serves `.output`/`.input` on every envoy, so it moves a submodule of
# that name (BERT's `output`) to `E_output`; this prefix finds it there.
_MOVED_PREFIX = "E_"


def _get(root, dotted: str):
    """Follow a dotted module path on a torch module or an nnsight envoy."""
    for name in dotted.split("."):
        if name.isdigit():
            root = root[int(name)]
        else:
            moved = getattr(root, _MOVED_PREFIX + name, None)
            root = moved if moved is not None else getattr(root, name)
    return root


@dataclass
class LoadedModel:
    """A loaded model: the torch module, its nnsight wrapper, tokenizer and family.

    `spec` and `revision` are what the user asked for; `path` is where the
    weights came from (a directory or the hub id).
    """

    spec: str
    revision: str | None
    path: str
    model_type: str
    family: Family
    hf: torch.nn.Module
    tokenizer: object
    eager_attention: bool

    @cached_property
    def nn(self):
        """The nnsight wrapper, built on first use (it is the tracing engine)."""
        from nnsight.modeling.transformers import TransformersModel

        task = "text-generation" if self.family.generative else "fill-mask"
        with warnings.catch_warnings():  # the move of BERT's `output` modules is expected; `_get` handles it
            warnings.filterwarnings("ignore", message=".*has a submodule named 'output'")
            return TransformersModel(self.hf, task=task, tokenizer=self.tokenizer)

    @property
    def config(self):
        return self.hf.config

    @property
    def n_layers(self) -> int:
        return len(_get(self.hf, self.family.blocks))

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def n_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def n_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.n_heads

    def attention_heads(self, layer: int) -> int:
        """Heads of block `layer`'s attention: a DeltaNet hybrid's softmax layers may have their own count."""
        attn = getattr(self.config, "attn", None)
        if isinstance(attn, dict) and layer in attn["layers"]:
            return attn["num_heads"]
        return self.n_heads

    @property
    def max_positions(self) -> int:
        return getattr(self.config, "max_position_embeddings", None) or getattr(self.config, "n_positions")

    @property
    def is_generative(self) -> bool:
        return self.family.generative

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def check_layer(self, layer: int) -> int:
        """Return `layer` if it is a block index of this model, else raise naming the range."""
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ModelSpecError(f"layer {layer!r} is out of range: {self.spec} has layers 0..{self.n_layers - 1}")
        return layer

    # Uniform view over the nnsight envoys (use inside a trace).
    def blocks(self):
        return _get(self.nn, self.family.blocks)

    def attn(self, layer: int):
        return _get(self.blocks()[self.check_layer(layer)], self.family.attn)

    def attn_out(self, layer: int):
        return _get(self.blocks()[self.check_layer(layer)], self.family.attn_out) if self.family.attn_out else None

    def mlp(self, layer: int):
        return _get(self.blocks()[self.check_layer(layer)], self.family.mlp)

    def final_norm(self):
        return _get(self.nn, self.family.final_norm)

    def embed(self):
        return _get(self.nn, self.path_of("embed"))

    def unembed(self):
        return _get(self.nn, self.path_of("unembed"))

    @cached_property
    def _embedding_paths(self) -> dict[str, str]:
        """Where transformers' public accessors put the embeddings in this model (GPT-NeoX's unembedding is
        `embed_out` in older transformers, `lm_head` in newer)."""
        names = {id(module): name for name, module in self.hf.named_modules()}
        found = {"embed": self.hf.get_input_embeddings(), "unembed": self.hf.get_output_embeddings()}
        return {part: names[id(module)] for part, module in found.items() if module is not None and id(module) in names}

    def path_of(self, part: str) -> str:
        """The dotted module path of 'embed' or 'unembed' (found by transformers' accessors), or the family's."""
        return self._embedding_paths.get(part) or getattr(self.family, part)

    def module(self, part: str, layer: int | None = None) -> torch.nn.Module:
        """The plain torch module for `part` ('block', 'attn', 'mlp', 'final_norm', 'embed', 'unembed')."""
        if part in ("embed", "unembed"):
            return _get(self.hf, self.path_of(part))
        if part == "final_norm":
            return _get(self.hf, self.family.final_norm)
        block = _get(self.hf, self.family.blocks)[self.check_layer(layer)]
        return block if part == "block" else _get(block, getattr(self.family, part))


def default_attention(config) -> str | None:
    """The attention implementation a model loads with when no maps are asked for: transformers' default (SDPA
    where the family has it), except eager for logit soft-capping (Gemma 2), which SDPA cannot apply (older
    transformers let Gemma 2 run SDPA without it)."""
    return "eager" if getattr(config, "attn_logit_softcapping", None) else None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """float32 on the CPU (exact, and bf16 matmuls are slow there); bf16 on a GPU."""
    return torch.float32 if str(device).startswith("cpu") else torch.bfloat16


def bundled_models() -> dict[str, Path]:
    """The bundled models present on disk, by name."""
    return {name: BUNDLED_DIR / name for name in BUNDLED_MODELS if (BUNDLED_DIR / name / "config.json").is_file()}


def resolve_spec(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """Turn a spec into (path or hub id, hub revision); raise `ModelSpecError` when it cannot be one."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("model spec is empty: pass a hub id (gpt2), a local directory, or 'demo'")
    spec = spec.strip()
    if spec in BUNDLED_MODELS:
        base = BUNDLED_DIR / spec
        if revision:
            base = BUNDLED_DIR / f"{spec}-checkpoints" / revision
            found = sorted(p.name for p in (BUNDLED_DIR / f"{spec}-checkpoints").glob("*/config.json"))
            if not base.is_dir():
                raise ModelSpecError(f"bundled model {spec!r} has no checkpoint {revision!r}; it has {found or 'none'}")
        if not (base / "config.json").is_file():
            raise ModelSpecError(
                f"the bundled model {spec!r} is not present at {base}; "
                f"train it with `{BUNDLED_MODELS[spec]}` or pass another model"
            )
        return str(base), None
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"{path} is not a Hugging Face model directory: it has no config.json")
        return str(path), None
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise ModelSpecError(
            f"unknown model spec {spec!r}: not a directory, not a bundled model ({', '.join(BUNDLED_MODELS)}), "
            "and not a hub id like 'gpt2' or 'EleutherAI/pythia-70m'"
        )
    return spec, revision


def _load_config(source: str, revision: str | None, trust_remote_code: bool):
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from transformers import AutoConfig

    from workbench import deltanet

    deltanet.register()  # fla's "delta_net" model type -> our modelling code (even if fla registered its own)

    try:
        return AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except RepositoryNotFoundError as e:
        raise ModelSpecError(f"unknown model {source!r}: the hub has no such repository") from e
    except RevisionNotFoundError as e:
        raise ModelSpecError(f"model {source!r} has no revision {revision!r} on the hub") from e
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelSpecError(
                f"model {source!r} ships its own modelling code; pass trust_remote_code=True "
                "(--trust-remote-code) if you trust it"
            ) from e
        raise ModelSpecError(f"cannot read the config of {source!r}: {e}") from e
    except OSError as e:
        raise ModelSpecError(
            f"cannot load {source!r}: it is not in the local Hugging Face cache and the hub could not be "
            f"reached (no network?). Download it where there is network (`hf download {source}`) "
            f"or pass a local directory. ({type(e).__name__})"
        ) from e


def load_model(
    spec: str,
    revision: str | None = None,
    *,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    attention: bool = False,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load `spec` (hub id, local directory or bundled name) for tracing.

    `attention=True` selects eager attention so attention maps can be read;
    otherwise `default_attention`. dtype defaults to float32 on CPU
    and bfloat16 on a GPU.
    """
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    source, hub_revision = resolve_spec(spec, revision)
    config = _load_config(source, hub_revision, trust_remote_code)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ModelSpecError(
            f"unsupported architecture {model_type!r} in {spec!r}; supported: {', '.join(sorted(FAMILIES))}"
        )
    device = device or default_device()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or default_dtype(device)
    auto = AutoModelForCausalLM if FAMILIES[model_type].generative else AutoModelForMaskedLM
    try:
        hf = auto.from_pretrained(
            source, revision=hub_revision, dtype=dtype, trust_remote_code=trust_remote_code,
            attn_implementation="eager" if attention else default_attention(config),
        )
        tokenizer = AutoTokenizer.from_pretrained(source, revision=hub_revision, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelSpecError(f"cannot load the weights or tokenizer of {spec!r}: {e}") from e
    return wrap_model(hf.to(device), tokenizer, spec, revision=revision, path=source)


def wrap_model(hf: torch.nn.Module, tokenizer, spec: str, *, revision: str | None = None,
               path: str | None = None) -> LoadedModel:
    """A `LoadedModel` around a model already in memory (built in a script or a test)."""
    model_type = hf.config.model_type
    if model_type not in FAMILIES:
        raise ModelSpecError(f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(FAMILIES))}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return LoadedModel(
        spec=spec, revision=revision, path=path or spec, model_type=model_type, family=FAMILIES[model_type],
        hf=hf.eval(), tokenizer=tokenizer, eager_attention=hf.config._attn_implementation == "eager",
    )
