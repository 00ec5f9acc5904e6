"""Optimiser, learning-rate schedule, seeding and determinism of a training run."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch
from torch import nn

from selfpose3d.training.config import StageConfig, TrainConfig


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple (e.g. run seed, stage, step): stable across processes."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def configure_torch(cfg: TrainConfig) -> None:
    """Threads and the determinism switch, process-wide."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    torch.use_deterministic_algorithms(cfg.deterministic)
    torch.backends.cudnn.benchmark = not cfg.deterministic


def build_optimizer(
    modules: list[nn.Module], stage: StageConfig
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.MultiStepLR]:
    """Adam over the parameters of ``modules`` and a per-epoch MultiStepLR."""
    params = [p for m in modules for p in m.parameters()]
    if not params:
        raise ValueError("nothing to train: the stage's modules have no parameters")
    optimizer = torch.optim.Adam(params, lr=stage.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(stage.lr_steps), gamma=stage.lr_factor
    )
    return optimizer, scheduler


def set_trainable(model: nn.Module, modules: list[nn.Module]) -> None:
    """Train ``modules`` (train mode, gradients); freeze the rest (eval mode, no gradients).

    Frozen networks run in eval mode so that their BatchNorm statistics stay those they
    were trained with.
    """
    model.eval()
    model.requires_grad_(False)
    for m in modules:
        m.train()
        m.requires_grad_(True)
