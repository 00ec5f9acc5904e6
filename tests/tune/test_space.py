"""Search spaces, trial configs and the ranking score: plain Python, no Ray."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from selfpose3d.config import ConfigError, load_config
from selfpose3d.sweep_config import ranking_score
from tune.space import active_params, load_space, paper_point, resolve_space_path
from tune.sweep import pick_validation, trial_config, trials_csv

REPO = Path(__file__).resolve().parents[2]


def test_the_paper_space_holds_the_four_hyperparameters_and_the_papers_values():
    base = load_config(REPO / "configs" / "smoke.yaml")
    params = load_space("paper", base)
    assert paper_point(params) == {
        "train.l1_weight": 0.01, "train.attention_weight": 0.1,
        "model.attention_depth": 18, "train.hard_label_threshold": 0.7,
    }  # fmt: skip
    by_key = {p.key: p for p in params}
    assert (by_key["train.l1_weight"].low, by_key["train.l1_weight"].high) == (1e-4, 1.0)
    assert by_key["model.attention_depth"].values == (18, 34, 50)


def test_attention_keys_are_dropped_without_the_attention_net(caplog):
    cpu = load_config(REPO / "configs" / "cpu.yaml")
    assert cpu.model.use_attention is False
    kept = active_params(load_space("paper", cpu), cpu)
    assert [p.key for p in kept] == ["train.l1_weight", "train.hard_label_threshold"]
    assert "train.attention_weight" in caplog.text


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.l1_wieght": {"distribution": "uniform", "low": 0, "high": 1}},
         "unknown config key 'train.l1_wieght'"),
        ({"train.l1_weight": {"distribution": "normal", "low": 0, "high": 1}},
         "distribution one of"),
        ({"train.l1_weight": {"distribution": "loguniform", "low": 0, "high": 1}},
         "loguniform needs low > 0"),
        ({"train.l1_weight": {"distribution": "uniform", "low": 1, "high": 0}}, "low < high"),
        ({"train.hard_label_threshold": {"distribution": "uniform", "low": 0.5, "high": 2}},
         "hard_label_threshold must be in (0, 1]"),
        ({"model.attention_depth": {"distribution": "choice", "values": [18, 101]}},
         "expected one of [18, 34, 50]"),
        ({"train.l1_weight": {"distribution": "uniform", "low": 0.1, "high": 1, "paper": 5}},
         "outside the space"),
    ],
)  # fmt: skip
def test_a_bad_space_is_refused_with_its_key(space, message):
    with pytest.raises(ConfigError) as e:
        load_space(space, load_config(REPO / "configs" / "smoke.yaml"))
    assert message in str(e.value)


def test_an_unknown_space_name_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match=r"\['paper'\]"):
        resolve_space_path("papper")


def test_a_trial_is_the_base_config_with_the_budget_then_the_point():
    base = load_config(REPO / "configs" / "smoke.yaml",
                       ["sweep.trial_overrides=[train.pose.epochs=3, train.l1_weight=0.5]",
                        "sweep.validation_max_frames=7"])  # fmt: skip
    cfg = trial_config(base, {"train.l1_weight": 0.02, "model.attention_depth": 34})
    assert cfg.train.pose.epochs == 3
    assert cfg.train.l1_weight == 0.02  # the point wins over the budget
    assert cfg.model.attention_depth == 34
    assert cfg.train.eval_max_frames == 7
    # Tune requires the metric in every report: only epoch-end checkpoints are reported.
    assert cfg.train.checkpoint_every == 0 and cfg.train.ray_report_every > 10**6
    assert base.train.l1_weight != 0.02  # the base is not changed


def test_the_ranking_follows_the_metric_and_breaks_ties_by_mpjpe():
    a = ranking_score({"ap50": 40.0, "mpjpe": 80.0}, "ap50", "max", "mpjpe")
    b = ranking_score({"ap50": 40.0, "mpjpe": 60.0}, "ap50", "max", "mpjpe")
    c = ranking_score({"ap50": 40.1, "mpjpe": 900.0}, "ap50", "max", "mpjpe")
    nothing = ranking_score({"ap50": 40.0, "mpjpe": math.nan}, "ap50", "max", "mpjpe")
    assert nothing < a < b < c
    low = ranking_score({"mpjpe": 50.0, "ap50": 1.0}, "mpjpe", "min", "mpjpe")
    high = ranking_score({"mpjpe": 70.0, "ap50": 1.0}, "mpjpe", "min", "mpjpe")
    assert low > high


def test_validation_defaults_to_the_last_train_sequence_and_must_leave_one(smoke_data):
    assert pick_validation(smoke_data, []) == ["synth_train_01"]
    with pytest.raises(ConfigError, match="leaves none to train on"):
        pick_validation(smoke_data, ["synth_train_00", "synth_train_01"])
    with pytest.raises(ConfigError, match="'synth_test_00' is not a sequence of the train"):
        pick_validation(smoke_data, ["synth_test_00"])


def test_bad_sweep_settings_are_refused():
    with pytest.raises(ConfigError, match="sweep.metric"):
        load_config(None, ["sweep.metric=ap60"])
    with pytest.raises(ConfigError, match="sweep.stages"):
        load_config(None, ["sweep.stages=[pose, tuning]"])


def test_trials_csv_has_a_row_per_trial():
    from tune.space import Param
    from tune.sweep import TrialRow

    params = [Param("train.l1_weight", "loguniform", 1e-4, 1.0)]
    rows = [TrialRow("t1", {"train.l1_weight": 0.01}, "completed", 2, {"ap50": 10.0}, 10.0,
                     Path("x"))]  # fmt: skip
    lines = trials_csv(rows, params).splitlines()
    assert lines[0].startswith("trial_id,train.l1_weight,status,epochs,objective,val_ap25,val_ap50")
    assert lines[1].startswith("t1,0.01,completed,2,10.0,,10.0")
