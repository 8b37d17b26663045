"""Load a model spec into a traced model with one uniform view of its parts.

A spec is a hub id (`gpt2`), a hub id plus a revision (`EleutherAI/pythia-70m`
at `step1000`), a local Hugging Face directory, or the name of a model bundled
in `data/models/` (`demo`). Whatever the family, the result exposes the same
parts: blocks, attention, MLP, final norm, embedding and unembedding, as nnsight
envoys (for tracing) and as plain torch modules (for hooks).

Any architecture transformers builds loads: its parts are found by `workbench.structure.discover`.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from workbench.errors import ModelSpecError
from workbench.paths import DATA_DIR
from workbench.residual import ResidualLayout, hidden_of, probe_layout
from workbench.structure import Structure, discover, get_module

BUNDLED_DIR = DATA_DIR / "models"
BUNDLED_MODELS = {  # name -> the command that trains it
    "demo": "python analyses/train_demo_model.py",
    "demo-hybrid": "python analyses/train_demo_model.py --arch hybrid",
}


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class LoadedModel:
    """A loaded model: the torch module, its nnsight wrapper, tokenizer and discovered structure.

    `spec` and `revision` are what the user asked for; `path` is where the
    weights came from (a directory or the hub id).
    """

    spec: str
    revision: str | None
    path: str
    model_type: str
    structure: Structure
    hf: torch.nn.Module
    tokenizer: object
    eager_attention: bool

    @cached_property
    def nn(self):
        """The nnsight wrapper, built on first use (it is the tracing engine)."""
        from nnsight.modeling.transformers import TransformersModel

        task = "text-generation" if self.is_generative else "fill-mask"
        with warnings.catch_warnings():  # the move of BERT's `output` modules is expected; `get_module` handles it
            warnings.filterwarnings("ignore", message=".*has a submodule named 'output'")
            return TransformersModel(self.hf, task=task, tokenizer=self.tokenizer)

    @property
    def config(self):
        return self.hf.config

    @property
    def text_config(self):
        """The language model's config (a multimodal model's text config)."""
        return self.config.get_text_config()

    @property
    def n_layers(self) -> int:
        return self.structure.n_layers

    @cached_property
    def residual(self) -> ResidualLayout:
        """How block outputs lay out the residual stream (several streams on hyper-connection and AltUp models)."""
        token = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        return probe_layout(self.hf, self.module("block", 0), self.device, token)

    @property
    def d_model(self) -> int:
        """Entries of the residual stream at one token: the length of recorded, direction and steering vectors
        (the hidden size, times the streams where the model carries several)."""
        return self.residual.width

    def residual_of(self, output):
        """A block's output (an nnsight envoy's or a hook's) as a [B, T, *residual shape] view."""
        return self.residual.view(hidden_of(output))

    @property
    def n_heads(self) -> int:
        return self.structure.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.structure.n_kv_heads

    def attention_heads(self, layer: int) -> int:
        """Heads of block `layer`'s attention: a DeltaNet hybrid's softmax layers may have their own count."""
        attn = getattr(self.config, "attn", None)
        if isinstance(attn, dict) and layer in attn["layers"]:
            return attn["num_heads"]
        return self.n_heads

    @property
    def max_positions(self) -> int:
        config = self.text_config
        for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:  # XLNet's -1: no limit
                return value
        return 2048  # no limit in the config (relative positions): a length the sweep and the tests stay under

    @property
    def is_generative(self) -> bool:
        return self.structure.generative

    @property
    def device(self) -> torch.device:
        """Where the inputs go: where the token embedding runs (the first device of a sharded model)."""
        return _runs_on(self.module("embed"))

    def layer_device(self, layer: int) -> torch.device:
        """Where block `layer` runs (one of several devices for a model sharded with a device_map)."""
        return _runs_on(self.module("block", layer))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def check_layer(self, layer: int) -> int:
        """Return `layer` if it is a block index of this model, else raise naming the range."""
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ModelSpecError(f"layer {layer!r} is out of range: {self.spec} has layers 0..{self.n_layers - 1}")
        return layer

    def part_path(self, part: str, layer: int | None = None) -> str | None:
        """The dotted module path of `part` ('block', 'attn', 'attn_out', 'mlp', 'mlp_out', 'router', 'experts',
        'final_norm', 'embed', 'unembed'); None where this model has no such part (at that layer)."""
        s = self.structure
        if part in ("final_norm", "embed", "unembed"):
            return getattr(s, part)
        block = f"{s.blocks}.{self.check_layer(layer)}"
        if part == "block":
            return block
        relative = getattr(s, part)[layer]
        return None if relative is None else f"{block}.{relative}"

    def module(self, part: str, layer: int | None = None) -> torch.nn.Module:
        """The plain torch module of `part` (see `part_path`); `ModelSpecError` where the model has none."""
        return get_module(self.hf, self._require(part, layer))

    def blocks(self):
        """The nnsight envoys of the blocks."""
        return get_module(self.nn, self.structure.blocks)

    def _require(self, part: str, layer: int | None) -> str:
        found = self.part_path(part, layer)
        if found is None:
            where = "" if layer is None else f" at layer {layer}"
            raise ModelSpecError(f"{self.spec} ({self.model_type}) has no {part}{where}: its structure is "
                                 f"{self.structure.describe()}")
        return found


def _runs_on(module: torch.nn.Module) -> torch.device:
    """The device a module computes on: its parameters', or, where accelerate offloads them to the CPU (their
    placeholders on the meta device), the device its hook moves them to for each forward."""
    device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    return torch.device(device) if device is not None else next(module.parameters()).device


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
    near = _nearest_local(spec)
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec) or ("/" not in spec and near):
        raise ModelSpecError(
            f"unknown model spec {spec!r}: not a directory, not a bundled model ({', '.join(BUNDLED_MODELS)}), "
            "and not a hub id like 'gpt2' or 'EleutherAI/pythia-70m'" + (f"; did you mean {near!r}?" if near else "")
        )
    return spec, revision


def _nearest_local(spec: str) -> str | None:
    """The bundled model or sibling directory whose name is closest to a misspelled `spec`, if one is close."""
    path = Path(spec).expanduser()
    parent = path.parent if path.parent.is_dir() else None
    siblings = {p.name: str(p) if spec.startswith((".", "/", "~")) else p.name
                for p in (parent.iterdir() if parent else ()) if (p / "config.json").is_file()}
    candidates = {name: name for name in BUNDLED_MODELS} | siblings
    close = difflib.get_close_matches(path.name, list(candidates), n=1, cutoff=0.75)
    return candidates[close[0]] if close else None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection now (False when HF_HUB_OFFLINE is set): checked once
    so that an offline machine fails at once instead of after the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", ""):
        return False
    host = re.sub(r"^https?://", "", os.environ.get("HF_ENDPOINT", "https://huggingface.co")).split("/")[0]
    try:
        socket.create_connection((host.split(":")[0], int(host.split(":")[1]) if ":" in host else 443),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_config(source: str, revision: str | None, trust_remote_code: bool):
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from transformers import AutoConfig

    from workbench import deltanet

    deltanet.register()  # fla's "delta_net" model type -> our modelling code (even if fla registered its own)

    if not Path(source).is_dir() and not _in_hub_cache(source, revision) and not _hub_reachable():
        raise ModelSpecError(
            f"cannot load {source!r}: it is not in the local Hugging Face cache and the hub cannot be reached "
            f"(no network?). Download it where there is network (`hf download {source}`) or pass a local directory")
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


def _in_hub_cache(repo: str, revision: str | None) -> bool:
    """Whether the hub repository's config is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str)


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's named placements


def auto_class(config):
    """The transformers Auto class a config loads with: masked LM for an encoder (BERT, RoBERTa, ModernBERT),
    else causal LM (decoder-only models, and the decoder of an encoder-decoder family)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    encoder = (config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
               and not getattr(config, "is_encoder_decoder", False))
    return AutoModelForMaskedLM if encoder else AutoModelForCausalLM


def load_model(
    spec: str,
    revision: str | None = None,
    *,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    attention: bool = False,
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    delta_kernel: str = "model",
) -> LoadedModel:
    """Load `spec` (hub id, local directory or bundled name) for tracing.

    `attention=True` selects eager attention so attention maps can be read;
    otherwise `default_attention`. dtype defaults to float32 on CPU
    and bfloat16 on a GPU. `device_map` ("auto", or a dict of module path ->
    device) shards the model over the host's GPUs (and the CPU) through
    accelerate instead of putting it on `device`. `delta_kernel="workbench"` runs
    transformers' Gated DeltaNet layers on workbench_kernels' delta rule instead of
    the model's own (flash-linear-attention or transformers' PyTorch fallback).
    """
    from transformers import AutoTokenizer

    from workbench.config import DELTA_KERNELS
    from workbench.deltanet.workbench_rule import use_workbench_kernel

    if delta_kernel not in DELTA_KERNELS:
        raise ModelSpecError(f"unknown delta_kernel {delta_kernel!r}: use one of {', '.join(DELTA_KERNELS)}")
    source, hub_revision = resolve_spec(spec, revision)
    config = _load_config(source, hub_revision, trust_remote_code)
    if device_map is not None and device is not None:
        raise ModelSpecError("pass either a device or a device_map, not both")
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        raise ModelSpecError(f"unknown device_map {device_map!r}: use one of {', '.join(DEVICE_MAPS)} or a dict of "
                             "module path -> device")
    device = device or (None if device_map is not None else default_device())
    dtype = parse_dtype(dtype) or default_dtype(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        hf = auto_class(config).from_pretrained(
            source, revision=hub_revision, dtype=dtype, trust_remote_code=trust_remote_code,
            attn_implementation="eager" if attention else default_attention(config), device_map=device_map,
        )
        tokenizer = AutoTokenizer.from_pretrained(source, revision=hub_revision, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelSpecError(f"cannot load the weights or tokenizer of {spec!r}: {e}") from e
    except (ValueError, KeyError, ImportError) as e:
        raise _cannot_build(spec, config, e) from e
    model = wrap_model(hf if device_map is not None else hf.to(device), tokenizer, spec, revision=revision,
                       path=source)
    if delta_kernel == "workbench":
        use_workbench_kernel(model)
    return model


def model_config(spec: str, revision: str | None = None, *, trust_remote_code: bool = False):
    """The config of `spec`, read without its weights: refuses a misspelled or unreachable model at once."""
    return _load_config(*resolve_spec(spec, revision), trust_remote_code)


def structure_of(spec: str, revision: str | None = None, *, trust_remote_code: bool = False) -> Structure:
    """The discovered structure of `spec` without loading its weights (the model is built on the meta device)."""
    config = model_config(spec, revision, trust_remote_code=trust_remote_code)
    try:
        with torch.device("meta"):
            hf = auto_class(config).from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, ImportError) as e:
        raise _cannot_build(spec, config, e) from e
    return discover(hf)


def _cannot_build(spec: str, config, error: Exception) -> ModelSpecError:
    return ModelSpecError(f"transformers cannot build {spec!r} ({config.model_type}) as a language model: "
                          f"{str(error).splitlines()[0]}")


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype from its name ('bfloat16', 'float16', 'float32'); a clear error for any other name."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    found = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(found, torch.dtype) or not found.is_floating_point:
        raise ModelSpecError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return found


def wrap_model(hf: torch.nn.Module, tokenizer, spec: str, *, revision: str | None = None,
               path: str | None = None) -> LoadedModel:
    """A `LoadedModel` around a model already in memory (built in a script or a test)."""
    structure = discover(hf)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return LoadedModel(
        spec=spec, revision=revision, path=path or spec, model_type=hf.config.model_type, structure=structure,
        hf=hf.eval(), tokenizer=tokenizer, eager_attention=hf.config._attn_implementation == "eager",
    )
