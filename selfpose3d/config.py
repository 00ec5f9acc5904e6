"""Typed configuration: dataclass sections, YAML presets, dotted command-line overrides.

Precedence: ``--set key=value`` overrides > YAML file > dataclass defaults. An unknown key or
a value of the wrong type is a ``ConfigError`` naming the key and the file it came from.
Each component receives its own section (``cfg.synth``, ``cfg.data``, ``cfg.model`` ...).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from selfpose3d.data.config import DataConfig
from selfpose3d.data.synthetic.config import SynthConfig
from selfpose3d.models.config import ModelConfig
from selfpose3d.sweep_config import SweepConfig
from selfpose3d.training.config import TrainConfig


class ConfigError(ValueError):
    """A configuration the user wrote is wrong; the message names the key and the source."""


@dataclass(kw_only=True)
class Config:
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


# ---------------------------------------------------------------------------------------------
# Loading and validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert ints to floats where expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: expected {expected}, got {value!r}")

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(f"a mapping for section {tp.__name__}")
        return _build(tp, value, key, source)
    if origin is Literal:
        if value not in args or type(value) is not type(next(a for a in args if a == value)):
            raise fail(f"one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise fail(f"a list of {_type_name(args[0])}")
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail("a mapping")
        return {k: _coerce(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        # YAML 1.1 reads exponents without a dot (``1e-4``) as strings; users write them.
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if tp is Any:
        return value
    raise AssertionError(f"unsupported config annotation {tp!r} for {key}")


def _build(cls: type, values: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            where = prefix or "the top level"
            raise ConfigError(
                f"{source}: unknown config key {dotted!r} (known under {where}: {sorted(names)})"
            )
        kwargs[key] = _coerce(value, hints[key], dotted, source)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from e


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"model.pose_bins=[32,32,32]"`` -> (["model", "pose_bins"], [32, 32, 32]); YAML values."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: malformed key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from e
    return parts, value


def config_from_dict(values: dict[str, Any], source: str = "<dict>") -> Config:
    return _build(Config, values, "", source)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        values = loaded or {}
        # Validate the file on its own first so that errors name the file, not --set.
        config_from_dict(values, str(path))
    for item in overrides or []:
        parts, value = parse_override(item)
        nested: dict[str, Any] = value
        for p in reversed(parts):
            nested = {p: nested}
        values = _merge(values, nested)
    if not overrides:
        return config_from_dict(values, str(path) if path else "<defaults>")
    # Validated together: values that must agree (image_size and heatmap_size) may be set by
    # two overrides, each invalid without the other.
    return config_from_dict(values, " ".join(f"--set {item}" for item in overrides))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically), loadable again with load_config."""
    from selfpose3d.io import atomic_write_text

    atomic_write_text(path, dump_config(cfg))
