"""Record what a model computes on a list of prompts, read by forward hooks, into the store.

Prompts are tokenized one by one and batched with right padding, so every real
token keeps its own position and, under causal attention, never sees a pad:
a prompt's numbers do not depend on what it was batched with. Padded positions
are dropped before anything is stored. Summaries are computed on the model's
device and copied once per batch, which the writer thread waits for while the
GPU runs the next batch; full vectors are copied layer by layer while the
forward pass goes on, and go to Parquet through the store.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.config import RecordConfig
from workbench.deltanet import memory
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel, load_model
from workbench.prompts import validate_prompts
from workbench.residual import StopForward
from workbench.store import Store
from workbench.store.recording_rows import TokenTexts, all_rows, text_rows
from workbench_kernels.dispatch import to_device
from workbench_kernels.token_summaries import token_summaries

BYTES_PER_FLOAT = 4


def tokenize(model: LoadedModel, prompts: list[str], extra: int = 0) -> list[list[int]]:
    """Token ids of each prompt (with the tokenizer's special tokens); refuse any that, with `extra` tokens to be
    generated after it, would not fit the model's context."""
    ids = [model.tokenizer(p)["input_ids"] for p in prompts]
    for i, row in enumerate(ids):
        if not row:
            raise WorkbenchError(f"prompt {i} tokenizes to nothing")
        if len(row) + extra > model.max_positions:
            generated = f" and {extra} generated" if extra else ""
            raise WorkbenchError(f"prompt {i} is {len(row)} tokens{generated}, longer than the model's context of "
                                 f"{model.max_positions}")
    return ids


def estimate_tensor_bytes(model: LoadedModel, lengths: list[int], config: RecordConfig) -> int:
    """Bytes of full vectors and attention maps the recording would write (0 when it keeps neither)."""
    n_layers = len(config.layers) if config.layers else model.n_layers
    total = 0
    if config.vectors:
        total += sum(lengths) * n_layers * len(config.sites) * model.d_model * BYTES_PER_FLOAT
    if config.attention:
        pairs = sum(n * (n + 1) // 2 if model.is_generative else n * n for n in lengths)
        total += pairs * n_layers * model.n_heads * (BYTES_PER_FLOAT + 8)  # weight + query/key/head ids
    return total


def capture(model: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: list[int],
            config: RecordConfig, on_output: Callable[[str, int, torch.Tensor], None] | None = None,
            ) -> dict[str, list[torch.Tensor]]:
    """One forward pass; per site a list (one entry per layer) of [B, T, D] tensors, plus 'pattern' [B, H, T, T].

    The outputs are read by plain forward hooks on the modules (the tensors an nnsight trace would save,
    without its per-call setup and per-module interleaving), and the pass stops after the deepest block
    read. `on_output(site, i, tensor)` sees each output as its module finishes, `i` its index in `layers`.
    Outputs of blocks on another device than the inputs (a model sharded with a device_map) are moved to the
    inputs' device. The 'pattern' of a transformers gated delta-rule layer (which returns no weights) is its exact
    effective attention, o_t = sum_j a_tj v_j, computed from its rule call.
    """
    from workbench.deltanet.gated import gated_rule
    from workbench.deltanet.inspection import rule_calls

    layout = model.residual  # probed before the hooks go in
    gated = [layer for layer in layers if config.attention and gated_rule(model.module("attn", layer))]
    reads = []  # (module, layer index, [(site, which output: tuple position or None for the first)])
    for i, layer in enumerate(layers):
        separate_attn_out = model.part_path("attn_out", layer) is not None
        from_attn = [("pattern", 1)] if config.attention and layer not in gated else []
        if config.attn_out and not separate_attn_out:
            from_attn.append(("attn_out", 0))
        if from_attn:
            reads.append((model.module("attn", layer), i, from_attn))
        if config.attn_out and separate_attn_out:
            reads.append((model.module("attn_out", layer), i, [("attn_out", None)]))
        if config.router:
            reads.append((model.module("router", layer), i, [("router", None)]))
        if config.mlp_out:
            mlp = "mlp_out" if model.part_path("mlp_out", layer) is not None else "mlp"
            reads.append((model.module(mlp, layer), i, [("mlp_out", None)]))
        reads.append((model.module("block", layer), i, [("resid_post", None)]))
    captured = {site: [None] * len(layers) for site in config.sites} | {
        "pattern": [None] * len(layers) if config.attention else []}
    last = model.module("block", max(layers))
    device = input_ids.device

    def hook_for(i, picks):
        def hook(module, args, output):
            if isinstance(output, (list, dict)):  # OpenAI GPT's list, SqueezeBERT's dict of outputs
                output = tuple(output.values() if isinstance(output, dict) else output)
            for site, which in picks:
                if which is None:
                    value = output[0] if isinstance(output, tuple) else output
                else:  # a mixer that returns only its output has no weights to give
                    items = output if isinstance(output, tuple) else (output,)
                    value = items[which] if which < len(items) else None
                if not isinstance(value, torch.Tensor):
                    raise WorkbenchError(f"{type(module).__name__} at layer {layers[i]} gives no {site} "
                                         f"(got {type(value).__name__}); record other layers or leave it out")
                if value.dim() == 2:  # a router's or experts' [B * T, width]: back to [B, T, width]
                    value = value.view(*input_ids.shape, -1)
                elif site == "resid_post":  # all streams of a multi-stream residual, as one vector per token
                    value = layout.rows(value)
                elif site != "pattern":
                    value = layout.tokens_first(value)
                batch, tokens = input_ids.shape
                if site == "pattern":
                    shape_ok = value.dim() == 4 and value.shape[0] == batch and value.shape[2:] == (tokens, tokens)
                else:
                    shape_ok = value.dim() == 3 and value.shape[:2] == (batch, tokens)
                if not shape_ok:
                    raise WorkbenchError(f"{type(module).__name__} at layer {layers[i]} gives {site} of shape "
                                         f"{tuple(value.shape)} for inputs of {tuple(input_ids.shape)}, not one "
                                         "row per token (or query and key); this site cannot be recorded here")
                if value.device != device:  # a sharded model's later blocks: gathered where the inputs are
                    value = value.to(device, non_blocking=True)
                captured[site][i] = value
                if on_output is not None:
                    on_output(site, i, value)
            if module is last:  # nothing after the deepest block read (final norm, unembedding) is needed
                raise StopForward
        return hook

    handles = [module.register_forward_hook(hook_for(i, picks)) for module, i, picks in reads]
    try:
        with torch.no_grad(), rule_calls(model, gated) as calls:
            # some families return attention weights only when asked (DeBERTa)
            asked = {"output_attentions": True} if config.attention else {}
            model.hf(input_ids=input_ids, attention_mask=attention_mask, **asked)
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    for layer in gated:
        (call,) = calls[layer]
        i = layers.index(layer)
        captured["pattern"][i] = memory.effective_attention(call["q"], call["k"], call["beta"], call["g"],
                                                            call["scale"]).to(device)
        if on_output is not None:
            on_output("pattern", i, captured["pattern"][i])
    never = sorted({(site, layers[i]) for site, values in captured.items() for i, v in enumerate(values) if v is None})
    if never:  # a module swapped at run time (BigBird's attention) or bypassed: its hook never ran
        raise WorkbenchError(f"these (site, layer) pairs of {model.spec} were never computed by the modules found "
                             f"for them, so they cannot be recorded: {never}")
    return captured


def start_copy_to_host(tensors: dict[str, torch.Tensor]) -> Callable[[], dict[str, np.ndarray]]:
    """Start copying device tensors into pinned host memory; the returned function waits for the copies (and for
    everything queued before them) and gives the numpy arrays. Off CUDA it returns them at once."""
    host, event = {}, None
    for name, t in tensors.items():
        if t.is_cuda:
            host[name] = torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
            event = event or torch.cuda.Event()
        else:
            host[name] = t
    if event is not None:
        event.record()

    def wait() -> dict[str, np.ndarray]:
        if event is not None:
            event.synchronize()
        return {name: t.numpy() for name, t in host.items()}
    return wait


def capture_batch(model: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: list[int],
                  config: RecordConfig) -> dict[str, np.ndarray]:
    """Everything one batch records, on the host, real positions only, in row-major (prompt, position) order.

    Keys: `<site>.<summary>` arrays [L, N, ...] and `<site>.prompt_<summary>` [L, B] (see
    `workbench_kernels.token_summaries`, which computes them on the model's device), `<site>.vector` [L, N, D] when
    vectors are kept (float32 numpy; from a GPU a pinned torch tensor in the model's dtype), and `pattern`
    [L, B, H, T, T] when attention maps are. `start_batch` without the wait.
    """
    return start_batch(model, input_ids, attention_mask, layers, config)()


def start_batch(model: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: list[int],
                config: RecordConfig) -> Callable[[], dict[str, np.ndarray]]:
    """Queue one batch's pass, summaries and copies to the host; the returned function waits and gives the arrays.

    On CUDA nothing here waits for the GPU when the inputs are host tensors, so the host queues batch i + 1 while
    the GPU still runs batch i. Each layer's vectors start their copy into pinned host memory, on a side stream,
    as soon as the layer has run, overlapping the rest of the forward pass (`copy_stream`). Everything runs with the
    model's GPU as the current device (Triton launches and the event go to the current device, which may be
    another GPU).
    """
    if model.device.type != "cuda":
        return _start_batch(model, input_ids, attention_mask, layers, config)
    with torch.cuda.device(model.device):
        return _start_batch(model, input_ids, attention_mask, layers, config)


_COPY_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def copy_stream(device: torch.device) -> torch.cuda.Stream:
    """The stream that copies a GPU's vectors to the host beside its forward passes, made once per device.

    (The summaries stay on the pass's stream: run beside the next batch's pass, on a side stream, they slowed it
    more than they saved, 1.21x against 1.07x the plain forward on the H200.)
    """
    if device not in _COPY_STREAMS:
        _COPY_STREAMS[device] = torch.cuda.Stream(device)
    return _COPY_STREAMS[device]


def _start_batch(model, input_ids, attention_mask, layers, config):
    """`start_batch` on the current device."""
    device = model.device
    mask = attention_mask.bool().cpu()  # [B, T]
    lengths = mask.sum(1).tolist()
    real = to_device(mask.flatten().nonzero().squeeze(1), device)  # [N] rows of the flattened [B * T]
    input_ids, attention_mask = to_device(input_ids, device), to_device(attention_mask, device)
    copies = copy_stream(device) if device.type == "cuda" and config.vectors else None
    main = torch.cuda.current_stream(device) if copies is not None else None
    # In the activations' own dtype: a bf16 model's vectors cross PCIe at half the bytes, and become float32 on
    # the host in the writer thread (`recording_rows.batch_rows`), off the GPU's critical path.
    vectors = {}

    def copy_vectors(site, i, output):
        if site not in config.sites:  # attention patterns are not vectors
            return
        if site not in vectors:
            vectors[site] = torch.empty((len(layers), len(real), output.shape[-1]), dtype=output.dtype,
                                        pin_memory=True)
        copies.wait_stream(main)
        with torch.cuda.stream(copies):
            output.record_stream(copies)  # freed by the pass, not reused until this stream is done with it
            vectors[site][i].copy_(output.flatten(0, 1)[real], non_blocking=True)

    captured = capture(model, input_ids, attention_mask, layers, config, copy_vectors if copies is not None else None)
    if copies is not None:
        real.record_stream(copies)  # the copies index with it
    wait = start_copy_to_host(_summaries(captured, real, lengths, config, vectors=copies is None))
    if copies is None:
        return wait
    copied = torch.cuda.Event()
    copied.record(copies)  # waited for by the host, not by the next pass

    def wait_all():
        copied.synchronize()
        return wait() | {f"{site}.vector": v for site, v in vectors.items()}
    return wait_all


def _summaries(captured, real, lengths, config, vectors: bool = True) -> dict[str, torch.Tensor]:
    """A batch's summaries per site (and, with `vectors`, the float32 vectors of the real rows) and its attention
    patterns, on the activations' device."""
    out = {}
    for site in config.sites:  # each layer's [B, T, D] read where it lies
        out.update({f"{site}.{k}": v for k, v in token_summaries(captured[site], real, lengths,
                                                                           config.top_k).items()})
        if config.vectors and vectors:
            out[f"{site}.vector"] = torch.stack(captured[site]).flatten(1, 2)[:, real].float()  # [L, N, D]
    if config.attention:
        out["pattern"] = torch.stack(captured["pattern"]).float()  # [L, B, H, T, T]
    return out


def record(
    model: LoadedModel | str,
    prompts: list[str],
    db: Store | str | None = None,
    config: RecordConfig | None = None,
    *,
    progress: bool | Callable[[int, int], None] = True,
) -> int:
    """Record `prompts` through `model` into the database and return the run id.

    `progress` is True for a progress bar, False for none, or a callback
    `(prompts_done, prompts_total)`. Ctrl-C marks the run `interrupted`; any
    other error marks it `failed`; either way earlier runs are untouched.
    """
    config = config or RecordConfig()
    store = db if isinstance(db, Store) else Store(db)
    prompts = validate_prompts(prompts)
    if isinstance(model, str):
        model = load_model(model, attention=config.attention)
    layers = [model.check_layer(layer) for layer in (config.layers or range(model.n_layers))]
    check_parts(model, layers, config)
    heads = {layer: model.attention_heads(layer) for layer in layers}
    if config.attention and len(set(heads.values())) > 1:
        raise WorkbenchError(f"attention maps are stored per layer with one head count, but these layers have "
                             f"{heads} heads; record the layers of each count separately (--layers)")
    ids = tokenize(model, prompts)
    summarised = {i for i, row in enumerate(ids) if config.attention and config.map_limit and len(row) > config.map_limit}
    without_maps = replace(config, attention=False)
    needed = (estimate_tensor_bytes(model, [len(r) for i, r in enumerate(ids) if i not in summarised], config)
              + estimate_tensor_bytes(model, [len(ids[i]) for i in summarised], without_maps))
    if needed > config.max_tensor_gb * 1e9:
        raise WorkbenchError(
            f"this recording would write {needed / 1e9:.2f} GB of vectors and attention maps, over the cap of "
            f"{config.max_tensor_gb} GB; record fewer prompts or layers, or raise the cap (--max-gb)"
        )
    if config.batch_size > 1 and len(prompts) > 1 and not padding_safe(model, ids[0], layers):
        warnings.warn(f"padding changes {model.spec}'s outputs (it mixes tokens past its attention mask): each "
                      "prompt is recorded alone", stacklevel=2)
        config = replace(config, batch_size=1)
    run_id = store.create_run("record", model_info(model), {**config.to_dict(), "layers": layers})
    bar = tqdm(total=len(prompts), desc=f"run {run_id}", unit="prompt", disable=progress is not True)
    texts = TokenTexts(model.tokenizer)
    started, tokens = time.perf_counter(), 0
    try:
        # While the writer thread turns batch i into tables and commits them, the model computes batch i + 1.
        with store.writer(run_id, compression=config.compression) as writer:
            for batch in batches(len(prompts), config.batch_size, summarised):
                batch_config = without_maps if batch[0] in summarised else config
                lengths, host = _record_batch(model, batch, ids, layers, batch_config)
                writer.submit(partial(all_rows, text_rows(run_id, batch, prompts, ids, texts), run_id, batch,
                                      lengths, host, layers, batch_config, model.is_generative))
                tokens += sum(lengths)
                bar.set_postfix_str(f"{tokens / (time.perf_counter() - started):,.0f} tok/s, "
                                    f"{writer.bytes_written / 1e6:,.1f} MB written", refresh=False)
                bar.update(len(batch))
                if callable(progress):
                    progress(batch[-1] + 1, len(prompts))
        if summarised:  # the long prompts' attention, as summaries linked to the run
            from workbench.attention_summaries import record_summaries

            record_summaries(model, [prompts[i] for i in sorted(summarised)], store, layers=_softmax(model, layers),
                             prompt_ids=sorted(summarised), run_id=run_id)
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted", "stopped by the user")
        raise
    except Exception as e:
        store.finish_run(run_id, "failed", f"{type(e).__name__}: {e}")
        raise
    finally:
        bar.close()
    store.finish_run(run_id, "complete")
    return run_id


def batches(n_prompts: int, size: int, apart: set[int]) -> list[list[int]]:
    """Prompt indices in order, in batches of at most `size` that never mix a prompt of `apart` (summarised
    instead of mapped) with one that is not."""
    out: list[list[int]] = []
    for i in range(n_prompts):
        if out and len(out[-1]) < size and (out[-1][-1] in apart) == (i in apart):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _softmax(model: LoadedModel, layers: list[int]) -> list[int]:
    """The recorded layers whose mixer is softmax attention (the ones summaries read)."""
    return [layer for layer in layers if model.structure.softmax[layer]]


_PADDING_SAFE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # hf model -> bool


def padding_safe(model: LoadedModel, ids: list[int], layers: list[int]) -> bool:
    """Whether right padding leaves a prompt's numbers unchanged in this model, measured once per model on
    `ids`: false where the model mixes tokens past its mask (ConvBERT's convolutions, Nystromformer's landmarks,
    an indexer that selects padded keys), and then each prompt must run alone."""
    if model.hf not in _PADDING_SAFE:
        alone = torch.tensor([ids])
        padded = torch.tensor([ids + [model.tokenizer.pad_token_id or 0] * 3])
        mask = torch.ones_like(padded)
        mask[0, len(ids):] = 0
        device = model.device
        a = capture(model, alone.to(device), torch.ones_like(alone).to(device), layers, RecordConfig())
        b = capture(model, padded.to(device), mask.to(device), layers, RecordConfig())
        tolerance = 1e-4 if model.dtype == torch.float32 else 5e-2
        _PADDING_SAFE[model.hf] = all(
            ((x[0] - y[0, : len(ids)]).abs().max() <= tolerance * x.abs().max().clamp_min(1e-6)).item()
            for x, y in zip(a["resid_post"], b["resid_post"], strict=True))
    return _PADDING_SAFE[model.hf]


# a site the user may ask for -> the part it is read from, named for the error
_SITE_PARTS = {"attention": ("attn", "attention"), "attn_out": ("attn", "attention or token mixer"),
               "mlp_out": ("mlp", "MLP"), "router": ("router", "mixture-of-experts router")}


def check_parts(model: LoadedModel, layers: list[int], config: RecordConfig) -> None:
    """Refuse, before any work, a site asked for at layers that lack its part, and attention maps without eager
    attention. (A mixer that returns no weights is refused by the capture: our DeltaNet layers return their exact
    effective attention and transformers' gated delta-rule layers have it computed from their rule call, but
    state-space layers give none.)"""
    if config.attention and not model.eager_attention:
        raise WorkbenchError("attention maps need eager attention: load the model with attention=True")
    for site, (part, what) in _SITE_PARTS.items():
        having = [layer for layer in range(model.n_layers) if model.part_path(part, layer) is not None]
        if getattr(config, site) and (missing := sorted(set(layers) - set(having))):
            raise WorkbenchError(f"layers {missing} of {model.spec} have no {what} to read {site} from; the layers "
                                 f"with one are {having or 'none'}")


def model_info(model: LoadedModel) -> dict:
    """The model columns of a run row."""
    return {
        "model": model.spec, "revision": model.revision, "model_path": model.path, "model_type": model.model_type,
        "n_layers": model.n_layers, "d_model": model.d_model, "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(model.device),
    }


def _record_batch(model, batch, ids, layers, config) -> tuple[list[int], Callable[[], dict[str, np.ndarray]]]:
    """The model's half of one batch: pad the prompts, queue the capture; the token counts and the wait for the
    host arrays (host tensors in, so queueing never waits for the GPU)."""
    lengths = [len(ids[i]) for i in batch]
    pad = model.tokenizer.pad_token_id or 0
    input_ids = torch.full((len(batch), max(lengths)), pad, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, i in enumerate(batch):
        input_ids[row, : lengths[row]] = torch.tensor(ids[i])
        attention_mask[row, : lengths[row]] = 1
    return lengths, start_batch(model, input_ids, attention_mask, layers, config)
