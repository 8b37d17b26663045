"""Summaries: the histogram selection used on CUDA is exact, and the per-prompt numbers are torch's own."""

import pytest
import torch

from workbench.summaries import kth_smallest, summarize


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("width", [1, 2, 7, 1000])
def test_kth_smallest_equals_kthvalue(dtype, width):
    torch.manual_seed(0)
    a = (torch.randn(6, width) * torch.randn(6, 1).exp() * 30).to(dtype).abs()  # fp16 overflows to inf in places
    a[0, 0] = torch.inf
    if width > 3:
        a[1, : width // 2] = 0.0  # ties at zero
        a[2] = a[2, 0]  # a constant row
    for k in sorted({0, (width - 1) // 2, width - 1}):
        assert torch.equal(kth_smallest(a, k), a.kthvalue(k + 1, dim=-1).values)


def test_kth_smallest_keeps_its_bins_for_rows_holding_nan():
    a = torch.tensor([[1.0, torch.nan, 3.0], [torch.nan, torch.nan, torch.nan]]).abs()
    assert kth_smallest(a, 1).shape == (2,)  # any value: the caller puts NaN there


def test_prompt_summaries_cover_each_prompt_s_whole_hidden_state():
    torch.manual_seed(0)
    x = torch.randn(3, 5 + 2, 16)  # [L, N, D]: a prompt of 5 tokens, then one of 2
    x[1, 3, 4], x[2, 6, 0] = torch.inf, torch.nan
    got = summarize(x, [5, 2], top_k=4)
    for p, rows in enumerate([slice(0, 5), slice(5, 7)]):
        a = x[:, rows].abs().flatten(1)
        torch.testing.assert_close(got["prompt_median_abs"][:, p], a.median(-1).values, equal_nan=True)
        torch.testing.assert_close(got["prompt_max_abs"][:, p], a.max(-1).values, equal_nan=True)
    assert got["prompt_n_nonfinite"].tolist() == [[0, 0], [1, 0], [0, 1]]
    assert got["prompt_first_nonfinite"].tolist() == [[-1, -1], [3, -1], [-1, 1]]
    assert torch.equal(got["max_dim"], x.abs().argmax(-1)) and got["topk_dims"].shape == (3, 7, 4)
