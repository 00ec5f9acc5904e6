"""The training loop of one stage: plain PyTorch over an iterable of batches.

``train_stage`` runs the epochs of a stage: per step it seeds torch's generator from (run
seed, stage, step) so that a resumed run draws exactly what an uninterrupted one would, calls
the stage's step function, backpropagates ``"loss"``, clips the gradient norm, steps Adam and
hands the step's metrics to ``report`` every ``log_every`` steps. The learning rate follows a
per-epoch MultiStepLR. Checkpoints are written every ``checkpoint_every`` steps and at the end
of every epoch.

Batches come from ``batches(epoch, skip)``: the batches of ``epoch`` without its first
``skip`` ones (those a resumed checkpoint has already trained on). A distributed wrapper
supplies its own shard here, wraps the step for gradient synchronisation (``wrap``, e.g.
DistributedDataParallel) and salts the per-step seeds with its rank; nothing in this file
knows about processes.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from selfpose3d.data.batches import Batch
from selfpose3d.models.model import SelfPose3dModel
from selfpose3d.training.checkpoint import CheckpointManager
from selfpose3d.training.config import Stage, TrainConfig
from selfpose3d.training.schedule import build_optimizer, derive_seed, set_trainable
from selfpose3d.training.steps import STAGES

Report = Callable[[dict[str, float]], None]
BatchSource = Callable[[int, int], Iterable[Batch]]  # (epoch, batches to skip) -> batches


class CheckpointSink(Protocol):
    """Where training checkpoints go: a run directory's manager or a Ray Train report."""

    def save(self, state: dict[str, Any]) -> Any: ...


class StepModule(nn.Module):
    """A stage's step as a module's ``forward``, so that a DistributedDataParallel wrapper
    sees every parameter the step uses and synchronises their gradients.

    A batch with nothing to learn from (e.g. no proposals) still gets a loss tied to every
    trainable parameter (times 0): the backward pass, and a distributed all-reduce, stay
    uniform across steps and processes.
    """

    def __init__(self, model: SelfPose3dModel, stage: Stage) -> None:
        super().__init__()
        self.model = model
        self.step = STAGES[stage].step

    def forward(self, batch: Batch, cfg: TrainConfig, epoch: int) -> dict[str, torch.Tensor]:
        out = self.step(self.model, batch, cfg, epoch)
        if not out["loss"].requires_grad:
            trainable = [p for p in self.model.parameters() if p.requires_grad]
            out["loss"] = out["loss"] + sum(p.sum() for p in trainable) * 0.0
        return out


@dataclass
class Position:
    """Where a stage is: epochs completed, optimiser steps taken, steps into the epoch."""

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0


def train_stage(
    model: SelfPose3dModel,
    stage: Stage,
    cfg: TrainConfig,
    batches: BatchSource,
    *,
    report: Report | None = None,
    checkpoints: CheckpointManager | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
    steps_per_epoch: int | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    seed_salt: tuple[int, ...] = (),
    on_epoch_end: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train ``stage`` for its configured epochs; returns the metrics of the last step.

    resume: a checkpoint of this stage (its model weights already loaded) to continue from.
    checkpoints: receives a checkpoint state every ``checkpoint_every`` steps and at the end
    of every epoch; checkpoint_extra: entries stored in every checkpoint (signature, config,
    stages done). device: where batches go (the model must already be there). wrap: applied
    to the stage's :class:`StepModule` once its trainable modules are set (e.g. DDP).
    seed_salt: appended to the per-step seeds (a rank, so that processes draw differently).
    on_epoch_end: called with each finished epoch before its checkpoint (e.g. evaluation).
    """
    spec = STAGES[stage]
    stage_cfg = cfg.stage(stage)
    modules = spec.modules(model, cfg)
    set_trainable(model, modules)
    optimizer, scheduler = build_optimizer(modules, stage_cfg)
    params = [p for m in modules for p in m.parameters()]
    runner = StepModule(model, stage)
    runner = wrap(runner) if wrap is not None else runner
    pos = Position()
    if resume is not None:
        if resume["stage"] != stage:
            raise ValueError(f"cannot resume stage {stage!r} from a {resume['stage']!r} checkpoint")
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        pos = Position(resume["epoch"], resume["step"], resume["step_in_epoch"])

    def save(done: bool) -> None:
        if checkpoints is not None:
            checkpoints.save({
                **(checkpoint_extra or {}), "stage": stage, "stage_done": done,
                "epoch": pos.epoch, "step": pos.step, "step_in_epoch": pos.step_in_epoch,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            })  # fmt: skip

    last: dict[str, float] = {}
    skipped = 0  # updates skipped for a non-finite gradient
    for epoch in range(pos.epoch, stage_cfg.epochs):
        set_trainable(model, modules)  # an evaluation in between may have changed the modes
        bar = tqdm(
            total=steps_per_epoch,
            initial=pos.step_in_epoch,
            leave=False,
            desc=f"{stage} {epoch + 1}/{stage_cfg.epochs}",
            disable=not progress,
        )
        for batch in batches(epoch, pos.step_in_epoch):
            torch.manual_seed(derive_seed(cfg.seed, stage, pos.step, *seed_salt))
            t0 = time.perf_counter()
            batch = (batch if spec.uses_gt else batch.without_gt()).to(device)
            out = runner(batch, cfg, epoch)
            loss = out["loss"]
            if not torch.isfinite(loss):
                parts = {k: float(v.detach()) for k, v in out.items()}
                raise FloatingPointError(
                    f"stage {stage}, epoch {epoch}, step {pos.step}: the "
                    f"loss is not finite ({parts}; frames {batch.keys})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = cfg.grad_clip_norm if cfg.grad_clip_norm > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            # A finite loss can still have a non-finite gradient (e.g. a Gaussian rendered at
            # a degenerate projection). One such update would turn every weight into NaN, and
            # the masked losses would then stay finite and hide it: skip the update instead,
            # as mixed-precision loss scaling does, and count it.
            if torch.isfinite(grad_norm):
                optimizer.step()
            else:
                skipped += 1
                if skipped == 1 or skipped % 100 == 0:
                    warnings.warn(f"stage {stage}, step {pos.step}: non-finite gradient, "
                                  f"update skipped ({skipped} so far; frames {batch.keys})",
                                  RuntimeWarning, stacklevel=2)  # fmt: skip
            seconds = time.perf_counter() - t0
            pos.step += 1
            pos.step_in_epoch += 1
            last = {k: float(v.detach()) for k, v in out.items()}
            last.update(lr=optimizer.param_groups[0]["lr"], epoch=float(epoch),
                        step=float(pos.step), seconds_per_step=seconds,
                        samples_per_s=batch.size / seconds)  # fmt: skip
            last.update(grad_norm=float(grad_norm), skipped_updates=float(skipped))
            end_of_epoch = steps_per_epoch is not None and pos.step_in_epoch == steps_per_epoch
            if report is not None and (pos.step % cfg.log_every == 0 or end_of_epoch):
                report(last)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4g}")
            if cfg.checkpoint_every and pos.step % cfg.checkpoint_every == 0:
                save(done=False)
        bar.close()
        with warnings.catch_warnings():
            # The schedule counts epochs, not updates: it advances even after an epoch
            # whose every update was skipped, which PyTorch would otherwise warn about.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)`")
            scheduler.step()
        pos.epoch, pos.step_in_epoch = epoch + 1, 0
        if on_epoch_end is not None:
            # Before the checkpoint: a run killed in between redoes the epoch and its
            # evaluation, so no epoch ends up without one.
            on_epoch_end(epoch)
        save(done=pos.epoch >= stage_cfg.epochs)
    return last
