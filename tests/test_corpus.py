"""The demo corpus builder: deterministic, answers present, lengths within budget, splits disjoint."""

from __future__ import annotations

import difflib
import random
import re

import pytest

from workbench.corpus import build, retrieval, stories
from workbench.corpus.build import CorpusConfig, build_corpus, read_documents, read_jsonl

TINY = 0.002


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, CorpusConfig(seed=0, size=TINY), workers=2)
    return out


def _all_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(corpus, tmp_path):
    build_corpus(tmp_path / "again", CorpusConfig(seed=0, size=TINY), workers=1)
    assert _all_bytes(tmp_path / "again") == _all_bytes(corpus)


def test_different_seed_different_bytes(corpus, tmp_path):
    build_corpus(tmp_path / "other", CorpusConfig(seed=1, size=TINY), workers=1)
    first, other = _all_bytes(corpus), _all_bytes(tmp_path / "other")
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first if name != "manifest.json")


def test_every_answer_is_in_its_context(corpus):
    for split in build.HELDOUT:
        items = read_jsonl(corpus / f"retrieval/items_{split}.jsonl")
        assert {i["task"] for i in items} == set(retrieval.TASKS)
        for item in items:
            assert item["prompt"].endswith("Answer:")
            context = item["prompt"].rsplit("Question:", 1)[0]
            if item["task"] == "kv":
                key = re.search(r"key (\d+)\?", item["prompt"]).group(1)
                assert f"key {key} : value {item['answer']}\n" in context
            elif item["task"] == "passkey":
                assert f"The pass key is {item['answer']}." in context
            else:  # every hop of the chain is a line of the context
                box = re.search(r"start at box (\d+)", item["prompt"]).group(1)
                for nxt in item["answer"].split(" then "):
                    assert f"box {box} points to box {nxt}.\n" in context
                    box = nxt


def test_training_documents_answer_right():
    rng = random.Random(3)
    filler = lambda r: stories.sentence(r, stories.random_attributes(r), "train")  # noqa: E731
    for _ in range(10):
        kv = retrieval.training_document("kv", 1024, rng, filler)
        values = dict(re.findall(r"key (\d+) : value (\d+)", kv))
        asked = re.findall(r"value of key (\d+)\? Answer: (\d+)", kv)
        assert len(asked) >= 4 and all(values[k] == v for k, v in asked)
        hops = retrieval.training_document("multihop", 1024, rng, filler)
        link = dict(re.findall(r"box (\d+) points to box (\d+)", hops))
        pattern = r"start at box (\d+) and follow (\w+) links?\. Answer: (\d+(?: then \d+)*)"
        questions = re.findall(pattern, hops)
        assert questions
        for start, words, answer in questions:
            path = [start]
            for _ in range({"one": 1, "two": 2, "three": 3}[words]):
                path.append(link[path[-1]])
            assert answer == " then ".join(path[1:])


def test_answers_are_unique_in_context():
    rng = random.Random(5)
    filler = lambda r: stories.sentence(r, stories.random_attributes(r), "train")  # noqa: E731
    for _ in range(20):
        item = retrieval.make_item("kv", 512, rng, filler)
        keys = re.findall(r"key (\d+) :", item.prompt)
        assert len(keys) == len(set(keys))
        sources = re.findall(r"box (\d+) points", retrieval.make_item("multihop", 512, rng, filler).prompt)
        assert len(sources) == len(set(sources))


def test_items_fit_their_token_budget(corpus):
    items = read_jsonl(corpus / "retrieval/items_test.jsonl")
    assert {i["length"] for i in items} == set(retrieval.EVAL_LENGTHS)
    for item in items:
        tokens = retrieval.estimate_tokens(f"{item['prompt']} {item['answer']}") + 1  # + BOS
        assert tokens == item["tokens_estimate"]
        assert 0.85 * item["length"] <= tokens <= item["length"], (item["task"], item["length"], tokens)


def test_estimate_matches_pre_tokenizer_pieces():
    tokenizers = pytest.importorskip("tokenizers")
    pre = tokenizers.pre_tokenizers.Sequence([tokenizers.pre_tokenizers.Digits(individual_digits=True),
                                              tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)])
    rng = random.Random(2)
    filler = lambda r: stories.sentence(r, stories.random_attributes(r), "train")  # noqa: E731
    for task in retrieval.TASKS:
        text = retrieval.make_item(task, 256, rng, filler).text
        assert retrieval.estimate_tokens(text) >= len(pre.pre_tokenize_str(text))


def _sentences(doc: str) -> list[str]:
    return [s.strip() for s in re.findall(r'[^.!]+[.!](?:" [^.]+\.)?', doc)]


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict | list | tuple):
        for value in obj.values() if isinstance(obj, dict) else obj:
            yield from _strings(value)


# Every word that can sit inside a <positive/negative> marker (pronouns fill {his} there),
# and the articles a/an that a sentiment word may change.
_SENTIMENT_WORDS = {"a", "an"} | set(_strings(stories.PRONOUNS)) | {
    word
    for text in _strings([stories.GENERAL, stories.TOPIC_LEXICON, stories.FRAMES, stories.OPENERS,
                          stories.CLOSERS])
    for marker in re.findall(r"<[^<>]*>", text) for word in re.findall(r"[A-Za-z']+", marker)}


def _differ_only_in_sentiment(pos: str, neg: str) -> bool:
    a, b = pos.rstrip(".").split(), neg.rstrip(".").split()
    changed = [w for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b).get_opcodes() if op != "equal"
               for w in a[i1:i2] + b[j1:j2]]
    return pos != neg and all(w.strip(",.!\"'") in _SENTIMENT_WORDS for w in changed)


def test_splits_are_disjoint(corpus):
    for part in ("stories", "retrieval"):
        docs = {split: set(read_documents(corpus / f"{part}/{split}.txt")) for split in stories.SPLITS}
        assert all(docs.values())
        assert not docs["train"] & docs["validation"] and not docs["train"] & docs["test"]
        assert not docs["validation"] & docs["test"]
    train_sentences = {s for doc in read_documents(corpus / "stories/train.txt") for s in _sentences(doc)}
    assert all(stories.split_of(s) == "train" for s in train_sentences)
    for split in build.HELDOUT:
        for row in read_jsonl(corpus / f"concepts/sentences_{split}.jsonl"):
            assert stories.split_of(row["text"]) == split and row["text"] not in train_sentences
        for doc in read_documents(corpus / f"stories/{split}.txt"):
            assert all(stories.split_of(s) == split for s in _sentences(doc))


def test_concept_sets_are_labelled_and_paired(corpus):
    rows = read_jsonl(corpus / "concepts/sentences_train.jsonl")
    assert set(rows[0]) == {"text", "sentiment", "topic", "tense"}
    assert {r["sentiment"] for r in rows} == set(stories.SENTIMENTS)
    assert {r["tense"] for r in rows} == set(stories.TENSES)
    for pair in read_jsonl(corpus / "concepts/sentiment_pairs_test.jsonl"):
        assert _differ_only_in_sentiment(pair["positive"], pair["negative"]), pair


def test_every_frame_pairs_on_sentiment_alone():
    hero = stories.Character("Maya", "she")
    for topic in stories.TOPICS:
        for frame in stories.FRAMES + stories.TOPIC_LEXICON[topic]["frames"]:
            pos = stories.render(frame, stories.Attributes("positive", topic, "past"), hero, random.Random(7))
            neg = stories.render(frame, stories.Attributes("negative", topic, "past"), hero, random.Random(7))
            assert _differ_only_in_sentiment(pos, neg), (pos, neg)


def test_tense_and_topic_are_expressed():
    hero = stories.Character("Tom", "he")
    frame = "{name} [goes|went] to the {place}."
    past, present = (stories.render(frame, stories.Attributes("positive", "travel", t), hero,
                                    random.Random(1)) for t in ("past", "present"))
    assert past.startswith("Tom went to the ") and present.startswith("Tom goes to the ")
    assert past.split("the ", 1)[1].rstrip(".") in stories.TOPIC_LEXICON["travel"]["place"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown retrieval task"):
        retrieval.make_item("nope", 256, random.Random(0), lambda r: "x.")
    with pytest.raises(ValueError, match="at least 128"):
        retrieval.make_item("kv", 64, random.Random(0), lambda r: "x.")
    with pytest.raises(ValueError, match="size must be positive"):
        build_corpus("unused", CorpusConfig(size=0))


def test_check_answer_is_exact_on_the_first_line():
    item = retrieval.RetrievalItem("multihop", 256, "Question: start at box 1 and follow two links. Answer:",
                                   "862 then 305", 0.5)
    assert item.text.endswith("Answer: 862 then 305")
    assert retrieval.check_answer(item, " 862 then 305\nQuestion: more")
    assert not retrieval.check_answer(item, " 862 then 30")
    assert not retrieval.check_answer(item, " 862 then 3055")
