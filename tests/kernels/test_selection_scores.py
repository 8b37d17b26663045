"""selection_scores (Triton, interpreted on CPU) against naive.py; top-k and page helpers."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.checks import LOW_PRECISION, assert_close_fp32, assert_close_lowp
from workbench_kernels.selection_scores import naive
from workbench_kernels.selection_scores.one_pass import held_blocks
from workbench_kernels.selection_scores.scores import selection_scores
from workbench_kernels.selection_scores.select import page_scores, pages_to_tokens, select_topk
from workbench_kernels.selection_scores.topk import TopkConfig, page_topk

# the one pass (interpreted as its two launches), or two passes with a pass-2 program a KV head (atomics across
# programs) or all of them (a loop)
PLANS = [{"one_pass": True}, {"one_pass": False, "heads_per_program": 1}, {"one_pass": False, "heads_per_program": 3}]


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
@pytest.mark.parametrize("nq", [1, 3])
@pytest.mark.parametrize("per_kv_head", [False, True])
@pytest.mark.parametrize("plan", PLANS)
def test_matches_naive(dtype, nq, per_kv_head, plan, gen):
    b, hq, hkv, n, d = 2, 6, 3, 37, 24
    q = torch.randn(b, hq, nq, d, generator=gen) * 2  # sharper softmax: scores far from uniform
    k = torch.randn(b, hkv, n, d, generator=gen)
    if nq == 1:
        q = q[:, :, 0]
    ref = naive.selection_scores(q, k, per_kv_head=per_kv_head)
    out = selection_scores(q.to(dtype), k.to(dtype), per_kv_head=per_kv_head, split_size=16, **plan)
    assert out.shape == ((b, hkv, n) if per_kv_head else (b, n)) and out.dtype == torch.float32
    if dtype == torch.float32:
        assert_close_fp32(out, ref)
    else:
        assert_close_lowp(out, ref, naive.selection_scores(q.to(dtype), k.to(dtype), per_kv_head=per_kv_head))


def test_one_split_and_gqa_groups_of_four(gen):
    q, k = torch.randn(1, 8, 2, 40, generator=gen), torch.randn(1, 2, 23, 40, generator=gen)
    assert_close_fp32(selection_scores(q, k, scale=0.2), naive.selection_scores(q, k, scale=0.2))


def test_scores_are_probabilities(gen):
    """One head, one query: the scores are that head's softmax, summing to 1."""
    q, k = torch.randn(1, 1, 16, generator=gen), torch.randn(1, 1, 19, 16, generator=gen)
    scores = selection_scores(q, k)
    torch.testing.assert_close(scores.sum(), torch.tensor(1.0))
    assert_close_fp32(scores[0], torch.softmax(k[0, 0] @ q[0, 0] / 4.0, dim=0))


@pytest.mark.parametrize("nq", [1, 3])
@pytest.mark.parametrize("per_kv_head", [False, True])
@pytest.mark.parametrize("plan", PLANS)
def test_page_sums_in_the_kernel(nq, per_kv_head, plan, gen):
    """page_size: the kernel sums pages itself, bit for bit what page_scores makes of the token scores; the one
    pass here holds two key blocks a program, the last split holding 22 keys."""
    q, k = torch.randn(2, 6, nq, 24, generator=gen) * 2, torch.randn(2, 3, 150, 24, generator=gen)
    kw = {"per_kv_head": per_kv_head, "split_size": 128 if plan["one_pass"] else 64, **plan}
    tokens = selection_scores(q, k, **kw)
    assert_close_fp32(tokens, naive.selection_scores(q, k, per_kv_head=per_kv_head))
    for page in (1, 4, 16, 64):
        assert torch.equal(selection_scores(q, k, page_size=page, **kw), page_scores(tokens, page)), page


def test_page_topk_takes_kernel_page_scores(gen):
    """page_size=1 ranks page scores as they are: the pages the token path chooses."""
    q, k = torch.randn(2, 4, 16, generator=gen) * 3, torch.randn(2, 2, 203, 16, generator=gen)
    pages = selection_scores(q, k, split_size=64, page_size=16)
    out = page_topk(pages, 6, page_size=1, recent=2, position_bias=1e-7)
    assert torch.equal(out, page_topk(selection_scores(q, k, split_size=64), 6, page_size=16, recent=2,
                                      position_bias=1e-7))


def test_select_topk_rules():
    scores = torch.tensor([[5.0, 1.0, 4.0, float("nan"), 3.0, 0.0, 2.0]])
    assert select_topk(scores, 2).tolist() == [[0, 2]]
    assert select_topk(scores, 3, recent=2).tolist() == [[0, 5, 6]]  # last 2 forced, then the best
    assert select_topk(scores, 3, sink=1, recent=1).tolist() == [[0, 2, 6]]
    assert select_topk(scores, 9).tolist() == [[0, 1, 2, 3, 4, 5, 6, -1, -1]]  # K > N: all, then padding
    assert select_topk(torch.ones(1, 4), 2, position_bias=1e-3).tolist() == [[0, 1]]
    assert select_topk(scores, 2).dtype == torch.int32
    ties = torch.tensor([[1.0, 2.0, 1.0, 2.0, -0.0, 0.0, 1.0]])
    assert select_topk(ties, 3).tolist() == [[0, 1, 3]]  # equal scores: the lower index wins
    assert select_topk(ties, 6).tolist() == [[0, 1, 2, 3, 4, 6]]  # -0.0 ties with +0.0


def test_pages():
    scores = torch.arange(10.0).view(1, 10)
    assert page_scores(scores, 4).tolist() == [[6.0, 22.0, 17.0]]
    fine = torch.tensor([[1.0, 2.0**-24, 2.0**-24, 0.0]])  # fp32 left to right would round to 1.0
    assert page_scores(fine, 4).item() == 1.0 + 2.0**-23
    tokens = pages_to_tokens(torch.tensor([[0, 2, -1]], dtype=torch.int32), page_size=4, n=10)
    assert tokens.tolist() == [[0, 1, 2, 3, 8, 9, -1, -1, -1, -1, -1, -1]]


def test_same_selection_as_reference(gen):
    """The CPU reference and the kernel choose the same pages (what the sparse emulation relies on)."""
    q, k = torch.randn(2, 4, 16, generator=gen) * 3, torch.randn(2, 2, 61, 16, generator=gen)
    picks = [select_topk(page_scores(s, 4), 5, recent=1)
             for s in (naive.selection_scores(q, k), selection_scores(q, k, split_size=16))]
    assert torch.equal(*picks)


def test_rejects_bad_arguments():
    q, k = torch.zeros(1, 4, 8), torch.zeros(1, 2, 5, 8)
    for args, words in [
        ((q[0], k), "rank 3"),
        ((torch.zeros(1, 3, 8), k), "multiple of KV heads"),
        ((q, k.half()), "dtype"),
        ((q, k[..., :4]), "shape"),
        ((torch.zeros(1, 4, 6, 8), k), "Q <= N"),
    ]:
        with pytest.raises(ValueError, match=words):
            selection_scores(*args)
    for page in (0, 3, 128, 16.0):
        with pytest.raises(ValueError, match="page_size: expected a power of two"):
            selection_scores(q, k, page_size=page)
    with pytest.raises(ValueError, match="heads_per_program"):
        selection_scores(q, k, heads_per_program=3)
    with pytest.raises(ValueError, match="one_pass: a program would hold more than"):
        selection_scores(torch.zeros(1, 4, 16, 8), torch.zeros(1, 2, 2000, 8), split_size=2048, one_pass=True)


def test_one_pass_fits():
    """The one pass holds at most HELD_LIMIT scores a program and, on a GPU, a head's splits all run at once."""
    assert held_blocks(8192, rows=4, block_n=64, split_size=None, sms=132) == 4  # 256 keys, 32 splits a head
    assert held_blocks(32768, rows=4, block_n=64, split_size=None, sms=132) == 8  # 512 keys, 64 splits
    assert held_blocks(131072, rows=4, block_n=64, split_size=None, sms=132) == 16  # 1024 keys, 128 splits
    assert held_blocks(131072, rows=4, block_n=64, split_size=None, sms=100) == 32  # 2048 keys: 64 splits <= 100
    assert held_blocks(131072, rows=4, block_n=64, split_size=512, sms=132) is None  # 256 splits > 132 SMs
    assert held_blocks(131072, rows=4, block_n=64, split_size=512, sms=None) == 8  # the interpreter: no barrier
    assert held_blocks(300_000, rows=4, block_n=64, split_size=None, sms=132) is None  # 4096 keys: 16384 scores
    assert held_blocks(32768, rows=16, block_n=64, split_size=None, sms=132) == 8  # 4 steps: 16 rows, 512 keys
    assert held_blocks(131072, rows=16, block_n=64, split_size=None, sms=132) is None  # 1024 keys: 16384 scores


def test_one_pass_falls_back_to_two(monkeypatch, gen):
    """Where the one pass does not fit, or a two-pass setting is given, the default plan is the two passes."""
    from workbench_kernels.selection_scores import scores

    def refuse(*args, **kwargs):
        raise AssertionError("the one pass was launched")

    monkeypatch.setattr(scores, "one_pass_scores", refuse)
    q, k = torch.randn(1, 4, 16, 8, generator=gen), torch.randn(1, 2, 600, 8, generator=gen)
    assert_close_fp32(selection_scores(q, k, split_size=1024), naive.selection_scores(q, k))  # 32 x 1024 scores
    assert_close_fp32(selection_scores(q[:, :, 0], k, heads_per_program=1), naive.selection_scores(q[:, :, 0], k))
    with pytest.raises(AssertionError, match="launched"):
        selection_scores(q[:, :, 0], k)
    with pytest.raises(ValueError, match="heads_per_program: a setting of the two passes"):
        selection_scores(q[:, :, 0], k, heads_per_program=1, one_pass=True)


@pytest.mark.parametrize("per_kv_head", [False, True])
def test_one_pass_groups_of_three(per_kv_head, gen):
    """Three query heads a KV head (padded to four rows a step) and two steps, several splits of two blocks."""
    q, k = torch.randn(2, 9, 2, 20, generator=gen) * 2, torch.randn(2, 3, 333, 20, generator=gen)
    out = selection_scores(q, k, per_kv_head=per_kv_head, split_size=128, one_pass=True, page_size=16)
    assert torch.equal(out, page_scores(selection_scores(q, k, per_kv_head=per_kv_head, split_size=128,
                                                         one_pass=True), 16))
    assert_close_fp32(out, page_scores(naive.selection_scores(q, k, per_kv_head=per_kv_head), 16))


def reference_pages(scores, k, page_size, **kw):
    return select_topk(page_scores(scores, page_size), k, **kw)


@pytest.mark.parametrize(("shape", "page_size", "k", "kw"), [
    ((3, 1000), 16, 20, {"recent": 8}),  # last page partial
    ((2, 3, 77), 4, 9, {"recent": 2, "sink": 1, "position_bias": 1e-3}),
    ((4, 2001), 16, 32, {"recent": 4, "position_bias": 1e-7}),  # DELTA's bias, as small as the scores
    ((2, 37), 1, 40, {}),  # k > pages: all of them, then -1
    ((1, 50), 3, 30, {"recent": 20}),
    ((5, 300), 16, 3, {"recent": 5}),  # more forced pages than the budget: the lowest of them
    ((2, 9), 16, 0, {}),
])
def test_page_topk_matches_torch_path(shape, page_size, k, kw, gen):
    scores = torch.rand(*shape, generator=gen) ** 4 / shape[-1]  # probability-like: small, skewed
    config = TopkConfig(chunk=64, radix=(1, 2, 4, 8)[k % 4])
    out = page_topk(scores, k, page_size=page_size, config=config, **kw)
    assert out.dtype == torch.int32 and out.shape == (*shape[:-1], k)
    assert torch.equal(out, reference_pages(scores, k, page_size, **kw))


def test_page_topk_ties_and_special_values(gen):
    """Dyadic scores (page sums exact in any order) with many ties, NaN, +-inf and -0.0."""
    scores = torch.randint(-3, 4, (4, 16 * 45 + 5), generator=gen).float() / 8
    scores[0, :32] = float("nan")
    scores[1, 40:48] = float("inf")
    scores[2, 100:200] = float("-inf")
    scores[3, :64] = -0.0
    cases = [(11, {"recent": 2}), (30, {"sink": 3, "position_bias": 2.0**-10}), (46, {}), (60, {"recent": 1})]
    for (k, kw), radix in zip(cases, (1, 2, 4, 8)):
        out = page_topk(scores, k, page_size=16, config=TopkConfig(radix=radix), **kw)
        assert torch.equal(out, reference_pages(scores, k, 16, **kw)), (k, kw)
    zeros = torch.zeros(1, 64).index_fill_(1, torch.arange(0, 64, 2), -0.0)
    for radix in (2, 8):
        assert page_topk(zeros, 3, page_size=1, config=TopkConfig(radix=radix)).tolist() == [[0, 1, 2]]


def test_page_topk_on_kernel_scores_equals_reference_selection(gen):
    """Scores from the Triton kernel, pages from page_topk: what the fp32 reference path chooses."""
    q, k = torch.randn(2, 4, 16, generator=gen) * 3, torch.randn(2, 2, 203, 16, generator=gen)
    ref = reference_pages(naive.selection_scores(q, k), 6, 16, recent=2, position_bias=1e-7)
    out = page_topk(selection_scores(q, k, split_size=64), 6, page_size=16, recent=2, position_bias=1e-7)
    assert torch.equal(out, ref)


def test_page_topk_rejects_bad_arguments():
    s = torch.zeros(2, 40)
    for args, kw, words in [
        ((s.double(), 3), {}, "float32"),
        ((s, 3), {"page_size": 0}, "page_size"),
        ((s, -1), {}, "k, recent, sink"),
        ((s, 3), {"recent": -2}, "k, recent, sink"),
        ((torch.zeros(()), 3), {}, r"\[\.\.\., N\]"),
        ((torch.zeros(1, 16 * 65537), 3), {}, "pages per row"),
    ]:
        with pytest.raises(ValueError, match=words):
            page_topk(*args, **kw)
    with pytest.raises(ValueError, match="radix"):
        TopkConfig(radix=3)


def test_bench_sweep_runs_on_cpu(monkeypatch, no_gpu_timing):
    """The launch sweep's code path, shrunk (the GPU run is one lent call): every setting timed, same pages."""
    from workbench_kernels.selection_scores import bench

    shrink = {"HQ": 4, "HKV": 2, "D": 16, "PAGE": 4, "RECENT": 1, "SIZES": {"batches": (1,), "lengths": (70,)},
              "QUICK": {"batches": (1,), "lengths": (40,)}, "CHECK": {"b": 1, "n": 40},
              "SCORE_SWEEP": ({"one_pass": False, "split_size": 16, "warps": 4},
                              {"one_pass": True, "split_size": None, "warps": None},
                              {"one_pass": True, "split_size": 16384, "warps": None}),  # 32768 scores: no fit
              "TOPK_SWEEP": (TopkConfig(), TopkConfig(num_warps=1, radix=1))}
    for attr, value in shrink.items():
        monkeypatch.setattr(bench, attr, value)

    parts, config = bench.sweep(bandwidth=1e12, device="cpu")
    text = "\n".join(parts)
    assert config in bench.TOPK_SWEEP and text.count("\n| 70 |") == 5 and text.count("does not fit") == 1
    assert "failed" not in text and "differ" not in text and "nan" not in text.lower()
    report = "\n".join(bench.run(quick=True, bandwidth=1e12, device="cpu").sections)
    assert report.count("| True |") == 3 and "False" not in report
