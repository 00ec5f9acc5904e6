"""Checkpoints: plain state dicts written atomically, checked against the model on load.

A checkpoint is one ``torch.save``d dict of plain values (loadable with
``torch.load(weights_only=True)``): format version, model signature, resolved config dict,
training position (stage, epoch, step), the model / optimizer / scheduler state dicts, and the
stages already completed. The *signature* names the preset and every structural model setting
and parameter shape; loading a checkpoint whose signature differs from the model's raises
:class:`CheckpointMismatchError` naming both, instead of silently mis-loading weights.

A directory of training checkpoints holds ``<stage>-e<epoch>-s<step>.pt`` files and
``latest.json``, a pointer updated (atomically) after each checkpoint is complete.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfpose3d.io import atomic_write_bytes, atomic_write_json
from selfpose3d.models.config import ADDED_FIELDS, ModelConfig

FORMAT_VERSION = 1
LATEST = "latest.json"
# Model settings that change what the weights mean even when no parameter shape changes.
STRUCTURAL_FIELDS = (
    "input_mode", "image_size", "heatmap_size", "backbone_depth", "attention_depth",
    "use_attention", "space_size", "space_center", "root_bins", "pose_cube_size",
    "pose_cube_offset", "pose_bins", "v2v_width",
)  # fmt: skip


class CheckpointMismatchError(ValueError):
    """A checkpoint belongs to another preset or model shape than the one being built."""


def model_signature(model: nn.Module, cfg: ModelConfig, preset: str) -> dict[str, Any]:
    """Preset name, structural model settings and every parameter/buffer shape."""
    return {
        "preset": preset,
        "model": {k: getattr(cfg, k) for k in STRUCTURAL_FIELDS},
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
    }


def check_signature(found: dict[str, Any], expected: dict[str, Any], source: str | Path) -> None:
    """Raise CheckpointMismatchError describing the first differences."""
    problems = []
    if found.get("preset") != expected["preset"]:
        problems.append(f"it was written for preset {found.get('preset')!r}, this run uses "
                        f"preset {expected['preset']!r}")  # fmt: skip
    for key, want in expected["model"].items():
        have = found.get("model", {}).get(key, ADDED_FIELDS.get(key))
        if have != want:
            problems.append(f"model.{key} is {have!r} there, {want!r} here")
    have_shapes, want_shapes = found.get("shapes", {}), expected["shapes"]
    missing = sorted(set(want_shapes) - set(have_shapes))
    extra = sorted(set(have_shapes) - set(want_shapes))
    if missing:
        problems.append(f"it lacks {len(missing)} tensors of this model (e.g. {missing[0]})")
    if extra:
        problems.append(f"it has {len(extra)} tensors this model lacks (e.g. {extra[0]})")
    for name in sorted(set(want_shapes) & set(have_shapes)):
        if have_shapes[name] != want_shapes[name]:
            problems.append(f"{name} has shape {have_shapes[name]} there, "
                            f"{want_shapes[name]} here")  # fmt: skip
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5
                                           else "")  # fmt: skip
        raise CheckpointMismatchError(f"{source}: refusing a checkpoint of another model: "
                                      f"{shown}")  # fmt: skip


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` into memory, then one atomic write: never a half-written file."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (plain tensors and values only; no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a selfpose3d checkpoint of format {FORMAT_VERSION}")
    return state


def load_model_weights(
    model: nn.Module, state: dict[str, Any], signature: dict[str, Any], source: str | Path
) -> None:
    """Check the signature, then load the model state dict (strict)."""
    check_signature(state.get("signature", {}), signature, source)
    model.load_state_dict(state["model"])


def load_module_weights(
    model: nn.Module, state: dict[str, Any], modules: Sequence[str], source: str | Path
) -> list[str]:
    """Load the weights of ``modules`` (top-level sub-modules, e.g. ``root_net``) from a
    checkpoint of a possibly different model (another attention depth, say); every tensor of
    those modules must be there with this model's shape. Returns the modules loaded (those
    this model has)."""
    own = model.state_dict()
    loaded = [m for m in modules if any(k.startswith(f"{m}.") for k in own)]
    wanted = {k: v for k, v in own.items() if k.split(".", 1)[0] in loaded}
    theirs = state.get("model", {})
    missing = sorted(k for k in wanted if k not in theirs)
    wrong = sorted(k for k in wanted if k in theirs and theirs[k].shape != wanted[k].shape)
    if missing or wrong:
        detail = (f"it lacks {missing[0]}" if missing else
                  f"{wrong[0]} has shape {tuple(theirs[wrong[0]].shape)} there, "
                  f"{tuple(wanted[wrong[0]].shape)} here")  # fmt: skip
        raise CheckpointMismatchError(f"{source}: cannot start {', '.join(loaded)} from this "
                                      f"checkpoint: {detail}")  # fmt: skip
    model.load_state_dict({k: theirs[k] for k in wanted}, strict=False)
    return loaded


class CheckpointManager:
    """The training checkpoints of one run directory: save, find the latest, prune."""

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def save(self, state: dict[str, Any]) -> Path:
        name = f"{state['stage']}-e{state['epoch']:03d}-s{state['step']:07d}.pt"
        path = self.directory / name
        save_checkpoint(path, state)
        history = self._history()
        history = [h for h in history if h != name] + [name]
        atomic_write_json(self.directory / LATEST, {"latest": name, "history": history})
        for old in history[: -self.keep]:
            (self.directory / old).unlink(missing_ok=True)
        if len(history) > self.keep:
            atomic_write_json(self.directory / LATEST,
                              {"latest": name, "history": history[-self.keep :]})  # fmt: skip
        return path

    def _history(self) -> list[str]:
        pointer = self.directory / LATEST
        if not pointer.is_file():
            return []
        try:
            return list(json.loads(pointer.read_text())["history"])
        except (ValueError, KeyError) as e:
            raise ValueError(f"{pointer}: malformed checkpoint pointer ({e})") from e

    def latest_path(self) -> Path | None:
        history = self._history()
        return self.directory / history[-1] if history else None

    def latest(self) -> dict[str, Any] | None:
        path = self.latest_path()
        return None if path is None else load_checkpoint(path)
