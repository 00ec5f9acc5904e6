"""Synthetic multi-view, multi-person data in the CMU Panoptic layout (DESIGN §3.3).

Importing this package is cheap: the generator (NumPy, OpenCV) loads on first use of
``generate``, ``make_tiny_dataset`` or ``tiny_config``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from selfpose3d.data.synthetic.config import (
    DetectorConfig,
    PeopleConfig,
    RigConfig,
    SynthConfig,
)

if TYPE_CHECKING:
    from selfpose3d.data.synthetic.generator import generate, make_tiny_dataset, tiny_config

__all__ = [
    "DetectorConfig",
    "PeopleConfig",
    "RigConfig",
    "SynthConfig",
    "generate",
    "make_tiny_dataset",
    "tiny_config",
]
_LAZY = ("generate", "make_tiny_dataset", "tiny_config")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from selfpose3d.data.synthetic import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
