"""The ``sweep`` section: how ``selfpose3d tune`` searches hyperparameters (the ``tune/``
package runs it on Ray Tune + Optuna).

A trial is nothing but overrides on the base config: the per-trial budget
(``trial_overrides``) and one point of the search space (a YAML file keyed by dotted config
paths, see ``tune/spaces/paper.yaml``). Every trial trains ``stages`` from the same shared
backbone and root_net, and is scored after every epoch on validation sequences held out of
the train split (so the test split stays unseen).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selfpose3d.training.config import STAGES

SCORE_KEYS = ("ap25", "ap50", "ap75", "ap100", "ap125", "ap150", "recall500", "mpjpe")


@dataclass(kw_only=True)
class SweepConfig:
    # The search space: a YAML file, or the name of one in tune/spaces/ (``paper``).
    space: str = "paper"
    num_samples: int = 8  # trials in all (the paper's point first, then Optuna TPE)
    max_concurrent: int = 0  # 0 = as many as the cluster's CPUs (and GPUs) fit
    seed: int = 0  # Optuna's sampler
    metric: str = "ap50"  # validation metric to optimise (an evaluation key)
    mode: Literal["max", "min"] = "max"
    tie_break: str = "mpjpe"  # minimised; decides between trials with the same metric
    stages: list[str] = field(default_factory=lambda: ["pose", "finetune"])  # per trial
    # The per-trial budget and anything else every trial changes, as key=value overrides.
    trial_overrides: list[str] = field(default_factory=list)
    # Train-split sequences held out for validation (and from every trial's training);
    # empty = the last one in sorted order.
    validation_sequences: list[str] = field(default_factory=list)
    validation_max_frames: int = 100
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # > 0: trial workers train on GPUs
    # ASHA early stopping, in epochs of the trial's stages.
    grace_period: int = 1
    reduction_factor: int = 2

    def __post_init__(self) -> None:
        for key in (self.metric, self.tie_break):
            if key not in SCORE_KEYS:
                raise ValueError(f"sweep.metric / sweep.tie_break must be one of "
                                 f"{list(SCORE_KEYS)}, got {key!r}")  # fmt: skip
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ValueError(f"sweep.stages {self.stages}: choose from {list(STAGES)}")
        if self.num_samples < 1 or self.max_concurrent < 0 or self.workers_per_trial < 1:
            raise ValueError("sweep.num_samples and workers_per_trial must be >= 1, "
                             "max_concurrent >= 0")  # fmt: skip
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError("sweep.cpus_per_worker must be > 0 and gpus_per_worker >= 0")
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ValueError("sweep.grace_period must be >= 1 and reduction_factor >= 2")
        if self.validation_max_frames < 1:
            raise ValueError("sweep.validation_max_frames must be >= 1")
        for item in self.trial_overrides:
            if "=" not in item:
                raise ValueError(f"sweep.trial_overrides: {item!r} is not key=value")


def ranking_score(scores: dict[str, float], metric: str, mode: str, tie_break: str) -> float:
    """One number to maximise: the metric (negated for ``min``), less a millionth of the
    tie-break (mm). AP moves in steps of 100 / GT people, far above a millionth of any
    MPJPE, so the order is the metric's, with ties decided by the tie-break; a NaN
    tie-break (nothing predicted) counts as 10 m."""
    value = scores[metric] if mode == "max" else -scores[metric]
    tie = scores[tie_break]
    tie = 1e4 if tie != tie else min(float(tie), 1e4)
    return float(value) - 1e-6 * tie
