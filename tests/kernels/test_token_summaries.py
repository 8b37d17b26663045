"""Token summaries: the Triton kernel gives the reference's numbers exactly (norms to rounding), on odd sizes,
padded rows, prompts longer than one block, ties, inf and NaN; the reference is torch's own statistics."""

import pytest
import torch

from workbench_kernels.token_summaries import naive, summaries
from workbench_kernels.token_summaries import token_summaries as dispatch_summaries
from workbench_kernels.token_summaries.summaries import (BLOCK_ROWS, MAX_DIGIT_BITS, SIGMAS, digits,
                                                         token_summaries)

EXACT = ("max_abs", "max_dim", "median_abs", "prompt_median_abs", "prompt_max_abs", "prompt_n_nonfinite",
         "prompt_first_nonfinite")


def _inputs(gen, dtype, d, lengths, pad=3):
    """x [2, M, d] with `pad` unused rows before each prompt's rows, and the row list of the real ones."""
    rows, m = [], 0
    for n in lengths:
        m += pad
        rows += range(m, m + n)
        m += n
    x = (torch.randn(2, m, d, generator=gen) * torch.randn(2, m, 1, generator=gen).exp() * 3).to(dtype)
    return x, torch.tensor(rows)


def _check(x, rows, lengths, top_k, **kwargs):
    got, want = token_summaries(x, rows, lengths, top_k, **kwargs), naive.token_summaries(x, rows, lengths, top_k)
    assert sorted(got) == sorted(want)
    for key in EXACT:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, equal_nan=True, check_dtype=False, msg=key)
    torch.testing.assert_close(got["l2_norm"], want["l2_norm"], rtol=1e-5, atol=0, equal_nan=True)
    a = x[:, rows].float().abs()
    picked = a.gather(-1, got["topk_dims"].long())
    torch.testing.assert_close(picked, want["topk_values"].abs(), rtol=0, atol=0, equal_nan=True)  # ties in any order
    torch.testing.assert_close(got["topk_values"], x[:, rows].float().gather(-1, got["topk_dims"].long()),
                               rtol=0, atol=0, equal_nan=True)
    assert torch.equal(got["topk_dims"][..., 0], got["max_dim"])
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [37, 200])
def test_kernel_equals_reference(gen, dtype, d):
    lengths = [BLOCK_ROWS + 6, 1, 5]  # the first prompt spans two blocks
    x, rows = _inputs(gen, dtype, d, lengths)
    _check(x, rows, lengths, top_k=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("digit_bits", [1, 3, 8, MAX_DIGIT_BITS])
def test_prompt_median_by_the_digit_search_alone_is_exact_at_every_digit_width(gen, dtype, digit_bits):
    lengths = [BLOCK_ROWS + 6, 2]
    x, rows = _inputs(gen, dtype, 37, lengths)
    _check(x, rows, lengths, top_k=2, digit_bits=digit_bits, bracket_sigmas=None)


class _NoLaunch:
    """Stands in for a kernel: every launch does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def _disable_digit_search(monkeypatch):
    monkeypatch.setattr(summaries, "_histogram_kernel", _NoLaunch())
    monkeypatch.setattr(summaries, "_pick_kernel", _NoLaunch())


@pytest.fixture
def without_digit_search(monkeypatch):
    """Only the sampled bracket can find the prompt medians: a median it misses stays wrong."""
    _disable_digit_search(monkeypatch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sampled_bracket_alone_finds_the_median_of_prompts_larger_than_the_sample(gen, dtype, without_digit_search):
    """Prompts of more values than WHOLE (and than SAMPLE) get a bracket from a sample, and it holds the median
    with room to spare; the prompt of 2 tokens goes to the buffer whole (fp32) or is sampled too (bf16, fp16)."""
    lengths = [190, 2, 170]  # 190 x 97 = 18430 values > WHOLE
    assert 170 * 97 > summaries.WHOLE and summaries.WHOLE >= summaries.SAMPLE
    x, rows = _inputs(gen, dtype, 97, lengths)
    _check(x, rows, lengths, top_k=2)


def test_bracket_of_one_tied_value_is_the_median_however_many_it_holds(gen, without_digit_search):
    """Mostly zeros (a ReLU's output): the bracket is [0, 0] and holds far more values than its room."""
    lengths = [190, 170]
    x, rows = _inputs(gen, torch.float32, 97, lengths)
    x = x.clamp(min=0) * (torch.rand(x.shape, generator=gen) < 0.3)
    got = _check(x, rows, lengths, top_k=2)
    assert got["prompt_median_abs"].eq(0).all()


@pytest.mark.parametrize("change", ["a bracket of one value", "no room"])
def test_medians_the_bracket_misses_come_from_the_digit_search(gen, monkeypatch, change):
    """Some prompts sampled, one whole: a zero-width bracket (the sample's median) misses the prompt median, and a
    room of 64 values cannot hold a 4% bracket; the digit search finds those, the bracket the whole prompt's."""
    monkeypatch.setattr(summaries, "WHOLE", 64)  # prompts of more than 64 values are sampled
    sigmas = 0.0 if change == "a bracket of one value" else SIGMAS
    if change == "no room":
        monkeypatch.setattr(summaries, "ROOM", 10**6)
    lengths = [BLOCK_ROWS + 6, 1, 80]
    x, rows = _inputs(gen, torch.float32, 37, lengths)
    _check(x, rows, lengths, top_k=2, bracket_sigmas=sigmas)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sigmas", [0.0, 1e9])  # the window starts at the sample's median, or at its smallest value
def test_medians_the_window_misses_come_from_the_digit_search(gen, monkeypatch, dtype, sigmas):
    """bf16 and fp16 read the median off a histogram of the keys from the bracket's low end: a window from the
    smallest sampled value ends far below the median (values spread over many octaves), one from the sample's
    median misses those prompts whose median lies below it; the digit search finds them."""
    lengths = [190, 2, 170]
    x, rows = _inputs(gen, dtype, 97, lengths)
    _check(x, rows, lengths, top_k=2, bracket_sigmas=sigmas)
    _disable_digit_search(monkeypatch)
    window_only = token_summaries(x, rows, lengths, 2, bracket_sigmas=sigmas)["prompt_median_abs"]
    missed = window_only != naive.token_summaries(x, rows, lengths, 2)["prompt_median_abs"]
    assert missed.all() if sigmas else missed.any() and not missed.all()  # from the median: some found, some not


def test_window_pick_reads_the_median_off_the_histogram_only_where_the_counts_put_it_inside():
    """The pick on a made-up state: the median at the window's first key (low itself), the first value of its last
    bin, one past its last value (a miss), below its low end (a miss), and a prompt already found; misses stay as
    they were."""
    S, nbins, low = 5, 1 << summaries.WINDOW_BITS[torch.bfloat16], 0x3F800000  # low: the bits of 1.0
    state = torch.zeros(13, S, dtype=torch.int64)
    hist = torch.zeros(S, nbins, dtype=torch.int64)
    state[summaries._State.LOW] = low
    state[summaries._State.PREFIX] = 7  # a digit search's prefix, which a miss must leave
    hist[0, 0] = 1
    hist[1, 3], hist[1, nbins - 1] = 2, 3
    hist[2:, 4] = 5
    state[summaries._State.BELOW] = torch.tensor([10, 5, 5, 5, 5])
    state[summaries._State.RANK] = torch.tensor([10, 5 + 2, 5 + 5, 4, -1])
    summaries._window_pick_kernel[(S,)](hist, state, S, LOW=16, SHIFT=16, NBINS=nbins)
    assert state[summaries._State.RANK].tolist() == [-1, -1, 10, 4, -1]
    assert state[summaries._State.PREFIX].tolist() == [low >> 16, (low >> 16) + nbins - 1, 7, 7, 7]


def test_bracket_width_out_of_range_is_refused(gen):
    x, rows = _inputs(gen, torch.bfloat16, 16, [3])
    for bad in (-1.0, "5", float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="bracket_sigmas"):
            token_summaries(x, rows, [3], 2, bracket_sigmas=bad)


def test_sample_ranks_bracket_the_middle():
    assert summaries.sample_ranks(0.0) == (summaries.SAMPLE // 2 - 1, summaries.SAMPLE // 2)
    low, high = summaries.sample_ranks(SIGMAS)
    assert high - low == 2 * int(-(-SIGMAS * summaries.SAMPLE ** 0.5 // 2)) + 1
    assert summaries.sample_ranks(1e9) == (0, summaries.SAMPLE - 1)


def test_digit_width_out_of_range_is_refused(gen):
    x, rows = _inputs(gen, torch.bfloat16, 16, [3])
    for bad in (0, MAX_DIGIT_BITS + 1, 2.5, True):
        with pytest.raises(ValueError, match="digit_bits"):
            token_summaries(x, rows, [3], 2, digit_bits=bad)


def test_separate_layer_tensors_equal_the_stacked_layers(gen):
    """A model's layer outputs, each its own allocation of [B, T, D], are read in place: same numbers as stacked."""
    lengths = [BLOCK_ROWS + 3, 7]
    x, rows = _inputs(gen, torch.bfloat16, 40, lengths, pad=0)
    layers = [t.clone().view(1, -1, 40) for t in x]  # [1, M, D] each, separate allocations
    got, want = token_summaries(layers, rows, lengths, 4), token_summaries(x, rows, lengths, 4)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, equal_nan=True, msg=key)


@pytest.mark.parametrize("sigmas", [SIGMAS, None])  # the prompt medians from the bracket, or the digit search
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])  # bf16 rows count two keys a word
def test_ties_infinities_and_nan(gen, dtype, sigmas):
    lengths = [4, 3, 2]
    x, rows = _inputs(gen, dtype, 24, lengths)
    r = rows.tolist()
    x[0, r[0]] = 0.0  # an all-zero token: every dimension ties
    x[0, r[1], :12] = 5.0  # a tie at the maximum, and at the median
    x[1, r[2], 3] = -torch.inf
    x[1, r[5], 7] = torch.nan  # NaN in prompt 1 of layer 1: its max and median are NaN
    x[0, r[8], 9] = torch.inf  # (70000 in fp16 overflows to it)
    got = _check(x, rows, lengths, top_k=30, bracket_sigmas=sigmas)  # top_k above D is clipped
    assert got["topk_dims"].shape[-1] == 24
    assert got["prompt_n_nonfinite"].tolist() == [[0, 0, 1], [1, 1, 0]]
    assert got["prompt_first_nonfinite"].tolist() == [[-1, -1, 1], [2, 1, -1]]
    assert got["max_abs"][1, 5].isnan() and got["prompt_median_abs"][1, 1].isnan()


def test_digit_search_covers_each_dtype_s_bits():
    for dtype, low in ((torch.bfloat16, 16), (torch.float16, 13), (torch.float32, 0)):
        parts = digits(dtype)
        assert sum(w for _, w in parts) == 31 - low and parts[-1][0] == low and max(w for _, w in parts) <= 8
    assert [w for _, w in digits(torch.float32, MAX_DIGIT_BITS)] == [11, 10, 10]
    assert [w for _, w in digits(torch.float16, MAX_DIGIT_BITS)] == [9, 9]
    assert [w for _, w in digits(torch.bfloat16, MAX_DIGIT_BITS)] == [w for _, w in digits(torch.bfloat16)] == [8, 7]


def test_reference_prompt_summaries_cover_each_prompt_s_whole_hidden_state():
    x = torch.randn(3, 5 + 2, 16, generator=torch.Generator().manual_seed(0))  # a prompt of 5 tokens, then one of 2
    x[1, 3, 4], x[2, 6, 0] = torch.inf, torch.nan
    got = naive.token_summaries(x, torch.arange(7), [5, 2], top_k=4)
    for p, span in enumerate([slice(0, 5), slice(5, 7)]):
        a = x[:, span].abs().flatten(1)
        torch.testing.assert_close(got["prompt_median_abs"][:, p], a.median(-1).values, equal_nan=True)
        torch.testing.assert_close(got["prompt_max_abs"][:, p], a.max(-1).values, equal_nan=True)
    assert got["prompt_n_nonfinite"].tolist() == [[0, 0], [1, 0], [0, 1]]
    assert got["prompt_first_nonfinite"].tolist() == [[-1, -1], [3, -1], [-1, 1]]


@pytest.mark.parametrize("args, message", [
    ((torch.zeros(4, 8), torch.arange(2), [2], 1), "rank 3"),
    ((torch.zeros(1, 4, 8), torch.arange(2), [3], 1), "summing to 2"),
    ((torch.zeros(1, 4, 8), torch.arange(2), [2], 0), "top_k"),
    ((torch.zeros(1, 4, 8, dtype=torch.int32), torch.arange(2), [2], 1), "dtype"),
    (([], torch.arange(2), [2], 1), "non-empty list"),
    ((torch.zeros(0, 4, 8), torch.arange(2), [2], 1), "L >= 1"),
    (([torch.zeros(4, 8), torch.zeros(4, 9)], torch.arange(2), [2], 1), "every layer of 4 rows of 8"),
    (([torch.zeros(4, 8), torch.zeros(4, 8, dtype=torch.float16)], torch.arange(2), [2], 1), "every layer"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        token_summaries(*args)


def test_dispatcher_takes_a_list_of_layers_on_cpu(gen):
    """Off CUDA, kernels.token_summaries stacks the layer list and runs the reference: same as the stacked call."""
    lengths = [3, 4]
    x, rows = _inputs(gen, torch.float32, 16, lengths, pad=0)
    got, want = dispatch_summaries([t.view(1, -1, 16) for t in x], rows, lengths, 2), naive.token_summaries(
        x, rows, lengths, 2)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, equal_nan=True, msg=key)
    from_generator = dispatch_summaries((t.view(1, -1, 16) for t in x), rows, lengths, 2)
    assert from_generator["l2_norm"].shape == want["l2_norm"].shape  # every layer, the first one too
    with pytest.raises(ValueError, match="non-empty list"):
        dispatch_summaries([], rows, lengths, 2)


@pytest.mark.parametrize("case", ["mixed dtypes", "no prompts", "lengths short of the rows"])
def test_dispatcher_checks_arguments_on_cpu_as_on_cuda(gen, case):
    """The CPU reference gets the kernel's checks: mixed layer dtypes are refused, not promoted by a stack."""
    x, rows = _inputs(gen, torch.float32, 16, [3, 4], pad=0)
    layers, lengths = list(x), [3, 4]
    if case == "mixed dtypes":
        layers[1] = layers[1].half()
    elif case == "no prompts":
        rows, lengths = rows[:0], []
    else:
        lengths = [3, 3]
    with pytest.raises(ValueError, match="x: expected every layer" if case == "mixed dtypes" else "lengths"):
        dispatch_summaries(layers, rows, lengths, 2)
