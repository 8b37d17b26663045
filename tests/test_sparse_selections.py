"""Selections equal brute-force references (ties broken the same way), and a planted needle is found."""

import math

import pytest
import torch
import transformers as T

from workbench.sparse import sparse_attention
from workbench.sparse.anchor import AnchorConfig
from workbench.sparse.accuracy import cache_argument
from workbench.sparse.delta import DeltaConfig
from workbench.sparse.deltallm import DeltaLLMConfig
from workbench.sparse.dense import prepare
from workbench.sparse.registry import SparseSession
from workbench.sparse.selections import selection_matrix

NEEDLE_TOKEN = 30


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: on a shared 2-core machine, torch's thread pool costs far more than it saves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _session(config, n_layers=3, recall=False):
    return SparseSession(None, [config] * n_layers, recall, original="eager")


def _brute_delta(probs, page, budget_pages, recent, bias):
    """Python loops: max over heads, sum per page, recent pages forced, rank by (score - bias*page) then index."""
    hq, n = len(probs), len(probs[0])
    token = [max(probs[h][j] for h in range(hq)) for j in range(n)]
    pages = [sum(token[p * page:(p + 1) * page]) for p in range(-(-n // page))]
    forced = set(range(max(0, len(pages) - recent), len(pages)))
    ranked = sorted(range(len(pages)), key=lambda p: (p not in forced, -(pages[p] - bias * p), p))
    chosen = sorted(ranked[:budget_pages])
    return [t for p in chosen for t in range(p * page, min(n, (p + 1) * page))]


def test_delta_selection_equals_brute_force_with_ties():
    torch.manual_seed(0)
    n, page = 45, 4
    key = torch.randn(1, 2, n, 8)
    key[:, :, 8:16] = key[:, :, 0:8]  # pages 2-3 copy pages 0-1: tied page scores
    query = torch.randn(1, 4, 1, 8)
    config = DeltaConfig(budget=4 * page, page_size=page, recent_pages=1)
    session = _session(config)
    call = prepare(0, 1, query, key, key, None, None)
    config.apply(call, session)  # layer 0 selects
    probs = torch.softmax(call.scores[0, :, 0], -1).tolist()
    expected = _brute_delta(probs, page, 4, 1, config.position_bias)
    got = session.state["delta"][0, 0]
    assert got[got >= 0].tolist() == expected


def test_delta_selection_per_kv_head_equals_brute_force():
    torch.manual_seed(1)
    key, query = torch.randn(1, 2, 37, 8), torch.randn(1, 6, 1, 8)
    config = DeltaConfig(budget=0.3, page_size=4, per_kv_head=True)
    session = _session(config)
    call = prepare(0, 1, query, key, key, None, None)
    config.apply(call, session)
    probs = torch.softmax(call.scores[0, :, 0], -1)
    pages = config.budget_pages(37)
    for group in range(2):
        expected = _brute_delta(probs[group * 3:(group + 1) * 3].tolist(), 4, pages, config.recent_for(pages), 1e-7)
        got = session.state["delta"][0, group]
        assert got[got >= 0].tolist() == expected


def _brute_stripes(q, k, config, scale):
    """Python loops over regions, sub-blocks and keys: anchors, averaged scores, theta test, budget cap."""
    t, r_size, bs = q.shape[2], config.region, config.block_size
    kk = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = (q @ kk.transpose(-1, -2))[0] * scale  # [H, T, T]
    out = {}
    for h in range(q.shape[1]):
        for r in range(-(-t // r_size)):
            local = max(r - config.local_blocks + 1, 0) * r_size
            init_end = config.init_blocks * r_size
            cands = list(range(init_end, local))
            margins = {}
            for start in range(r * r_size, min(t, (r + 1) * r_size), bs):
                rows = range(start, min(t, start + bs))
                anchors = [max(s[h, i, j].item() for j in range(i + 1) if j < init_end or j >= local) for i in rows]
                a_mean = sum(anchors) / len(anchors)
                qm = q[0, h, start:start + len(rows)].mean(0)
                for j in cands:
                    m = (qm @ kk[0, h, j]).item() * scale - a_mean
                    margins[j] = max(margins.get(j, -math.inf), m)
            hits = [j for j in cands if margins[j] >= -config.theta]
            cap = math.ceil(config.budget * len(cands))
            out[h, r] = sorted(sorted(hits, key=lambda j: (-margins[j], j))[:cap])
    return out


@pytest.mark.parametrize("budget", [1.0, 0.3])
def test_anchor_stripes_equal_brute_force(budget):
    torch.manual_seed(2)
    q, k = torch.randn(1, 4, 53, 8), torch.randn(1, 2, 53, 8)
    config = AnchorConfig(theta=0.8, block_size=4, step=2, budget=budget)
    chosen, _ = config.stripes(q, k, 8**-0.5)
    expected = _brute_stripes(q, k, config, 8**-0.5)
    for (h, r), cols in expected.items():
        assert chosen[0, h, r].nonzero().flatten().tolist() == cols, (h, r)


def test_deltallm_recomputation_equals_a_scalar_recurrence():
    torch.manual_seed(3)
    q, k = torch.randn(1, 2, 30, 8), torch.randn(1, 2, 30, 8)
    config = DeltaLLMConfig(window=5, threshold=0.4)
    session = _session(config, recall=True)
    call = prepare(0, 0, q, k, k, None, None)
    config.apply(call, session)
    s = call.scores[0]
    fresh = 0
    for h in range(2):
        ref = {}
        for i in range(30):
            for j in range(i + 1):
                if i - j < 5 or abs(s[h, i, j].item() - ref[j]) >= 0.4:
                    ref[j] = s[h, i, j].item()
                    fresh += 1
    kept = session.log.kept["prefill"]
    assert kept == fresh
    assert 0 < kept < 2 * 30 * 31 / 2


@pytest.fixture
def needle_model(tiny_dir):
    """GPT-2 whose every head attends (almost) only to one token: the residual stream is the token
    embedding alone, queries are a constant vector, and keys read one dimension only that token has."""
    hf = T.AutoModelForCausalLM.from_pretrained(tiny_dir("gpt2"), attn_implementation="eager").eval()
    d = hf.config.n_embd
    with torch.no_grad():
        hf.transformer.wpe.weight.zero_()
        hf.transformer.wte.weight[:, 0] = 0.0
        hf.transformer.wte.weight[NEEDLE_TOKEN] = 0.0
        hf.transformer.wte.weight[NEEDLE_TOKEN, 0] = 10.0
        for block in hf.transformer.h:
            block.attn.c_attn.weight[:, :2 * d] = 0.0
            block.attn.c_attn.bias[:d] = 1.0  # query: constant
            block.attn.c_attn.bias[d:2 * d] = 0.0
            block.attn.c_attn.weight[0, d:2 * d] = 20.0  # key: 20 * dim 0 of the normalised input
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
    return hf


def _needle_ids(n, at):
    ids = torch.randint(7, 60, (1, n), generator=torch.Generator().manual_seed(6))
    ids[ids == NEEDLE_TOKEN] = 7
    ids[0, at] = NEEDLE_TOKEN
    return ids


def test_delta_selects_the_needle(needle_model):
    ids, page = _needle_ids(64, 13), 4
    config = DeltaConfig(budget=2 * page, page_size=page, recent_pages=1)
    with torch.no_grad(), sparse_attention(needle_model, config, recall=True) as session:
        cache = T.DynamicCache(config=needle_model.config)
        needle_model(ids[:, :63], **{cache_argument(needle_model): cache})
        needle_model(ids[:, 63:], **{cache_argument(needle_model): cache})
    rows = session.log.frame().query("phase == 'decode'")
    assert not rows.empty
    for indices in rows.indices:
        assert indices == list(range(12, 16)) + list(range(60, 64))  # the needle's page + the recent page
    assert rows.recall.min() > 0.99
    picture = selection_matrix(session.log.frame(), 0, phase="decode")  # token x step, scores of layer 0
    assert list(picture.columns) == list(range(12, 16)) + list(range(60, 64))
    assert picture.loc[1].idxmax() == 13


def test_anchor_selects_the_needle(needle_model):
    ids, at = _needle_ids(64, 29), 29
    config = AnchorConfig(theta=1.0, block_size=4, step=2, budget=0.02)  # one stripe per region
    with torch.no_grad(), sparse_attention(needle_model, config, recall=True) as session:
        needle_model(ids)
    rows = session.log.frame()
    later = rows[rows.query_block * config.region > at + config.region]  # regions where the needle is a candidate
    assert not later.empty
    assert all(indices == [at] for indices in later.indices)
    assert later.recall.min() > 0.99
    stripes = selection_matrix(session.log.frame(), 0, by="query_block", head=1)  # region x key stripe mask
    after = stripes[stripes.index * config.region > at + config.region]
    assert (after[at] > 0).all() and (after.drop(columns=at) == 0).all().all()
