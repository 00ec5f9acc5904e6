"""What the model's inference returns; shared by the model and its exported form."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    heatmaps: torch.Tensor  # (B, V, J, h, w)
    root_cubes: torch.Tensor  # (B, X, Y, Z) root likelihood
    proposals: torch.Tensor  # (B, K, 5): x, y, z mm, score, flag (1 = person)
    poses: torch.Tensor  # (B, K, J, 3) mm; rows with flag 0 are 0

    @property
    def scores(self) -> torch.Tensor:  # (B, K)
        return self.proposals[..., 3]

    @property
    def is_person(self) -> torch.Tensor:  # (B, K) bool
        return self.proposals[..., 4] > 0.5

    def to(self, device: torch.device | str) -> ModelOutput:
        return ModelOutput(*(t.to(device) for t in (self.heatmaps, self.root_cubes,
                                                    self.proposals, self.poses)))  # fmt: skip
