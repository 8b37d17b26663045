"""On the demo model: massive-activation detection and dynamics run end to end on the shipped checkpoints,
and the report says plainly that the model has none by Sun et al.'s criterion."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import workbench as wb
from workbench.config import MassiveConfig
from workbench.demo_model import MASSIVE_PROMPTS
from workbench.massive.detection import detect_prompts
from workbench.massive.statistics import pooled_statistics
from workbench.models import bundled_models

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "analyses"))

import massive_dynamics  # noqa: E402

pytestmark = pytest.mark.skipif("demo" not in bundled_models(), reason="the demo model is not on disk")


def test_detection_states_that_the_demo_model_has_no_massive_activations(demo, db_path):
    store = wb.Store(db_path)
    detection = detect_prompts(demo, list(MASSIVE_PROMPTS), store, MassiveConfig(), progress=False)
    analysis = store.analysis(detection)
    assert not analysis["summary"]["massive_found"]
    summary = analysis["summary"]
    assert summary["statement"].startswith("No massive activations by this criterion: the strongest against")
    assert 100 < summary["max_abs"] and summary["max_ratio"] < 1000  # large, not massive


def test_the_cards_training_table_is_the_pooled_statistics_of_the_shipped_weights(demo):
    """The card's final-checkpoint rows were measured by `pooled_statistics`, the function the app offers for
    the pooled rule: measured again on the shipped model they agree."""
    table = pd.read_csv(bundled_models()["demo"] / "massive_by_checkpoint.csv")
    final = table[table.step == table.step.max()].reset_index(drop=True)
    again = pd.DataFrame(pooled_statistics(demo, MASSIVE_PROMPTS))
    pd.testing.assert_frame_equal(again[["layer", "top_position", "top_dim", "top_token"]],
                                  final[["layer", "top_position", "top_dim", "top_token"]])
    for metric in ("top1_pooled", "median_pooled", "ratio_pooled"):
        np.testing.assert_allclose(again[metric], final[metric], rtol=1e-3)


def test_dynamics_script_records_every_shipped_checkpoint_and_fits_the_training_table(db_path, capsys):
    assert massive_dynamics.main(["--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    store = wb.Store(db_path)
    recorded, training = store.query("SELECT analysis_id FROM analyses WHERE kind = 'massive-dynamics' "
                                     "ORDER BY analysis_id").analysis_id
    steps = store.query("SELECT DISTINCT step FROM massive_dynamics WHERE analysis_id = ? ORDER BY step",
                        [recorded]).step.tolist()
    assert steps == [512, 2048, 9948]  # the two shipped checkpoints, then the final model
    table = out.split("the median:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[-1] for line in table[1:]] == ["False"] * 3  # nothing massive at any checkpoint
    fits = store.dynamics_fits(training, "ratio_pooled")
    assert (fits.n_points == 11).all() and fits.r2.max() > 0.95
    assert "fitting needs at least 6 checkpoints, got 3" in out  # three recorded checkpoints are too few
    # the last checkpoint's pooled figures are the model card's (its training-time table, same prompts)
    card = pd.read_csv(bundled_models()["demo"] / "massive_by_checkpoint.csv").query("step == 9948")
    last = store.massive_dynamics(recorded).query("step == 9948").pivot(index="layer", columns="metric",
                                                                          values="value")
    for metric in ("top1_pooled", "median_pooled", "ratio_pooled"):
        np.testing.assert_allclose(last[metric].to_numpy(), card.sort_values("layer")[metric].to_numpy(), rtol=5e-3)
