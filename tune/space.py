"""Search spaces: YAML keyed by dotted config paths, each with a distribution and the paper's
value. A point of the space is a list of ``key=value`` overrides on the base config.

    train.l1_weight: {distribution: loguniform, low: 1.0e-4, high: 1.0, paper: 0.01}
    model.attention_depth: {distribution: choice, values: [18, 34, 50], paper: 18}

Distributions: ``loguniform`` and ``uniform`` (float ``low`` .. ``high``), ``int`` (integers
``low`` .. ``high`` inclusive) and ``choice`` (``values``). Every key and every value is
checked against the config when the space is loaded, so a typo fails before any trial runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from selfpose3d.config import Config, ConfigError, config_from_dict, config_to_dict

log = logging.getLogger(__name__)

SPACES_DIR = Path(__file__).resolve().parent / "spaces"
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
# Keys that only matter when the model has an attention net.
ATTENTION_KEYS = ("train.attention_weight", "model.attention_depth",
                  "model.attention_pretrained_path")  # fmt: skip


@dataclass(frozen=True)
class Param:
    key: str  # dotted config path
    distribution: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()
    paper: Any = None  # the paper's value; None = none given

    def contains(self, value: Any) -> bool:
        if self.distribution == "choice":
            return value in self.values
        return self.low <= value <= self.high


def resolve_space_path(space: str | Path) -> Path:
    """A YAML file, or the name of one in ``tune/spaces/`` (``paper``)."""
    path = Path(space)
    if path.suffix not in (".yaml", ".yml"):
        path = SPACES_DIR / f"{space}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"search space {space!r} not found (a YAML file, or one of "
                                f"{known})")  # fmt: skip
    return path


def load_space(space: str | Path | dict[str, Any], base: Config) -> list[Param]:
    """Parse and check a space against ``base`` (every key must be a config key, every
    value of it valid there)."""
    source = "<space>"
    if not isinstance(space, dict):
        path = resolve_space_path(space)
        source = str(path)
        try:
            space = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(space, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
    if not space:
        raise ConfigError(f"{source}: the search space is empty")
    params = [_param(str(key), spec, source) for key, spec in space.items()]
    for p in params:
        for value in _probe_values(p):
            apply_overrides(base, {p.key: value}, f"{source}: {p.key}")
    return params


def _param(key: str, spec: Any, source: str) -> Param:
    where = f"{source}: {key}"
    if not isinstance(spec, dict) or spec.get("distribution") not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: expected a mapping with distribution one of "
                          f"{list(DISTRIBUTIONS)}")  # fmt: skip
    unknown = set(spec) - {"distribution", "low", "high", "values", "paper"}
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
    kind = spec["distribution"]
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: a choice needs a non-empty list 'values'")
        param = Param(key, kind, values=tuple(values), paper=spec.get("paper"))
    else:
        low, high = spec.get("low"), spec.get("high")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        if not numbers or not low < high:
            raise ConfigError(f"{where}: {kind} needs numbers low < high, got {low}, {high}")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{where}: loguniform needs low > 0, got {low}")
        if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
            raise ConfigError(f"{where}: int needs integer bounds, got {low}, {high}")
        param = Param(key, kind, low=low, high=high, paper=spec.get("paper"))
    if param.paper is not None and not param.contains(param.paper):
        raise ConfigError(f"{where}: the paper's value {param.paper} is outside the space")
    return param


def _probe_values(p: Param) -> list[Any]:
    if p.distribution == "choice":
        return list(p.values)
    if p.distribution == "int":
        return [int(p.low), int(p.high)]
    return [float(p.low), float(p.high)]


def apply_overrides(base: Config, overrides: dict[str, Any], source: str) -> Config:
    """``base`` with dotted ``overrides`` applied, validated like any config."""
    values = config_to_dict(base)
    for key, value in overrides.items():
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{source}: unknown config key {key!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"{source}: unknown config key {key!r}")
        node[parts[-1]] = value
    return config_from_dict(values, source)


def active_params(params: list[Param], base: Config) -> list[Param]:
    """The params that change anything under ``base``: without an attention net, the
    attention keys are dropped (with a warning)."""
    if base.model.use_attention:
        return params
    dropped = [p.key for p in params if p.key in ATTENTION_KEYS]
    if dropped:
        log.warning("model.use_attention is false: not searching %s (they change nothing "
                    "without the attention net)", ", ".join(dropped))  # fmt: skip
    kept = [p for p in params if p.key not in ATTENTION_KEYS]
    if not kept:
        raise ConfigError("nothing to search: every key of the space needs the attention net, "
                          "and model.use_attention is false")  # fmt: skip
    return kept


def paper_point(params: list[Param]) -> dict[str, Any] | None:
    """The paper's values of every param, or None when one has no paper value."""
    if any(p.paper is None for p in params):
        return None
    return {p.key: p.paper for p in params}


def to_tune(params: list[Param]) -> dict[str, Any]:
    """Ray Tune search-space domains (OptunaSearch turns them into Optuna distributions)."""
    from ray import tune

    domains = {
        "loguniform": lambda p: tune.loguniform(p.low, p.high),
        "uniform": lambda p: tune.uniform(p.low, p.high),
        "int": lambda p: tune.randint(int(p.low), int(p.high) + 1),
        "choice": lambda p: tune.choice(list(p.values)),
    }
    return {p.key: domains[p.distribution](p) for p in params}


def format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
