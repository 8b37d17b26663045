"""On the demo model at 1024 tokens: every method at a full budget is dense attention, dense is the top
line of the accuracy-sparsity curve, and DeltaLLM's delta-coded scores lose the retrieval answers at 10%."""

import pytest

from workbench.models import bundled_models
from workbench.sparse.sweep import accuracy_curve, run_sweep

pytestmark = pytest.mark.skipif("demo" not in bundled_models(), reason="the demo model is not on disk")


def test_accuracy_sparsity_curve_at_1024_tokens(demo):
    sweep, _ = run_sweep(demo.hf, demo.tokenizer, budgets=(1.0, 0.1), lengths=(1024,), n_items=1,
                         decode_tokens=16, progress=False)
    full = sweep[sweep.budget == 1]
    assert (full.kl.abs() < 1e-5).all() and (full.top1_agreement == 1).all()
    curve = accuracy_curve(sweep)  # budget x method
    assert curve.loc[1.0].nunique() == 1 and curve.loc[1.0, "dense"] >= 2 / 3
    assert (curve.drop(columns="dense").le(curve.dense, axis=0)).all().all()  # dense is the top line
    assert curve.loc[0.1, "deltallm"] < curve.loc[0.1, "dense"]
    low = sweep[sweep.budget == 0.1].groupby("method").attended_fraction.mean()
    assert (low < 1).all()
