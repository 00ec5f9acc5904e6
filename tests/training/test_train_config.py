"""The training configuration: presets load, mistakes are errors naming the key, and what
the settings select."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfpose3d.config import ConfigError, load_config
from selfpose3d.training.config import PAPER_ROOT_MARGINS, StageConfig, TrainConfig
from selfpose3d.training.evaluate import spread_frames

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_presets_load(preset):
    cfg = load_config(CONFIGS / f"{preset}.yaml")
    assert cfg.train.stage("pose").epochs >= 1


def test_paper_defaults():
    cfg = TrainConfig()
    assert (cfg.l1_weight, cfg.attention_weight, cfg.hard_label_threshold) == (0.01, 0.1, 0.7)
    assert (cfg.pose.lr_steps, cfg.finetune.lr) == ([5, 7], 5e-5)
    # The paper's margins in its 8 x 8 x 2 m space: x +2500 / -2000, y +-1500, z +250 / -300 mm.
    sizes = [8000, 8000, 8000, 8000, 2000, 2000]
    mm = [round(f * s) for f, s in zip(PAPER_ROOT_MARGINS, sizes, strict=True)]
    assert mm == [2500, 2000, 1500, 1500, 250, 300]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.pose.lr=0", "lr must be > 0"),
        ("train.pose.lr_steps=[7,5]", "lr_steps must be increasing"),
        ("train.hard_label_threshold=0", "hard_label_threshold"),
        ("train.synthetic_root_margins=[0.5,0.5,0,0,0,0]", "must leave part of the space"),
        ("train.synthetic_root_margins=[0.1]", "needs 6 fractions"),
        ("train.augment.scale_range=[0.5,0.1]", "scale_range"),
        ("train.keep_checkpoints=0", "keep_checkpoints"),
        ("train.no_such_key=1", "unknown config key 'train.no_such_key'"),
        ("train.pose.epochs=two", "expected an integer"),
    ],
)
def test_mistakes_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "smoke.yaml", [override])


def test_stage_lookup():
    cfg = TrainConfig()
    assert cfg.stage("supervised") is cfg.supervised
    with pytest.raises(ValueError, match="unknown training stage"):
        cfg.stage("nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        StageConfig(batch_size=0)


def test_per_epoch_evaluation_frames_are_spread_over_the_split():
    frames = list(range(10))  # stands for a split's frames, sequence after sequence
    assert spread_frames(frames, 4) == [0, 3, 6, 9]  # linspace(0, 9, 4) = 0, 3, 6, 9
    assert spread_frames(frames, 3) == [0, 4, 9]  # 0, 4.5, 9 rounded half to even
    assert spread_frames(frames, 9) == [0, 1, 2, 3, 4, 6, 7, 8, 9]  # distinct, in order
    assert spread_frames(frames, 1) == [0]
    assert spread_frames(frames, 10) == spread_frames(frames, 50) == frames
    assert spread_frames(frames, 0) == []
