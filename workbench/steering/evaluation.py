"""What steering achieved and what it cost: concept scores, fluency, and a layer x alpha sweep.

The demo model's sentiment is scored by the corpus grammar's own lexicon (every
`<positive/negative>` word pair the stories are built from), a scorer that never
runs the model being steered. For any model, `token_set_shift` measures the change
in log-probability of user-given token sets. Fluency cost: the perplexity of a
continuation under the unsteered model, and the KL divergence of next-token
distributions on neutral prompts.
"""

from __future__ import annotations

import math
import re
from functools import cache

import numpy as np
import pandas as pd
import torch

from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.progress import ProgressArg, tracked
from workbench.steering.steer import Steer, generate, steering_additions
from workbench.store import Store

_PAIR = re.compile(r"<([^<>/]*)/([^<>/]*)>")
_TENSE = re.compile(r"\[([^\[\]|]*)\|([^\[\]|]*)\]")
_WORD = re.compile(r"[a-z]+")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


@cache
def sentiment_lexicon() -> tuple[frozenset[str], frozenset[str]]:
    """(positive words, negative words) from every sentiment pair of the demo corpus grammar."""
    from workbench.corpus import stories

    positive, negative = set(), set()
    sources = [stories.GENERAL, stories.TOPIC_LEXICON, stories.FRAMES, stories.OPENERS, stories.CLOSERS]
    for text in (s for source in sources for s in _strings(source)):
        for good, bad in _PAIR.findall(text):
            for side, words in ((good, positive), (bad, negative)):
                for variant in (_TENSE.sub(r"\1", side), _TENSE.sub(r"\2", side)):
                    words.update(_WORD.findall(variant.lower()))
    shared = positive & negative  # words on both sides ("the", "very") carry no sentiment
    return frozenset(positive - shared), frozenset(negative - shared)


def sentiment_score(text: str) -> float:
    """(positive words - negative words) / (their sum), in [-1, 1]; 0 for a text with neither."""
    positive, negative = sentiment_lexicon()
    words = _WORD.findall(text.lower())
    pos, neg = sum(w in positive for w in words), sum(w in negative for w in words)
    return (pos - neg) / (pos + neg) if pos + neg else 0.0


def _forward_logprobs(model: LoadedModel, texts: list[str], additions=()) -> list[torch.Tensor]:
    """Per text, log-probabilities [T, V] of each next token, with steering added at every position."""
    out = []
    for text in texts:
        ids = torch.tensor([model.tokenizer(text)["input_ids"]], device=model.device)
        with torch.no_grad(), model.nn.trace(ids):
            for layer, addition in additions:
                hidden = model.residual_of(model.blocks()[layer].output)
                hidden[:] = hidden + addition
            logits = model.nn.output.logits.save()  # after any logit scale or soft-cap
        out.append(torch.log_softmax(logits[0].float(), dim=-1))
    return out


def continuation_perplexity(model: LoadedModel, prompt: str, continuation: str) -> float:
    """Perplexity of `continuation` given `prompt` under the (unsteered) model."""
    prompt_len = len(model.tokenizer(prompt)["input_ids"])
    full = model.tokenizer(prompt + continuation)["input_ids"]
    if len(full) <= prompt_len:
        return float("nan")
    logprobs = _forward_logprobs(model, [prompt + continuation])[0]
    targets = torch.tensor(full[prompt_len:], device=logprobs.device)
    picked = logprobs[prompt_len - 1:len(full) - 1].gather(-1, targets[:, None])
    return math.exp(-float(picked.mean()))


def geometric_mean(perplexities) -> float:
    """exp of the mean log perplexity (NaN for empty continuations ignored), so that one degenerate
    continuation (perplexity 1e5) does not outweigh all the others as in an arithmetic mean."""
    return float(np.exp(np.nanmean(np.log(perplexities))))


def mean_perplexity(model: LoadedModel, prompts: list[str], continuations: list[str]) -> float:
    """Geometric mean of the continuations' perplexities under the unsteered model."""
    return geometric_mean([continuation_perplexity(model, p, c) for p, c in zip(prompts, continuations)])


def next_token_kl(model: LoadedModel, prompts: list[str], steers) -> float:
    """Mean KL(unsteered || steered) of the next-token distribution after each neutral prompt."""
    additions = steering_additions(model, steers)
    base = _forward_logprobs(model, prompts)
    steered = _forward_logprobs(model, prompts, additions)
    return float(np.mean([torch.sum(b[-1].exp() * (b[-1] - s[-1])).item() for b, s in zip(base, steered)]))


def token_set_shift(model: LoadedModel, prompts: list[str], steers, positive_tokens: list[str],
                    negative_tokens: list[str]) -> float:
    """Mean change, steered minus unsteered, of log P(positive set) - log P(negative set) for the next token."""
    def ids(tokens):
        found = [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in tokens]
        if not all(found):
            raise WorkbenchError(f"some of {tokens} tokenize to nothing")
        return torch.tensor([f[0] for f in found], device=model.device)

    pos, neg = ids(positive_tokens), ids(negative_tokens)

    def margin(logprobs):
        return [float(torch.logsumexp(lp[-1][pos], 0) - torch.logsumexp(lp[-1][neg], 0)) for lp in logprobs]

    base = margin(_forward_logprobs(model, prompts))
    steered = margin(_forward_logprobs(model, prompts, steering_additions(model, steers)))
    return float(np.mean(np.subtract(steered, base)))


def sweep(model: LoadedModel, vectors: dict[int, np.ndarray], prompts: list[str], alphas: list[float],
          neutral_prompts: list[str], store: Store | None = None, scorer=sentiment_score,
          max_new_tokens: int = 24, direction_id: int | None = None, progress: ProgressArg = False) -> pd.DataFrame:
    """Steer each prompt at each (layer, alpha); score concept shift, success rate and fluency cost.

    success_rate: the share of prompts whose steered continuation scores above the unsteered one.
    perplexity_ratio: `mean_perplexity` of steered over unsteered continuations, both under the
    unsteered model. kl: next-token KL on the neutral prompts. With a store, each setting's rows are stored as
    it finishes (one `steering-sweep` analysis, partial until the last), so a stopped sweep keeps them.
    """
    if not vectors:
        raise WorkbenchError("no direction vectors to sweep")
    for alpha in alphas:
        if not np.isfinite(alpha):
            raise WorkbenchError(f"the steering strength (alpha) must be a finite number, got {alpha}")

    def perplexities(continuations):
        return [continuation_perplexity(model, p, c) for p, c in zip(prompts, continuations)]

    settings = [(layer, alpha) for layer in sorted(vectors) for alpha in alphas]
    analysis_id = None
    if store is not None:
        analysis_id = store.start_analysis(
            "steering-sweep", {"direction": direction_id, "alphas": alphas, "layers": sorted(vectors),
                               "prompts": len(prompts), "max_new_tokens": max_new_tokens},
            len(settings) + 1, model=model.spec)
    rows = []
    with tracked(progress, len(settings) + 1, "steering sweep", "setting") as step:
        base = generate(model, prompts, max_new_tokens=max_new_tokens)
        base_scores = np.array([scorer(c) for c in base])
        base_each = perplexities(base)
        base_ppl = geometric_mean(base_each)
        trials = [{"prompt_id": i, "prompt": p, "layers": "", "alpha": 0.0, "positions": "all", "steered": False,
                   "continuation": c, "concept_score": s, "perplexity": q}
                  for i, (p, c, s, q) in enumerate(zip(prompts, base, base_scores, base_each))]
        if analysis_id is not None:
            store.append_analysis(analysis_id, {"trials": pd.DataFrame(trials)}, 1)
        step(note="unsteered")
        for done, (layer, alpha) in enumerate(settings, start=2):
            steer = [Steer(layer, vectors[layer], alpha)]
            steered = generate(model, prompts, steer, max_new_tokens=max_new_tokens)
            scores = np.array([scorer(c) for c in steered])
            each = perplexities(steered)
            row = {"layer": layer, "alpha": alpha, "concept_shift": float(np.mean(scores - base_scores)),
                   "success_rate": float(np.mean(scores > base_scores)),
                   "perplexity_ratio": float(geometric_mean(each) / base_ppl),
                   "kl": next_token_kl(model, neutral_prompts, steer), "n_prompts": len(prompts)}
            rows.append(row)
            trials = [{"prompt_id": i, "prompt": p, "layers": str(layer), "alpha": alpha, "positions": "all",
                       "steered": True, "continuation": c, "concept_score": s, "perplexity": q}
                      for i, (p, c, s, q) in enumerate(zip(prompts, steered, scores, each))]
            if analysis_id is not None:
                store.append_analysis(analysis_id, {"sweep": pd.DataFrame([row]), "trials": pd.DataFrame(trials)},
                                      done)
            step(note=f"layer {layer}, alpha {alpha:g}: success {row['success_rate']:.2f}")
    table = pd.DataFrame(rows)
    if analysis_id is not None:
        store.finish_analysis(analysis_id, {"best": best_setting(table)})
    return table


def best_setting(table: pd.DataFrame, max_perplexity_ratio: float = 2.0) -> dict | None:
    """The (layer, alpha) with the highest success rate (then concept shift) within the fluency budget."""
    ok = table[(table.perplexity_ratio < max_perplexity_ratio) & (table.alpha != 0)]
    if ok.empty:
        return None
    return ok.sort_values(["success_rate", "concept_shift"], ascending=False).iloc[0].to_dict()
