"""Find a model's parts from its module tree and config, for any architecture transformers builds.

The parts every capability reads: the embedding and unembedding (transformers' own accessors), the list of
blocks (the ModuleList with one module per layer of the config), in each block the token mixer (softmax
attention, or a delta-rule / state-space layer in a hybrid), the MLP (or mixture-of-experts block, with its
router and experts), the final norm, and the head layout. Names and classes are matched by pattern, and a few
shapes of block are recognised by their structure, not by a list of families:

- BERT-style encoder layers (`attention.self` + `attention.output.dense`, `intermediate` + `output.dense`):
  the attention's output and the MLP's are the projections before each residual add and LayerNorm.
- Modules whose `forward` takes the residual and adds it themselves (BLOOM): the output projection inside them
  is read instead, so attn_out and mlp_out never include the residual stream.

When a part cannot be found the error names it and the module path it looked under.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import torch

from workbench.errors import ModelSpecError

_MIXER_NAME = re.compile(r"^(self_attn|self_attention|attn|attention|mixer|linear_attn|token_mixer|temporal_block|"
                         r"mamba|ssm|conv|time_mix|rwkv|deltanet|delta_net|mla)$")
_MIXER_CLASS = re.compile(r"attention|attn|mamba|mixer|deltanet|ssm|recurrent|rwkv|timemix", re.IGNORECASE)
_MLP_NAME = re.compile(r"^(mlp|feed_forward|feedforward|ffn|ff|moe|block_sparse_moe|sparse_moe|channel_mix|"
                       r"mlp_block|ffn_layer)$")
_MLP_CLASS = re.compile(r"mlp|moe|feedforward|ffn|expert|channelmix", re.IGNORECASE)
_NOT_A_PART = re.compile(r"norm|dropout|rotary|embedding|scale", re.IGNORECASE)
_NORM = re.compile(r"norm|ln_f$|^ln_|layernorm", re.IGNORECASE)
_ROUTER_NAME = re.compile(r"^(gate|router|gating|switch)$")
_SOFTMAX_CLASS = re.compile(r"attention|attn", re.IGNORECASE)
_NOT_SOFTMAX_CLASS = re.compile(r"linear|delta|mamba|ssm|rwkv|retention|lightning|recurrent|kda|conv", re.IGNORECASE)


@dataclass(frozen=True)
class Structure:
    """Where a model's parts live, as dotted module paths (paths under a block are relative to the block).

    Per layer: `attn` the token mixer whose first output is the attention output (None where a block has
    none), `softmax` whether that mixer is softmax attention (the one whose weights a map shows and the
    sparse methods replace), `attn_out` / `mlp_out` a module read instead of the mixer's / MLP's own output,
    `router` and `experts` a mixture-of-experts block's parts. `final_norm` is None for an encoder with no
    norm after its last block.
    """

    blocks: str
    attn: tuple[str | None, ...]
    softmax: tuple[bool, ...]
    attn_out: tuple[str | None, ...]
    mlp: tuple[str | None, ...]
    mlp_out: tuple[str | None, ...]
    router: tuple[str | None, ...]
    experts: tuple[str | None, ...]
    final_norm: str | None
    embed: str
    unembed: str | None
    generative: bool
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def n_layers(self) -> int:
        return len(self.attn)

    @property
    def is_moe(self) -> bool:
        return any(self.router)

    def describe(self) -> dict:
        """The structure as plain values, one entry per part, for `workbench models SPEC` and the docs."""
        def per_layer(paths):
            distinct = sorted({p for p in paths if p}, key=paths.index)
            return distinct[0] if len(distinct) == 1 and all(paths) else dict(enumerate(paths))
        return {
            "blocks": f"{self.blocks} ({self.n_layers})", "attn": per_layer(self.attn),
            "softmax_layers": [i for i, s in enumerate(self.softmax) if s], "mlp": per_layer(self.mlp),
            "attn_out": per_layer(self.attn_out) if any(self.attn_out) else None,
            "mlp_out": per_layer(self.mlp_out) if any(self.mlp_out) else None,
            "router": per_layer(self.router) if self.is_moe else None,
            "experts": per_layer(self.experts) if self.is_moe else None,
            "final_norm": self.final_norm, "embed": self.embed, "unembed": self.unembed,
            "heads": {"query": self.n_heads, "kv": self.n_kv_heads, "dim": self.head_dim},
        }


def get_module(root, dotted: str):
    """Follow a dotted module path on a torch module or an nnsight envoy.

    nnsight serves `.output`/`.input` on every envoy, so it moves a submodule of that name (BERT's `output`)
    to `E_output`; the moved name is tried first.
    """
    for name in dotted.split("."):
        if name.isdigit():
            root = root[int(name)]
        else:
            moved = getattr(root, "E_" + name, None)
            root = moved if moved is not None else getattr(root, name)
    return root


def discover(hf: torch.nn.Module) -> Structure:
    """The `Structure` of a Hugging Face model (any architecture); `ModelSpecError` names a part not found."""
    config = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    names = {id(module): name for name, module in hf.named_modules()}
    embed = _accessor_path(hf, "get_input_embeddings", names)
    if embed is None:
        raise ModelSpecError(f"could not find the token embedding of {type(hf).__name__}: "
                             "get_input_embeddings() gives no module of the model")
    unembed = _accessor_path(hf, "get_output_embeddings", names)
    generative = bool(getattr(hf, "can_generate", lambda: False)())
    if generative and unembed is None:
        raise ModelSpecError(f"could not find the LM head of {type(hf).__name__}: get_output_embeddings() gives "
                             "no module of the model")
    blocks_path = _blocks_path(hf, config)
    blocks = get_module(hf, blocks_path)
    parts = [_block_parts(block) for block in blocks]
    n_heads = _first_int(config, "num_attention_heads", "n_head", "num_heads") or 1
    n_kv = _first_int(config, "num_key_value_heads", "num_kv_heads") or (1 if getattr(config, "multi_query", False)
                                                                         else n_heads)
    hidden = _first_int(config, "hidden_size", "d_model", "n_embd") or 0
    head_dim = _first_int(config, "head_dim") or (hidden // n_heads if n_heads else 0)
    return Structure(
        blocks=blocks_path, **{key: tuple(p[key] for p in parts) for key in parts[0]},
        final_norm=_final_norm(hf, blocks_path), embed=embed, unembed=unembed, generative=generative,
        d_model=hidden or get_module(hf, embed).weight.shape[1], n_heads=n_heads, n_kv_heads=n_kv,
        head_dim=head_dim,
    )


def _first_int(config, *keys) -> int | None:
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _accessor_path(hf, accessor: str, names: dict) -> str | None:
    try:
        module = getattr(hf, accessor)()
    except (NotImplementedError, AttributeError):
        return None
    return names.get(id(module)) if module is not None else None


def _blocks_path(hf, config) -> str:
    """The ModuleList with one entry per layer of the config (the shallowest, preferring the text model's)."""
    n_layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers")
    lists = [(name, module) for name, module in hf.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) > 0]
    matching = [(name, m) for name, m in lists if (n_layers is None or len(m) == n_layers)
                and all(len(list(block.children())) > 1 for block in m)]
    if not matching:
        found = ", ".join(f"{name} ({len(m)})" for name, m in lists[:8]) or "none"
        raise ModelSpecError(f"could not find the blocks of {type(hf).__name__}: no ModuleList of "
                             f"{n_layers} blocks (the config's layer count) under the model; ModuleLists: {found}")

    def rank(item):
        name = item[0]
        return (not re.search(r"language|text|decoder", name), name.count("."), name)
    # never a list inside another candidate's blocks (each block's experts, say)
    outer = [item for item in matching if not any(item[0].startswith(other + ".") for other, _ in matching)]
    found = min(outer, key=rank)[0]
    siblings = [name for name, m in lists if len(m) == n_layers and name != found and _parent(name) == _parent(found)]
    if n_layers is not None and siblings:
        raise ModelSpecError(f"could not find the blocks of {type(hf).__name__}: its layers are split over parallel "
                             f"lists ({', '.join([found, *siblings])}), with no module per block whose output is "
                             "the residual stream")
    return found


def _parent(path: str) -> str:
    """The dotted path one level up ('' at the top)."""
    return path.rsplit(".", 1)[0] if "." in path else ""


def _children(module, depth: int = 2):
    """(relative path, module) of the submodules down to `depth` levels, breadth first."""
    out, frontier = [], [("", module)]
    for _ in range(depth):
        frontier = [(f"{prefix}{name}", child) for prefix, parent in frontier
                    for name, child in parent.named_children()]
        out += frontier
        frontier = [(f"{path}.", child) for path, child in frontier]
    return out


def _block_parts(block) -> dict:
    """One block's parts: mixer, MLP and their readout modules, router and experts."""
    subs = _children(block)
    attn_out = mlp_out = None
    bert_like = _has(block, "attention.self") and _has(block, "attention.output.dense") and _has(block,
                                                                                                "output.dense")
    if bert_like:
        attn, attn_out, mlp, mlp_out = "attention.self", "attention.output.dense", "output.dense", None
    else:
        attn = _pick(subs, _MIXER_NAME, _MIXER_CLASS)
        mlp = _pick([(p, m) for p, m in subs if p != attn and not (attn and p.startswith(attn + "."))],
                    _MLP_NAME, _MLP_CLASS)
        attn_out = _residual_free(block, attn)
        mlp_out = _residual_free(block, mlp)
        if mlp is None:  # the MLP's layers sit in the block itself (OPT's fc1, fc2): its last projection
            mlp = next((name for name, m in reversed(list(block.named_children())) if isinstance(m, torch.nn.Linear)),
                       None)
    softmax = attn is not None and _is_softmax(get_module(block, attn))
    router = experts = None
    if mlp is not None:
        inner = _children(get_module(block, mlp), depth=1)
        router = next((f"{mlp}.{p}" for p, _ in inner if _ROUTER_NAME.match(p)), None)
        experts = next((f"{mlp}.{p}" for p, _ in inner if p == "experts"), None)
        if experts is None:
            router = None  # a gate without experts is a gated MLP's projection, not a router
    return {"attn": attn, "softmax": softmax, "attn_out": attn_out, "mlp": mlp, "mlp_out": mlp_out,
            "router": router, "experts": experts}


def _has(module, dotted: str) -> bool:
    try:
        get_module(module, dotted)
        return True
    except (AttributeError, IndexError):
        return False


def _pick(subs, name_pattern, class_pattern) -> str | None:
    """The shallowest submodule whose attribute name matches, else whose class matches (never a norm,
    dropout, rotary embedding or scale)."""
    for pattern, key in ((name_pattern, lambda p, m: p.rsplit(".", 1)[-1]), (class_pattern,
                                                                              lambda p, m: type(m).__name__)):
        found = [(p, m) for p, m in subs if pattern.search(key(p, m)) and not _NOT_A_PART.search(type(m).__name__)
                 and not isinstance(m, torch.nn.ModuleList)]
        if found:
            return min(found, key=lambda item: item[0].count("."))[0]
    return None


def _residual_free(block, path: str | None) -> str | None:
    """For a module whose forward adds the residual itself (its signature takes `residual`), the path of its
    last projection back to the model width, which is the part's own output; else None."""
    if path is None:
        return None
    module = get_module(block, path)
    if "residual" not in inspect.signature(type(module).forward).parameters:
        return None
    linears = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    return f"{path}.{linears[-1]}" if linears else None


def _is_softmax(module) -> bool:
    """Softmax attention: a module that calls transformers' attention interface, or one named as attention and
    not as a linear, delta-rule or state-space mixer (our DeltaNet hybrid's `SoftmaxAttention`)."""
    name = type(module).__name__
    return uses_attention_interface(module) or (
        bool(_SOFTMAX_CLASS.search(name)) and not _NOT_SOFTMAX_CLASS.search(name))


def uses_attention_interface(module: torch.nn.Module) -> bool:
    """Whether an attention module picks its attention function from transformers' registry at each call (the
    code path every current family shares; Kimi Linear's MLA layers among them, whatever their name says)."""
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source


def _final_norm(hf, blocks_path: str) -> str | None:
    """The norm applied after the last block: the first norm registered after the blocks among their siblings
    (whatever its name: BigBird-Pegasus calls it `layernorm_embedding`), else among the siblings of each module
    above them (RoBERTa-PreLayerNorm keeps it beside its encoder), else the last one registered before the blocks
    that is not the embeddings' (OPT registers its final norm first)."""
    def is_norm(name, child):
        return bool(_NORM.search(name) or _NORM.search(type(child).__name__))

    path, before = blocks_path, []
    while path:
        parent_path = _parent(path)
        parent, inner = get_module(hf, parent_path) if parent_path else hf, get_module(hf, path)
        children = list(parent.named_children())
        at = next(i for i, (_, child) in enumerate(children) if child is inner)
        after = [name for name, child in children[at + 1:] if is_norm(name, child)]
        if after:
            return f"{parent_path}.{after[0]}" if parent_path else after[0]
        if path == blocks_path:
            before = [name for name, child in children[:at] if is_norm(name, child) and "emb" not in name.lower()]
            if before:
                return f"{parent_path}.{before[-1]}" if parent_path else before[-1]
        path = parent_path
    return None
