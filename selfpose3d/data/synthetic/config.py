"""Configuration of the synthetic Panoptic generator (DESIGN §3.3).

Units: lengths in mm (model frame, z up), times in s, rates are probabilities per event
unless stated. Detector pixel quantities are pixels of a 1920-px-wide image (the detector is
assumed to see the camera's native HD frame); they are scaled to the written image width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"synth.{name} must be in [{lo}, {hi}], got {value}")


@dataclass(kw_only=True)
class RigConfig:
    kind: Literal["dome", "room", "outdoor3"] = "dome"
    # Cameras to use, by name; empty = the rig's default selection (dome: the literature's 5
    # HD cameras 00_03, 00_06, 00_12, 00_13, 00_23; room: all 4; outdoor3: all 3).
    cameras: list[str] = field(default_factory=list)
    # Size of the written images, px. The calibration is scaled to it (Camera.scaled).
    image_width: int = 1920
    image_height: int = 1080
    # Capture space (model frame, mm): people are in the GT while their root is inside it.
    # Empty = the rig's default (dome: 3.4 x 3.0 x 2 m box where most of the 5 views overlap).
    space_center: list[float] = field(default_factory=list)
    space_size: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.image_width < 16 or self.image_height < 16:
            raise ValueError("synth.rig.image_width/image_height must be >= 16 px")
        if len(self.space_center) not in (0, 3) or len(self.space_size) not in (0, 3):
            raise ValueError("synth.rig.space_center/space_size need 3 values (or none)")
        if any(s <= 0 for s in self.space_size):
            raise ValueError("synth.rig.space_size values must be > 0 mm")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"synth.rig.cameras lists a camera twice: {self.cameras}")


@dataclass(kw_only=True)
class PeopleConfig:
    min_people: int = 1  # people inside the capture space per sequence
    max_people: int = 4
    child_fraction: float = 0.15  # share of people drawn from the child stature distribution
    adult_stature_mean: float = 1700.0  # mm (mixed-sex adult population)
    adult_stature_std: float = 85.0  # mm
    child_stature_min: float = 1000.0  # mm (about 4 years old)
    child_stature_max: float = 1500.0  # mm (about 11 years old)
    # Probability that a person walks into (or out of) the capture space during a sequence.
    enter_exit_prob: float = 0.3
    min_distance: float = 650.0  # mm; roots (horizontal) never come closer than this
    walk_margin: float = 250.0  # mm; walking targets stay this far inside the capture space
    walk_speed_mean: float = 1.2  # m/s, preferred speed of an adult (children: by leg length)
    walk_speed_std: float = 0.15  # m/s
    walk_prob: float = 0.55  # probability that the next activity of a person is a walk
    still_min: float = 1.5  # s; duration range of a stationary activity
    still_max: float = 5.0  # s
    # Relative weights of the stationary activities.
    stand_weight: float = 0.4
    gesture_weight: float = 0.35
    bend_weight: float = 0.15
    crouch_weight: float = 0.1
    # Optional BVH motion source (any skeleton with common joint names); empty = procedural.
    bvh_path: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.min_people <= self.max_people <= 6:
            raise ValueError("synth.people: need 1 <= min_people <= max_people <= 6")
        for name in ("child_fraction", "enter_exit_prob", "walk_prob"):
            _check_range(f"people.{name}", getattr(self, name), 0.0, 1.0)
        if not 0 < self.child_stature_min < self.child_stature_max:
            raise ValueError("synth.people: need 0 < child_stature_min < child_stature_max")
        if self.adult_stature_mean <= 0 or self.adult_stature_std < 0:
            raise ValueError("synth.people: adult stature mean must be > 0 and std >= 0")
        if self.min_distance < 300:
            raise ValueError("synth.people.min_distance must be >= 300 mm (bodies would overlap)")
        if not 0 < self.walk_speed_mean <= 3 or self.walk_speed_std < 0:
            raise ValueError("synth.people: walk_speed_mean in (0, 3] m/s, walk_speed_std >= 0")
        if not 0 < self.still_min <= self.still_max:
            raise ValueError("synth.people: need 0 < still_min <= still_max")
        weights = (self.stand_weight, self.gesture_weight, self.bend_weight, self.crouch_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("synth.people: activity weights must be >= 0 with a positive sum")


@dataclass(kw_only=True)
class DetectorConfig:
    """How the simulated 2D detector errs. Pixels are of a 1920-px-wide image (scaled)."""

    noise_px: float = 2.5  # std of the joint noise of a person 3 m away, px
    noise_per_m: float = 0.8  # extra std per metre of distance beyond 3 m, px
    occluded_noise_px: float = 9.0  # extra std on joints hidden by another person, px
    truncated_noise_px: float = 12.0  # extra std on joints outside the image, px
    visible_conf: float = 0.85  # mean confidence of a visible joint at 3 m
    conf_per_m: float = 0.02  # confidence lost per metre beyond 3 m
    occluded_conf: float = 0.35  # mean confidence of an occluded joint
    truncated_conf: float = 0.15  # mean confidence of a joint outside the image
    outlier_prob: float = 0.01  # per joint: a gross error (jumps to a nearby limb)
    outlier_px: float = 45.0  # size of such an error, px
    swap_prob: float = 0.02  # per person per view per frame: whole-body left/right swap
    leg_swap_prob: float = 0.02  # per person per view per frame: legs only swapped
    miss_prob: float = 0.03  # per person per view per frame: not detected
    occluded_miss_prob: float = 0.3  # extra miss probability x share of joints others hide
    event_frames: float = 4.0  # mean duration of a swap/miss episode, frames
    min_visible_joints: int = 5  # fewer visible joints in a view: the person is missed
    min_height_px: float = 40.0  # smaller people (bounding-box height) are missed, px
    false_positive_rate: float = 0.05  # spurious people per view per frame (Poisson mean)
    fp_conf_max: float = 0.5  # confidences of a spurious person are in [drop_conf, this]
    # People standing outside the capture space (rendered, detected, never in the GT 3D).
    outside_people: int = 1
    drop_conf: float = 0.1  # joints below this confidence are not reported (conf set to 0)

    def __post_init__(self) -> None:
        for name in ("noise_px", "noise_per_m", "occluded_noise_px", "truncated_noise_px",
                     "conf_per_m", "outlier_px", "false_positive_rate",
                     "min_height_px"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"synth.detector.{name} must be >= 0")
        for name in ("visible_conf", "occluded_conf", "truncated_conf", "outlier_prob",
                     "swap_prob", "leg_swap_prob", "miss_prob", "occluded_miss_prob",
                     "fp_conf_max", "drop_conf"):  # fmt: skip
            _check_range(f"detector.{name}", getattr(self, name), 0.0, 1.0)
        if self.event_frames < 1:
            raise ValueError("synth.detector.event_frames must be >= 1")
        if not 0 <= self.outside_people <= 4:
            raise ValueError("synth.detector.outside_people must be in [0, 4]")
        if not 1 <= self.min_visible_joints <= 15:
            raise ValueError("synth.detector.min_visible_joints must be in [1, 15]")
        if self.fp_conf_max < self.drop_conf:
            raise ValueError("synth.detector.fp_conf_max must be >= drop_conf")


@dataclass(kw_only=True)
class SynthConfig:
    seed: int = 0
    train_sequences: int = 4
    test_sequences: int = 2
    frames_per_sequence: int = 400
    fps: float = 10.0  # sampling rate of the written frames, Hz
    jpeg_quality: int = 90
    rig: RigConfig = field(default_factory=RigConfig)
    people: PeopleConfig = field(default_factory=PeopleConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    workers: int = 0  # generation processes; 0 = one per CPU core (does not change the data)

    def __post_init__(self) -> None:
        if self.train_sequences < 0 or self.test_sequences < 0:
            raise ValueError("synth.train_sequences and synth.test_sequences must be >= 0")
        if self.train_sequences + self.test_sequences == 0:
            raise ValueError("synth: at least one sequence is needed")
        if self.train_sequences > 100 or self.test_sequences > 100:
            raise ValueError("synth: at most 100 train and 100 test sequences")
        if self.frames_per_sequence < 1:
            raise ValueError("synth.frames_per_sequence must be >= 1")
        if not 1.0 <= self.fps <= 120.0:
            raise ValueError("synth.fps must be in [1, 120] Hz")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("synth.jpeg_quality must be in [1, 100]")
        if self.workers < 0:
            raise ValueError("synth.workers must be >= 0 (0 = one per CPU core)")
        room = 2 * self.people.walk_margin + self.people.min_distance
        if self.rig.space_size and min(self.rig.space_size[:2]) < room:
            raise ValueError(f"synth.rig.space_size: x and y must be >= {room:g} mm "
                             "(2 x people.walk_margin + people.min_distance)")  # fmt: skip
