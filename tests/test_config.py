from pathlib import Path

import pytest

from selfpose3d.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_presets_load_and_round_trip(preset, tmp_path):
    cfg = load_config(CONFIGS / f"{preset}.yaml")
    save_config(cfg, tmp_path / "resolved.yaml")
    assert config_to_dict(load_config(tmp_path / "resolved.yaml")) == config_to_dict(cfg)


def test_paper_preset_has_the_papers_sizes():
    m = load_config(CONFIGS / "paper.yaml").model
    assert (m.image_size, m.heatmap_size) == ([960, 512], [240, 128])
    assert (m.backbone_depth, m.attention_depth) == (50, 18)
    assert m.space_size == [8000, 8000, 2000] and m.space_center == [0, -500, 800]
    assert m.root_bins == [80, 80, 20] and m.pose_bins == [64, 64, 64]
    assert (m.beta, m.max_people, m.proposal_threshold) == (100, 10, 0.3)


def test_precedence_cli_over_yaml_over_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  beta: 50\n  max_people: 3\n")
    cfg = load_config(path, ["model.beta=7", "train.pose.lr_steps=[1, 2]"])
    assert cfg.model.beta == 7.0  # CLI beats YAML
    assert cfg.model.max_people == 3  # YAML beats default
    assert cfg.model.proposal_threshold == 0.3  # default
    assert cfg.train.pose.lr_steps == [1, 2]
    assert isinstance(cfg.model.beta, float)  # an int is accepted where a float is expected


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  pose_binz: [8, 8, 8]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'model\.pose_binz'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown config key 'nosuchsection'"):
        load_config(None, ["nosuchsection.x=1"])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("train:\n  seed: 1.5\n", r"train\.seed: expected an integer"),
        ("train:\n  deterministic: 1\n", r"train\.deterministic: expected true or false"),
        (
            "model:\n  backbone_depth: 19\n",
            r"model\.backbone_depth: expected one of \[18, 34, 50\]",
        ),
        ("model:\n  input_mode: video\n", r"model\.input_mode: expected one of"),
        ("model:\n  image_size: [1, x]\n", r"model\.image_size\[1\]: expected an integer"),
        ("model: 3\n", r"model: expected a mapping"),
        ("model:\n  image_size: [1, 2, 3]\n", r"model\.image_size needs 2 values"),
        ("- a\n- b\n", r"top level must be a mapping"),
    ],
)
def test_wrong_types_are_errors_naming_key_and_file(tmp_path, text, pattern):
    path = tmp_path / "wrong.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert "wrong.yaml" in str(info.value)


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/x.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("model.beta")
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="expected an integer"):
        config_from_dict({"train": {"seed": True}})


def test_exponents_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 reads ``1e-4`` as a string; for a float field it is the number users meant."""
    cfg = load_config(None, ["train.root.lr=1e-4", "train.l1_weight=2E+1"])
    assert cfg.train.root.lr == 1e-4 and cfg.train.l1_weight == 20.0
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  pose:\n    lr: 5e-5\n")
    assert load_config(path).train.pose.lr == 5e-5
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(None, ["train.root.lr=1e-4x"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(None, ["train.seed=1e3"])
