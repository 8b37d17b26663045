"""Train the bundled demo model end to end: corpus, tokenizer, model, evaluation, model card.

    python analyses/train_demo_model.py --out data/models/demo            # one GPU, ~14 minutes
    python analyses/train_demo_model.py --tiny --out /tmp/demo --work /tmp/work   # CPU smoke run, < 1 min
    python analyses/train_demo_model.py --arch hybrid --out data/models/demo-hybrid   # the DeltaNet hybrid

Builds the corpus if ``--corpus`` has none, trains the BPE tokenizer, then trains the
Llama model on random 1024-token windows that start at document starts (so a
retrieval document and its questions share a window), retrieval rows making up
``TrainConfig.retrieval_share`` of each batch. Training stops by wall clock: the
steps per second timed during warm-up fix the number of steps, and the cosine
schedule runs over exactly that many. Checkpoints at log-spaced steps go to ``--work``; each one's
massive-activation statistics go into a table. At the end ``--out`` receives the
final model (fp16 safetensors + tokenizer), ``metrics.json``, ``train_log.csv``,
``massive_by_checkpoint.csv``, ``heldout_retrieval.jsonl`` and the model card; two
earlier checkpoints go to the sibling directory ``<out>-checkpoints/step-N``.

``--arch hybrid`` trains the DeltaNet hybrid (``workbench.deltanet``) on the same corpus with the demo
model's tokenizer. Our delta-rule kernel has no backward, so on a GPU its DeltaNet layers train through
flash-linear-attention's ``chunk_delta_rule`` (which must be installed); on the CPU through the
differentiable reference. The shipped model runs on our kernel. No intermediate checkpoints are shipped
for it (the ``data/`` budget).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "analyses")]

import transformers  # noqa: E402
import write_model_card  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: E402

from workbench import deltanet  # noqa: E402
from workbench import demo_model as dm  # noqa: E402
from workbench.corpus import build  # noqa: E402
from workbench.deltanet.from_llama import init_from_llama  # noqa: E402
from workbench.deltanet.modeling import DeltaRule  # noqa: E402

PARTS = ("stories", "retrieval")
MASSIVE_COLUMNS = ["step", "tokens_seen", "layer", "top1_pooled", "top_position", "top_dim", "median_pooled",
                   "ratio_pooled", "top_token"]
LOG_COLUMNS = ["step", "tokens_seen", "elapsed_s", "lr", "train_loss", "tokens_per_s", "val_loss_stories",
               "val_loss_retrieval", "val_retrieval_acc_1024"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a run; stored in metrics.json."""

    arch: dm.Architecture = dm.Architecture()
    corpus_size: float = 1.0
    batch_size: int = 128
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    retrieval_share: float = 0.55
    seed: int = 0
    minutes: float = 14.0  # wall-clock budget of the whole script
    reserve_s: float = 60.0  # kept for final evaluation and writing (about 30 s on one H100)
    max_steps: int | None = None  # fixed length instead of the wall-clock budget
    first_checkpoint: int = 32  # checkpoints at this step times powers of two, plus step 0 and the last
    log_every: int = 25
    eval_every: int = 500
    tokenizer_docs: int = 100_000  # story documents to train the tokenizer on (+1/10 as many retrieval ones)
    sample_tokens: int = 48  # length of the sample continuations in the card
    compile: bool = True
    tokenizer_from: str | None = None  # a model directory whose tokenizer to reuse instead of training one
    init_from: str | None = None  # a Llama of the same shape to warm-start the hybrid from
    ship_checkpoints: bool = True


TINY = TrainConfig(arch=dm.TINY, corpus_size=0.002, batch_size=4, lr=3e-3, warmup_steps=5, max_steps=24,
                   first_checkpoint=4, log_every=8, eval_every=24, tokenizer_docs=2000, sample_tokens=8,
                   compile=False)
HYBRID = TrainConfig(arch=dm.HYBRID, lr=1e-3, warmup_steps=100, compile=False, ship_checkpoints=False,
                     tokenizer_from="data/models/demo", init_from="data/models/demo")
TINY_HYBRID = replace(TINY, arch=dm.TINY_HYBRID, ship_checkpoints=False, init_from=None)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def checkpoint_steps(total: int, first: int) -> list[int]:
    steps, step = [0], first
    while step < total:
        steps.append(step)
        step *= 2
    return steps + [total]


def pick_shipped(steps: list[int], total: int) -> list[int]:
    """The two intermediate checkpoints nearest (in log steps) to 1/16 and 1/4 of training."""
    chosen: list[int] = []
    for fraction in (16, 4):
        candidates = [s for s in steps if 0 < s < total and s not in chosen]
        if candidates:
            chosen.append(min(candidates, key=lambda s: abs(math.log(s) - math.log(total / fraction))))
    return sorted(chosen)


def lr_at(step: int, total: int | None, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` over ``total`` steps (unknown: stay at peak)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if total is None:
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class Windows:
    """Random ``[B, T+1]`` windows from one token stream, each starting at a document start."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, length: int, device: torch.device, seed: int):
        self.tokens = torch.from_numpy(tokens).to(device)
        starts = torch.from_numpy(starts)
        self.starts = starts[starts + length <= len(tokens)].to(device)
        if len(self.starts) == 0:
            raise ValueError(f"corpus part too small for windows of {length} tokens")
        self.offsets = torch.arange(length, device=device)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def sample(self, n: int) -> torch.Tensor:
        pick = torch.randint(len(self.starts), (n,), generator=self.generator, device=self.starts.device)
        return self.tokens[self.starts[pick][:, None] + self.offsets].long()


def save_model(model, tokenizer, path: Path) -> None:
    """An fp16 copy of ``model`` with config, generation config and tokenizer, loadable offline."""
    half = copy.deepcopy(model).to(torch.float16)
    half.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                              eos_token_id=tokenizer.eos_token_id,
                                              pad_token_id=tokenizer.pad_token_id)
    half.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def prepare_data(corpus: Path, cfg: TrainConfig) -> dict:
    """Build the corpus if missing, train the tokenizer, encode every split."""
    manifest_path = corpus / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        have = manifest["config"]
        if (have["seed"], have["size"]) != (cfg.seed, cfg.corpus_size):
            raise SystemExit(f"{corpus} holds a corpus with seed {have['seed']} and size {have['size']}, but "
                             f"this run wants seed {cfg.seed} and size {cfg.corpus_size}: pass another "
                             "--corpus directory or delete that one")
        if manifest.get("generator") != build.generator_hash():
            raise SystemExit(f"{corpus} was built by other corpus code than this checkout's: delete it "
                             "(it is rebuilt automatically) or pass another --corpus directory")
        log(f"corpus: using {corpus}")
    else:
        log(f"corpus: building into {corpus}")
        # A fresh process: the builder's worker processes then import only the light corpus modules.
        subprocess.run([sys.executable, str(ROOT / "analyses" / "build_corpus.py"), "--out", str(corpus),
                        "--seed", str(cfg.seed), "--size", str(cfg.corpus_size)], check=True)
    docs = {(part, split): build.read_documents(corpus / f"{part}/{split}.txt")
            for part in PARTS for split in ("train", "validation", "test")}
    t = time.time()
    if cfg.tokenizer_from:
        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_from)
        log(f"tokenizer: {len(tokenizer)} tokens from {cfg.tokenizer_from}")
    else:
        n = cfg.tokenizer_docs
        sample = docs["stories", "train"][:n] + docs["retrieval", "train"][:n // 10]
        tokenizer = dm.train_tokenizer(sample)
        log(f"tokenizer: {len(tokenizer)} tokens in {time.time() - t:.1f} s")
    tokenizer.model_max_length = cfg.arch.context_length
    t = time.time()
    encoded = {key: dm.encode_documents(tokenizer, texts) for key, texts in docs.items()}
    log(f"encoded {sum(len(e[0]) for e in encoded.values()) / 1e6:.1f}M tokens in {time.time() - t:.1f} s")
    concepts = {split: build.read_jsonl(corpus / f"concepts/sentences_{split}.jsonl")
                for split in ("train", "validation", "test")}
    items = {split: build.read_jsonl(corpus / f"retrieval/items_{split}.jsonl") for split in build.HELDOUT}
    composition = {part: {split: {"documents": len(docs[part, split]), "tokens": len(encoded[part, split][0])}
                          for split in ("train", "validation", "test")} for part in PARTS}
    return {"tokenizer": tokenizer, "encoded": encoded, "concepts": concepts, "items": items,
            "composition": composition, "manifest": json.loads(manifest_path.read_text())}


def quick_eval(model, data: dict, seq: int) -> dict:
    """Small validation pass logged during training."""
    model.eval()
    row = {}
    for part in PARTS:
        windows = dm.document_windows(*data["encoded"][part, "validation"], seq + 1, limit=16)
        row[f"val_loss_{part}"] = dm.heldout_loss(model, windows)
    items = data["items"]["validation"]
    longest = [i for i in items if i["length"] == max(i["length"] for i in items)]
    row["val_retrieval_acc_1024"] = dm.retrieval_accuracy(model, data["tokenizer"], longest[::2])
    model.train()
    return row


def train(cfg: TrainConfig, data: dict, started: float, work: Path) -> dict:
    """The training loop; returns the model, its checkpoints and their massive-activation rows."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    seq = cfg.arch.context_length
    model = AutoModelForCausalLM.from_config(cfg.arch.model_config(len(data["tokenizer"])),
                                             attn_implementation="sdpa").to(device)
    if cfg.init_from:
        fresh = init_from_llama(model, AutoModelForCausalLM.from_pretrained(cfg.init_from, dtype=torch.float32))
        log(f"warm start from {cfg.init_from}; left at their own init: {', '.join(fresh)}")
    if cfg.arch.softmax_layers is not None and device.type == "cuda":
        train_delta_rule_with_fla(model)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters on {device}")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    streams = {part: Windows(*data["encoded"][part, "train"], seq + 1, device, cfg.seed + i)
               for i, part in enumerate(PARTS)}
    n_retrieval = round(cfg.batch_size * cfg.retrieval_share)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    forward = model
    if cfg.compile and device.type == "cuda":
        forward = torch.compile(model)

    def step_loss(m, batch):
        with autocast:
            logits = m(input_ids=batch[:, :-1]).logits  # [B, T, V]
        return F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())

    deadline = started + cfg.minutes * 60 - cfg.reserve_s
    total = cfg.max_steps
    # Without a fixed length, speed is timed during warm-up (whose learning rates do not depend on the total),
    # leaving out the time spent saving checkpoints; the total is fixed just before warm-up ends.
    ckpts = checkpoint_steps(total or cfg.warmup_steps, cfg.first_checkpoint)[:None if total else -1]
    probe_start, probe_end = cfg.first_checkpoint + 2, cfg.warmup_steps - 1
    massive_rows, saved, paused = [], {}, 0.0
    log_file = (work / "train_log.csv").open("w", newline="")
    writer = csv.DictWriter(log_file, LOG_COLUMNS)
    writer.writeheader()
    loss_sum, loss_n, probe = torch.zeros((), device=device), 0, 0.0
    train_start = last_log = time.time()
    step = 0
    while True:
        if step > 0 and (total is None or step < total) and time.time() > deadline:
            log(f"wall-clock budget reached at step {step}; stopping here")
            total = step
            ckpts.append(step)
        if step in ckpts:
            pause = time.time()
            model.eval()
            for row in dm.massive_activation_stats(model, data["tokenizer"]):
                massive_rows.append({"step": step, "tokens_seen": step * cfg.batch_size * seq, **row})
            saved[step] = work / "checkpoints" / f"step-{step}"
            save_model(model, data["tokenizer"], saved[step])
            model.train()
            paused += time.time() - pause
        if total is not None and step >= total:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, cfg)
        batch = torch.cat([streams["retrieval"].sample(n_retrieval),
                           streams["stories"].sample(cfg.batch_size - n_retrieval)])
        try:
            loss = step_loss(forward, batch)
            loss.backward()
        except Exception as error:  # torch.compile unavailable or failing: train eagerly instead
            if forward is model:
                raise
            log(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); continuing without it")
            optimizer.zero_grad(set_to_none=True)
            forward = model
            loss = step_loss(forward, batch)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        loss_n += 1
        step += 1
        if total is None and step in (probe_start, probe_end):
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step == probe_start:
                probe, paused = time.time(), 0.0
            else:
                per_step = (time.time() - probe - paused) / (probe_end - probe_start)
                t = time.time()
                quick_eval(model, data, seq)
                per_eval = time.time() - t
                total = step + int(0.97 * (deadline - time.time()) / (per_step + per_eval / cfg.eval_every))
                ckpts = checkpoint_steps(total, cfg.first_checkpoint)
                log(f"{1 / per_step:.2f} steps/s, {cfg.batch_size * seq / per_step / 1e6:.2f}M tokens/s; "
                    f"training for {total} steps ({total * cfg.batch_size * seq / 1e9:.2f}B tokens)")
        if step % cfg.log_every == 0 or step == total:
            now = time.time()
            row = {"step": step, "tokens_seen": step * cfg.batch_size * seq,
                   "elapsed_s": round(now - started, 1), "lr": lr_at(step - 1, total, cfg),
                   "train_loss": round(float(loss_sum) / loss_n, 4),
                   "tokens_per_s": round(loss_n * cfg.batch_size * seq / (now - last_log))}
            if step % cfg.eval_every == 0 or step == total:
                row.update({k: round(v, 4) for k, v in quick_eval(model, data, seq).items()})
            writer.writerow(row)
            log_file.flush()
            log(" ".join(f"{k}={v}" for k, v in row.items()))
            loss_sum.zero_()
            loss_n, last_log = 0, time.time()
    log_file.close()
    return {"model": model, "steps": step, "params": n_params, "device": device, "saved": saved,
            "retrieval_rows": n_retrieval,
            "massive": massive_rows, "train_seconds": time.time() - train_start,
            "compiled": forward is not model}


def train_delta_rule_with_fla(model) -> None:
    """Run every DeltaNet layer's rule through fla's chunk_delta_rule where gradients are needed (ours has no
    backward; fla's takes bf16 only, which autocast gives the training steps); no-grad passes
    (evaluation, checkpoint statistics, in fp32) keep our kernel."""
    try:
        from fla.ops.delta_rule import chunk_delta_rule
    except ImportError as error:
        raise SystemExit("training the hybrid on a GPU needs flash-linear-attention (pip install "
                         "flash-linear-attention): our delta-rule kernel has no backward") from error
    deltanet.register()  # importing fla registered fla's classes for "delta_net"; evaluation loads ours
    for module in model.modules():
        if isinstance(module, DeltaRule):
            ours = module.function
            module.function = lambda *args, ours=ours, **kw: (chunk_delta_rule if torch.is_grad_enabled()
                                                              else ours)(*args, **kw)


def evaluate(path: Path, data: dict, cfg: TrainConfig, device: torch.device) -> dict:
    """Measure the model as shipped: reload the fp16 files, run in float32."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    tokenizer = data["tokenizer"]
    seq = cfg.arch.context_length
    heldout = {}
    for part in PARTS:
        loss = dm.heldout_loss(model, dm.document_windows(*data["encoded"][part, "test"], seq + 1, limit=512))
        heldout[part] = {"loss": loss, "perplexity": math.exp(loss)}
    items = data["items"]["test"]
    correct = dm.retrieval_correct(model, tokenizer, items, batch_size=32)
    retrieval = {}
    for length in sorted({i["length"] for i in items}):
        picked = [(i, c) for i, c in zip(items, correct) if i["length"] == length]
        lengths = [len(tokenizer(f"{i['prompt']} {i['answer']}").input_ids) for i, _ in picked]
        retrieval[str(length)] = {
            "accuracy": float(np.mean([c for _, c in picked])), "n": len(picked),
            "mean_tokens": float(np.mean(lengths)), "max_tokens": max(lengths),
            "by_task": {task: float(np.mean([c for i, c in picked if i["task"] == task]))
                        for task in sorted({i["task"] for i, _ in picked})}}
    concepts = {label: dm.concept_separability(model, tokenizer, data["concepts"], label, positive)
                for label, positive in (("sentiment", "positive"), ("tense", "past"))}
    return {"heldout": heldout, "retrieval": {"split": "test", "by_length": retrieval}, "concepts": concepts,
            "samples": dm.sample_continuations(model, tokenizer, max_new_tokens=cfg.sample_tokens,
                                               seed=cfg.seed)}


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def ship(out: Path, work: Path, run: dict, data: dict, cfg: TrainConfig, evaluation: dict,
         started: float) -> dict:
    """Write the final model, its tables and metrics to ``out`` and two earlier checkpoints beside it.

    Everything for ``out`` is written to a staging directory first, so an interrupted run never leaves a
    half-written model where the workbench looks for one.
    """
    staging = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(run["saved"][run["steps"]], staging)
    shipped = pick_shipped(sorted(run["saved"]), run["steps"]) if cfg.ship_checkpoints else []
    ckpt_dir = out.parent / f"{out.name}-checkpoints"
    if shipped:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    for step in shipped:
        shutil.copytree(run["saved"][step], ckpt_dir / f"step-{step}")
    write_csv(staging / "massive_by_checkpoint.csv", run["massive"], MASSIVE_COLUMNS)
    shutil.copy(work / "train_log.csv", staging / "train_log.csv")
    test_items = data["items"]["test"]
    with (staging / "heldout_retrieval.jsonl").open("w") as f:  # 20 per length, all tasks, for smoke tests
        for length in sorted({i["length"] for i in test_items}):
            for item in [i for i in test_items if i["length"] == length][::6][:20]:
                f.write(json.dumps(item) + "\n")
    share = run["retrieval_rows"] / cfg.batch_size
    metrics = {
        "model": {"architecture": type(run["model"]).__name__, **asdict(cfg.arch), "parameters": run["params"],
                  "vocab_size": len(data["tokenizer"]), "embedding_rows": run["model"].config.vocab_size,
                  "dtype": "float16"},
        "training": {"steps": run["steps"],
                     "tokens_seen": run["steps"] * cfg.batch_size * cfg.arch.context_length,
                     "train_seconds": round(run["train_seconds"], 1),
                     "total_seconds": round(time.time() - started, 1),
                     "gpu": torch.cuda.get_device_name(0) if run["device"].type == "cuda" else "none (CPU)",
                     "compiled": run["compiled"], "torch": torch.__version__,
                     "transformers": transformers.__version__,
                     "config": {k: v for k, v in asdict(cfg).items() if k != "arch"},
                     "checkpoints": sorted(run["saved"]), "shipped_checkpoints": shipped},
        "corpus": {"seed": cfg.seed, "size": cfg.corpus_size, "parts": data["composition"],
                   "training_mix": {"retrieval": share, "stories": 1 - share},
                   "retrieval_task_weights": data["manifest"]["config"]["task_weights"]},
        **evaluation,
    }
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return metrics


def main(argv: list[str] | None = None) -> dict:
    started = time.time()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("llama", "hybrid"), default="llama",
                        help="llama: the demo model; hybrid: the DeltaNet hybrid demo-hybrid (default llama)")
    parser.add_argument("--out", default=None,
                        help="final model directory (default: data/models/demo or data/models/demo-hybrid)")
    parser.add_argument("--work", default=None,
                        help="checkpoints and logs (default: data/runs/<model>, or beside --out with --tiny)")
    parser.add_argument("--corpus", default=None,
                        help="corpus, built if missing (default: data/corpus, or in --work with --tiny)")
    parser.add_argument("--tiny", action="store_true",
                        help="a few CPU steps of a very small model (for tests)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="wall-clock budget of the whole run (default 14)")
    parser.add_argument("--max-steps", type=int, default=None, help="train exactly this many steps instead")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args(argv)
    cfg = {(False, "llama"): TrainConfig(), (True, "llama"): TINY, (False, "hybrid"): HYBRID,
           (True, "hybrid"): TINY_HYBRID}[args.tiny, args.arch]
    overrides = {"seed": args.seed, "minutes": args.minutes, "max_steps": args.max_steps,
                 "batch_size": args.batch_size, "lr": args.lr, "compile": False if args.no_compile else None}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if cfg.minutes * 60 <= cfg.reserve_s and cfg.max_steps is None:
        parser.error(f"--minutes must leave more than {cfg.reserve_s:.0f} s for evaluation, "
                     f"got {cfg.minutes}")
    out = Path(args.out or ("data/models/demo" if args.arch == "llama" else "data/models/demo-hybrid"))
    work = Path(args.work or (out.parent / f"{out.name}-work" if args.tiny else f"data/runs/{out.name}"))
    corpus = Path(args.corpus or (work / "corpus" if args.tiny else "data/corpus"))
    work.mkdir(parents=True, exist_ok=True)

    data = prepare_data(corpus, cfg)
    run = train(cfg, data, started, work)
    log(f"trained {run['steps']} steps in {run['train_seconds']:.0f} s; evaluating")
    evaluation = evaluate(run["saved"][run["steps"]], data, cfg, run["device"])
    metrics = ship(out, work, run, data, cfg, evaluation, started)
    write_model_card.main(["--model", str(out), *(["--compare", cfg.init_from] if cfg.init_from else [])])
    log(f"wrote {out} and {out.parent / (out.name + '-checkpoints')} in {time.time() - started:.0f} s total")
    return metrics


if __name__ == "__main__":
    main()
