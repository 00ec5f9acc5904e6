"""Configuration of the training stages, their schedules and the augmentation (DESIGN §2.2, §5).

Units: lr dimensionless, distances mm, rotations degrees, heatmap values in [0, 1]. Epoch
numbers count from 0 within a stage (``lr_steps: [5, 7]`` = the lr drops before epochs 5 and 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

STAGES = ("backbone", "root", "pose", "finetune", "supervised")
Stage = Literal["backbone", "root", "pose", "finetune", "supervised"]

# The paper's synthetic-root margins (mm) in its 8000 x 8000 x 2000 mm space, as fractions of
# that space: x +2500 / -2000, y +-1500, z +250 / -300 at the low / high ends.
PAPER_ROOT_MARGINS = [2500 / 8000, 2000 / 8000, 1500 / 8000, 1500 / 8000, 250 / 2000, 300 / 2000]


@dataclass(kw_only=True)
class StageConfig:
    epochs: int = 1
    lr: float = 1e-4  # Adam
    lr_steps: list[int] = field(default_factory=list)  # epochs at which lr *= lr_factor
    lr_factor: float = 0.1
    batch_size: int = 1  # multi-view frames per step

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"train.<stage>.epochs must be >= 0, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"train.<stage>.lr must be > 0, got {self.lr}")
        if not 0 < self.lr_factor <= 1:
            raise ValueError(f"train.<stage>.lr_factor must be in (0, 1], got {self.lr_factor}")
        if self.batch_size < 1:
            raise ValueError(f"train.<stage>.batch_size must be >= 1, got {self.batch_size}")
        if any(s < 1 for s in self.lr_steps) or sorted(self.lr_steps) != list(self.lr_steps):
            raise ValueError(f"train.<stage>.lr_steps must be increasing epochs >= 1, "
                             f"got {self.lr_steps}")  # fmt: skip


@dataclass(kw_only=True)
class AugmentConfig:
    """The A1/A2 augmentations of the self-supervised stages (A3 is never augmented)."""

    max_rotation_deg: float = 45.0  # rotation U(-max, max), applied with rotation_prob
    rotation_prob: float = 0.5
    # The crop box is scaled by 1 + U(lo, hi) (zoom out) or 1 - U(lo, hi) / 2 (zoom in).
    scale_range: list[float] = field(default_factory=lambda: [0.1, 0.35])
    appearance: bool = True  # RandAugment (colour ops only) + Cutout on A1/A2 images
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9  # of 31 bins
    cutout_prob: float = 0.5
    cutout_area: list[float] = field(default_factory=lambda: [0.02, 0.1])  # image share

    def __post_init__(self) -> None:
        if not 0 <= self.max_rotation_deg <= 180:
            raise ValueError("train.augment.max_rotation_deg must be in [0, 180]")
        for name in ("rotation_prob", "cutout_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"train.augment.{name} must be in [0, 1]")
        for name in ("scale_range", "cutout_area"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1] < 1:
                raise ValueError(f"train.augment.{name} needs [lo, hi] with 0 <= lo <= hi < 1, "
                                 f"got {lo_hi}")  # fmt: skip
        if self.randaugment_ops < 0 or not 0 <= self.randaugment_magnitude <= 30:
            raise ValueError("train.augment: randaugment_ops >= 0, magnitude in [0, 30]")


@dataclass(kw_only=True)
class TrainConfig:
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms
    num_threads: int = 0  # torch intra-op threads (0 = torch's default); part of a seed's result
    # The preset this run belongs to; a checkpoint of another preset is refused on load.
    preset: str = ""
    backbone: StageConfig = field(
        default_factory=lambda: StageConfig(epochs=20, lr=1e-4, lr_steps=[10, 15], batch_size=4)
    )
    root: StageConfig = field(default_factory=lambda: StageConfig(epochs=3, lr_steps=[2]))
    pose: StageConfig = field(default_factory=lambda: StageConfig(epochs=8, lr_steps=[5, 7]))
    finetune: StageConfig = field(
        default_factory=lambda: StageConfig(epochs=3, lr=5e-5, lr_steps=[2])
    )
    # The VoxelPose baseline on 3D ground truth (only when the data has GT).
    supervised: StageConfig = field(
        default_factory=lambda: StageConfig(epochs=10, lr=1e-4, lr_steps=[8], batch_size=1)
    )
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    l1_weight: float = 0.01  # lambda
    attention_weight: float = 0.1  # sigma
    l1_from_epoch: int = 5  # pose stage; the finetune stage uses L1 from its start
    # Pseudo joints within this many px of their image's border are left out of the L1 term
    # (0 = all are compared, the reference). A heatmap detector answers inside the image, so
    # it parks a joint it cannot see there on the border: L1 would pull the prediction there.
    l1_border_px: float = 0.0
    hard_label_threshold: float = 0.7  # pseudo joints below this confidence are dropped (hard)
    synthetic_root_weight: float = 100.0
    root_consistency_weight: float = 1.0  # 0 = synthetic roots only (no real views needed)
    # Weight of heatmap_net_2d's own 2D loss during the pose and finetune stages; 0 = the 2D
    # net learns only through the 3D losses, and with train_heatmap_net_in_pose false it is frozen.
    pose_heatmap_weight: float = 1.0
    train_heatmap_net_in_pose: bool = True

    # Synthetic roots: margins at the [x low, x high, y low, y high, z low, z high] ends of the
    # root space, as fractions of its size (the paper's mm margins scaled to any space).
    synthetic_root_margins: list[float] = field(default_factory=lambda: list(PAPER_ROOT_MARGINS))
    root_target_sigma: float = 200.0  # mm, 3D Gaussians of root target cubes (synthetic and GT)
    synthetic_root_z_jitter: float = 50.0  # mm, per-root std around the sample's z
    synthetic_heatmap_noise: float = 0.02  # std of the noise on synthetic root heatmaps
    supervised_match_radius: float = 500.0  # mm: a proposal this close to a GT root is trained

    grad_clip_norm: float = 10.0  # max global gradient norm; 0 = no clipping
    max_steps_per_epoch: int = 0  # 0 = the whole training split every epoch (budgets, tests)
    log_every: int = 1  # report metrics every n steps (and at the last step of an epoch)
    # Steps between metric reports to Ray Train (checkpoints are reported too). Each report
    # waits for the Train controller to take it, so reporting every step would set the pace.
    ray_report_every: int = 50
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch only
    keep_checkpoints: int = 2  # newest checkpoint files kept (older ones are deleted)
    image_cache_mb: int = 512  # decoded images kept in memory between epochs
    # Frames of the evaluation split scored after every epoch when one is given, evenly
    # spaced over it (0 = none).
    eval_max_frames: int = 200
    # Frames of it drawn (3D prediction vs GT, 2D overlay) after training, logged as artifacts.
    eval_figures: int = 4
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:N

    def __post_init__(self) -> None:
        for name in ("l1_weight", "attention_weight", "synthetic_root_weight",
                     "root_consistency_weight", "pose_heatmap_weight", "grad_clip_norm",
                     "synthetic_heatmap_noise", "synthetic_root_z_jitter"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.l1_from_epoch < 0:
            raise ValueError("train.l1_from_epoch must be >= 0")
        if not 0 <= self.l1_border_px < 100:
            raise ValueError(f"train.l1_border_px must be in [0, 100) px (0 = compare every "
                             f"label), got {self.l1_border_px}")  # fmt: skip
        if not 0 < self.hard_label_threshold <= 1:
            raise ValueError("train.hard_label_threshold must be in (0, 1]")
        margins = self.synthetic_root_margins
        if len(margins) != 6 or any(m < 0 for m in margins):
            raise ValueError(f"train.synthetic_root_margins needs 6 fractions >= 0, got {margins}")
        if any(margins[2 * a] + margins[2 * a + 1] >= 1 for a in range(3)):
            raise ValueError(f"train.synthetic_root_margins {margins}: the two margins of an "
                             f"axis must leave part of the space (sum < 1)")  # fmt: skip
        if self.root_target_sigma <= 0 or self.supervised_match_radius <= 0:
            raise ValueError("train.root_target_sigma and supervised_match_radius must be > 0")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("num_threads", "max_steps_per_epoch", "checkpoint_every", "image_cache_mb",
                     "eval_max_frames", "eval_figures"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_checkpoints < 1 or self.log_every < 1 or self.ray_report_every < 1:
            raise ValueError("train.keep_checkpoints, log_every, ray_report_every must be >= 1")

    def stage(self, name: Stage) -> StageConfig:
        if name not in STAGES:
            raise ValueError(f"unknown training stage {name!r} (stages: {list(STAGES)})")
        return getattr(self, name)
