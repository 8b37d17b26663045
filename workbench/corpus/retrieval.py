"""Long-context retrieval tasks with checkable answers, sized to a token budget.

Three tasks, each a context followed by ``Question: ... Answer: <answer>``:

- ``kv``: lines ``key 4821 : value 7735``; asks for the value of one key.
- ``passkey``: a five-digit pass key stated once, buried in story sentences.
- ``multihop``: shuffled lines ``box 417 points to box 862.``; asks for the boxes
  reached by following two links from a start box. The answer spells out both hops
  (``862 then 305``) so each hop is one lookup the model can make while generating;
  a sparse attention that drops either link line gets it wrong.

Formats are fixed and simple on purpose: a small model has to learn them in minutes.
Evaluation items ask one question and end the prompt at ``Answer:``; training
documents ask up to one question per 128 tokens (at most eight), so each long context
teaches more than once (answers are the only tokens that reward retrieval).
Lengths are counted with ``estimate_tokens``, which counts the pieces our
tokenizer's pre-tokenizer makes (digits split one by one), so it matches the trained
tokenizer whenever every word is a single token, and over-counts otherwise.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

TASKS = ("kv", "passkey", "multihop")
EVAL_LENGTHS = (256, 512, 1024)
HOP_WORDS = {1: "one link", 2: "two links", 3: "three links"}
# Share of each budget kept free: words the tokenizer splits cost more than one token.
BUDGET_SAFETY = 0.97

_PIECES = re.compile(r"\d| ?[A-Za-z]+| ?[^\sA-Za-z\d]+|\s")

Filler = Callable[[random.Random], str]


@dataclass(frozen=True)
class RetrievalItem:
    """One evaluation item: ``prompt + " " + answer`` is the full text."""

    task: str
    length: int  # token budget (BOS, prompt and answer together fit within it)
    prompt: str
    answer: str
    depth: float  # relative position in the context of the first fact needed (0 = start)

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.answer}"

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_estimate": estimate_tokens(self.text) + 1}


def estimate_tokens(text: str) -> int:
    """Number of pre-tokenizer pieces (each digit, word, punctuation run, whitespace char)."""
    return len(_PIECES.findall(text))


def check_answer(item: RetrievalItem, generated: str) -> bool:
    """Exact match of the generated answer's first line against the item's answer."""
    return generated.strip().split("\n", 1)[0].strip() == item.answer


def item_tokens(tokenizer, item: RetrievalItem | dict) -> tuple[list[int], int]:
    """(token ids of prompt + answer, number of prompt tokens); refuses items whose prompt tokens change when
    the answer is appended (the answer's tokens would then not be what greedy decoding must produce)."""
    prompt, answer = (item.prompt, item.answer) if isinstance(item, RetrievalItem) else (item["prompt"], item["answer"])
    head, full = tokenizer(prompt).input_ids, tokenizer(f"{prompt} {answer}").input_ids
    if full[:len(head)] != head:
        raise ValueError(f"prompt tokens change when the answer is appended: {prompt[-40:]!r}")
    return full, len(head)


def answer_reproduced(predicted, answer) -> bool:
    """Whether greedy decoding reproduces the answer: at every answer position the arg-max next token (given the
    prompt and the answer so far, `predicted`) is the answer's token. This is the retrieval accuracy the demo
    model's card, the tests and the sparse-attention sweep report."""
    return list(predicted) == list(answer)


def _budget(length: int) -> int:
    return int(length * BUDGET_SAFETY) - 1  # minus BOS


def _fill_lines(lines: Callable[[], str], budget: int, fixed_cost: int) -> list[str]:
    """Draw lines until the next one would break the budget."""
    out, used = [], fixed_cost
    while True:
        line = lines()
        cost = estimate_tokens(line)
        if used + cost > budget:
            return out
        out.append(line)
        used += cost


def _kv(rng: random.Random, budget: int, n_questions: int, training: bool, filler: Filler):
    header = "Remember the value of each key.\n"
    questions_cost = n_questions * estimate_tokens("Question: what is the value of key 0000? Answer: 0000\n")
    used: set[int] = set()

    def line() -> str:
        key = rng.randint(1000, 9999)
        while key in used:
            key = rng.randint(1000, 9999)
        used.add(key)
        return f"key {key} : value {rng.randint(1000, 9999)}\n"

    lines = _fill_lines(line, budget, estimate_tokens(header) + questions_cost)
    qa = []
    for i in rng.sample(range(len(lines)), min(n_questions, len(lines))):
        _, key, _, _, value = lines[i].split()
        qa.append((f"Question: what is the value of key {key}?", value, i / len(lines)))
    return header + "".join(lines), qa


def _passkey(rng: random.Random, budget: int, n_questions: int, training: bool, filler: Filler):
    key = str(rng.randint(10000, 99999))
    header = "There is a pass key hidden in this text. Remember it.\n"
    needle = f" The pass key is {key}. Remember it. {key} is the pass key."
    question = "Question: what is the pass key?"
    fixed = estimate_tokens(header + needle + "\n" + question + f" Answer: {key}")
    sentences = _fill_lines(lambda: " " + filler(rng), budget, fixed)  # leading space: counted as one piece
    at = rng.randint(0, len(sentences))
    body = "".join(sentences[:at]) + needle + "".join(sentences[at:])
    return header + body.lstrip() + "\n", [(question, key, at / max(1, len(sentences)))]


def _multihop(rng: random.Random, budget: int, n_questions: int, training: bool, filler: Filler):
    header = "Each line says which box a box points to.\n"
    line_cost = estimate_tokens("box 000 points to box 000.\n")
    q_cost = n_questions * estimate_tokens("Question: start at box 000 and follow three links. "
                                           "Answer: 000 then 000 then 000\n")
    n_links = max(3, (budget - estimate_tokens(header) - q_cost) // line_cost)
    sizes = []  # chains of 4-8 boxes (the last may be shorter), so most chains allow three hops
    while sum(sizes) - len(sizes) < n_links:
        sizes.append(min(rng.randint(4, 8), n_links - (sum(sizes) - len(sizes)) + 1))
    nodes = iter(rng.sample(range(100, 1000), sum(sizes)))
    chains = [[next(nodes) for _ in range(size)] for size in sizes]
    links = [(a, b) for c in chains for a, b in zip(c, c[1:])]
    rng.shuffle(links)
    line_of = {a: i for i, (a, _) in enumerate(links)}
    qa = []
    for _ in range(n_questions):
        hops = rng.randint(1, 3) if training else 2
        chain = rng.choice([c for c in chains if len(c) > hops])
        start = rng.randint(0, len(chain) - 1 - hops)
        path = chain[start:start + hops + 1]
        qa.append((f"Question: start at box {path[0]} and follow {HOP_WORDS[hops]}.",
                   " then ".join(str(b) for b in path[1:]), line_of[path[0]] / len(links)))
    return header + "".join(f"box {a} points to box {b}.\n" for a, b in links), qa


_BUILDERS = {"kv": _kv, "passkey": _passkey, "multihop": _multihop}


def make_item(task: str, length: int, rng: random.Random, filler: Filler) -> RetrievalItem:
    """An evaluation item: one question, prompt ending at ``Answer:``, within ``length`` tokens."""
    if task not in _BUILDERS:
        raise ValueError(f"unknown retrieval task {task!r}; expected one of {TASKS}")
    if length < 128:
        raise ValueError(f"length must be at least 128 tokens, got {length}")
    context, [(question, answer, depth)] = _BUILDERS[task](rng, _budget(length), 1, False, filler)
    return RetrievalItem(task, length, f"{context}{question} Answer:", answer, round(depth, 4))


def training_document(task: str, length: int, rng: random.Random, filler: Filler) -> str:
    """A training document: the same kind of context followed by answered questions (passkey: one;
    otherwise between half and all of one per 128 tokens, at most eight)."""
    most = max(1, min(8, length // 128))
    n_questions = 1 if task == "passkey" else rng.randint((most + 1) // 2, most)
    context, qa = _BUILDERS[task](rng, _budget(length), n_questions, True, filler)
    return context + "\n".join(f"{q} Answer: {a}" for q, a, _ in qa)
