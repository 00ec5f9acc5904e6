"""Off-the-shelf 2D multi-person keypoint detectors, and import of any detector's COCO output.

Pseudo 2D labels (DESIGN §3.4) come either from a detector run here or from a file a user
produced with any external detector:

- :class:`Detector`: ``detect(images) -> keypoints`` with RGB uint8 images (H, W, 3) in and,
  per image, (P, 17, 3) COCO-17 keypoints out: x px, y px (pixels of the given image, COCO /
  OpenCV convention: the centre of the top-left pixel is (0, 0)), confidence in [0, 1].
  :class:`KeypointRCNNDetector` is torchvision's Keypoint R-CNN (ResNet-50 FPN).
- :func:`read_coco_keypoints`: a COCO keypoints file (a results list plus the dataset file that
  names its images, or one dataset file with annotations) -> Panoptic-15 pseudo labels per
  sequence, camera and frame.

Weights are never downloaded: they come from a file the user names, or from torchvision's
cache where an earlier download left them. torch is imported on first use only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlparse

import numpy as np

from selfpose3d.data.pseudo_labels import PseudoLabels
from selfpose3d.skeleton import COCO17_JOINTS, coco17_to_panoptic15

if TYPE_CHECKING:
    import torch

NUM_COCO = len(COCO17_JOINTS)


class Detector(Protocol):
    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 images (H, W, 3) -> per image (P, 17, 3) float32: x px, y px, conf."""
        ...


# -- Keypoint R-CNN ---------------------------------------------------------------------------


def default_weights_path() -> Path:
    """Where torchvision caches its COCO keypoint weights: ``torch.hub.get_dir()/checkpoints``."""
    import torch
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights

    name = Path(urlparse(KeypointRCNN_ResNet50_FPN_Weights.DEFAULT.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def resolve_weights(weights: str | Path | None) -> Path:
    """The weights file to load: ``weights`` if given, else torchvision's cache file.

    Raises FileNotFoundError saying where to put the file; nothing is ever downloaded.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: Keypoint R-CNN weights file not found")
        return path
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights

    path = default_weights_path()
    if not path.is_file():
        url = KeypointRCNN_ResNet50_FPN_Weights.DEFAULT.url
        raise FileNotFoundError(
            f"Keypoint R-CNN weights not found: pass a state dict file (--weights PATH) or put "
            f"torchvision's COCO keypoint weights at {path}; nothing is downloaded here, so "
            f"fetch {url} on a machine with internet access and copy the file over")
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict file (plain, or under a "model"/"state_dict" key) -> the state dict."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: weights file not found") from None
    except Exception as e:  # torch.load raises many types (pickle, zip, EOF) on a foreign file
        raise ValueError(f"{path}: not a PyTorch state dict file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e  # fmt: skip
    if isinstance(obj, dict):
        obj = obj.get("model", obj.get("state_dict", obj))
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    return obj


def _apply_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path
                      ) -> None:  # fmt: skip
    import torch
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights

    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit Keypoint R-CNN ResNet-50 FPN "
                         f"({str(e).splitlines()[-1].strip()})") from e  # fmt: skip
    # torchvision's own weights come from a FrozenBatchNorm model, which has no batch counter.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: not Keypoint R-CNN ResNet-50 FPN weights ({len(missing)} "
                         f"missing keys, e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. "
                         f"{unexpected[:2]})")  # fmt: skip
    if path.name == Path(urlparse(KeypointRCNN_ResNet50_FPN_Weights.COCO_V1.url).path).name:
        # torchvision evaluates these weights with batch-norm eps 0 (its overwrite_eps).
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 0.0


def _check_args(score_threshold: float, min_size: int, max_size: int, max_people: int) -> None:
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if not 32 <= min_size <= max_size:
        raise ValueError(f"need 32 <= min_size <= max_size px, got {min_size}, {max_size}")
    if max_people < 1:
        raise ValueError(f"max_people must be >= 1, got {max_people}")


class KeypointRCNNDetector:
    """torchvision's Keypoint R-CNN (ResNet-50 FPN, COCO-17 keypoints).

    ``weights``: a state dict file (``torch.load(..., weights_only=True)``); None = torchvision's
    cache file (:func:`default_weights_path`). ``random_init=True`` skips loading: the weights
    are drawn from a fixed seed, so every process builds the same model (tests, plumbing).
    Images are resized so that their short side is ``min_size`` px (long side at most
    ``max_size``) inside the model; outputs are in pixels of the given images.

    Confidence of a keypoint = sigmoid(heatmap logit at the keypoint) x person score. The
    logit is what torchvision reports as ``keypoints_scores``; the sigmoid maps it to [0, 1]
    monotonically without depending on the other people or joints of the image (a softmax
    over the heatmap would, and a per-image normalisation would make confidences of
    different images incomparable). People whose score is not above ``score_threshold`` are
    dropped before the keypoint head runs; at most ``max_people`` are kept per image.
    """

    def __init__(self, weights: str | Path | None = None, *, device: str = "cpu",
                 score_threshold: float = 0.7, min_size: int = 800, max_size: int = 1333,
                 max_people: int = 20, random_init: bool = False) -> None:  # fmt: skip
        import torch
        from torchvision.models.detection import keypointrcnn_resnet50_fpn

        _check_args(score_threshold, min_size, max_size, max_people)
        if random_init and weights is not None:
            raise ValueError("pass weights or random_init=True, not both")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine")
        path = None if random_init else resolve_weights(weights)
        # Read first: a wrong file fails before the model is built.
        state = None if path is None else _read_state_dict(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = keypointrcnn_resnet50_fpn(
                weights=None, weights_backbone=None, min_size=min_size, max_size=max_size,
                box_score_thresh=score_threshold, box_detections_per_img=max_people,
            )  # fmt: skip
        if path is not None:
            _apply_state_dict(model, state, path)
        self.model = model.eval().to(self.device)
        self.weights = "random" if path is None else str(path)

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 images (H, W, 3), one batch -> per image (P, 17, 3) float32 x, y px, conf."""
        import torch

        if not images:
            return []
        tensors = []
        for i, img in enumerate(images):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"image {i}: expected RGB uint8 (H, W, 3), got {img.dtype} "
                                 f"{img.shape}")  # fmt: skip
            # Move uint8 (4x fewer bytes than float) and convert on the device.
            t_HWC = torch.from_numpy(np.ascontiguousarray(img)).to(self.device)
            tensors.append(t_HWC.permute(2, 0, 1).float().div_(255.0))
        with torch.inference_mode():
            outputs = self.model(tensors)
        result = []
        for out in outputs:
            conf_PK = torch.sigmoid(out["keypoints_scores"]) * out["scores"][:, None]
            kp_PK3 = torch.cat([out["keypoints"][..., :2], conf_PK[..., None]], dim=-1)
            result.append(kp_PK3.float().cpu().numpy())
        return result


@dataclass(kw_only=True)
class DetectorConfig:
    """How to build a detector, e.g. in another process (plain values, picklable)."""

    kind: Literal["keypointrcnn"] = "keypointrcnn"
    weights: str | None = None  # state dict file; None = the torchvision cache file
    random_init: bool = False
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    score_threshold: float = 0.7  # person score in [0, 1]
    min_size: int = 800  # px, short side of the image inside the model
    max_size: int = 1333  # px, long side at most
    max_people: int = 20  # per image

    def __post_init__(self) -> None:
        if self.kind != "keypointrcnn":
            raise ValueError(f"unknown detector {self.kind!r} (available: keypointrcnn)")
        _check_args(self.score_threshold, self.min_size, self.max_size, self.max_people)


def build_detector(cfg: DetectorConfig) -> Detector:
    # One explicit mapping from the config's choice to a class (kind is a Literal).
    return KeypointRCNNDetector(
        cfg.weights, device=cfg.device, score_threshold=cfg.score_threshold,
        min_size=cfg.min_size, max_size=cfg.max_size, max_people=cfg.max_people,
        random_init=cfg.random_init,
    )  # fmt: skip


# -- COCO keypoints import --------------------------------------------------------------------

# Panoptic layout ``[.../]<seq>/hdImgs/<cam>/<cam>_<frame>.jpg`` (the sequence is optional) and
# ``<cam>/<frame>.jpg``; searched in the file name with "/" separators.
DEFAULT_CAMERA_FRAME = (r"(?:^|/)(?:(?P<sequence>[^/]+)/hdImgs/)?(?P<camera>[^/]+)/"
                        r"(?:(?P=camera)_)?(?P<frame>\d+)\.(?i:jpe?g|png)$")  # fmt: skip


@dataclass(kw_only=True)
class CocoSequence:
    """Imported pseudo labels of one sequence."""

    labels: PseudoLabels  # frame -> camera -> (P, 15, 3) float32: x px, y px, conf
    # camera -> (width, height) px of the images the detector saw, where the file says so.
    image_size: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Image:
    sequence: str | None
    camera: str
    frame: int
    size: tuple[int, int] | None
    where: str  # "<file>: images[i]", for messages


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {what} is not valid JSON ({e})") from e


def _compile_pattern(camera_frame: str | re.Pattern[str] | None) -> re.Pattern[str]:
    if camera_frame is None:
        return re.compile(DEFAULT_CAMERA_FRAME)
    try:
        pattern = re.compile(camera_frame)
    except re.error as e:
        raise ValueError(f"camera/frame pattern {camera_frame!r} is not a regular expression "
                         f"({e})") from e  # fmt: skip
    if not {"camera", "frame"} <= set(pattern.groupindex):
        raise ValueError(f"camera/frame pattern {pattern.pattern!r} needs the named groups "
                         f"(?P<camera>...) and (?P<frame>...)")  # fmt: skip
    return pattern


def _parse_image(entry: Any, where: str, pattern: re.Pattern[str]) -> tuple[Any, _Image]:
    """One COCO ``images`` entry -> (its id, camera/frame/size); explicit fields win."""
    if not isinstance(entry, dict) or "id" not in entry:
        raise ValueError(f"{where}: an image entry must be an object with an 'id'")
    fields = {k: entry[k] for k in ("sequence", "camera", "frame") if k in entry}
    if not {"camera", "frame"} <= set(fields):
        name = entry.get("file_name")
        if not isinstance(name, str):
            raise ValueError(f"{where}: no 'file_name' (nor 'camera' and 'frame' fields)")
        match = pattern.search(name.replace("\\", "/"))
        if match is None:
            raise ValueError(f"{where}: file_name {name!r} does not match the camera/frame "
                             f"pattern {pattern.pattern!r}; pass a pattern with named groups "
                             f"camera and frame, or give the image 'camera' and 'frame' "
                             f"fields")  # fmt: skip
        parsed = {k: v for k, v in match.groupdict().items() if v is not None}
        fields = {**parsed, **fields}
    frame = fields["frame"]
    if isinstance(frame, str) and frame.isdigit():
        frame = int(frame)
    if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
        raise ValueError(f"{where}: frame must be a non-negative integer, got {frame!r}")
    camera, sequence = fields["camera"], fields.get("sequence")
    if not isinstance(camera, str) or not camera or not isinstance(sequence, str | None):
        raise ValueError(f"{where}: camera and sequence must be non-empty strings")
    size = None
    if "width" in entry or "height" in entry:
        w, h = entry.get("width"), entry.get("height")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            raise ValueError(f"{where}: width and height must be positive integers, got "
                             f"{w!r}, {h!r}")  # fmt: skip
        size = (w, h)
    return entry["id"], _Image(sequence=sequence, camera=camera, frame=frame, size=size,
                               where=where)  # fmt: skip


def _parse_people(entries: list[Any], path: Path, key: str, index: dict[Any, int]
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Annotation / result entries -> (image index (N,), COCO-17 keypoints (N, 17, 3))."""
    image_idx, kps, scores, kp_scores, has_kp_scores = [], [], [], [], []
    for j, a in enumerate(entries):
        where = f"{path}: {key}[{j}]"
        if not isinstance(a, dict) or "image_id" not in a or "keypoints" not in a:
            raise ValueError(f"{where}: an entry must be an object with 'image_id' and "
                             f"'keypoints'")  # fmt: skip
        if a["image_id"] not in index:
            raise ValueError(f"{where}: image_id {a['image_id']!r} is not in the images list")
        k, s, ks = a["keypoints"], a.get("score", 1.0), a.get("keypoint_scores")
        if not isinstance(k, list) or len(k) != 3 * NUM_COCO:
            raise ValueError(f"{where}: 'keypoints' must be a list of {3 * NUM_COCO} numbers "
                             f"(x, y, v for the 17 COCO joints)")  # fmt: skip
        if ks is not None and (not isinstance(ks, list) or len(ks) != NUM_COCO):
            raise ValueError(f"{where}: 'keypoint_scores' must be a list of {NUM_COCO} numbers")
        if not isinstance(s, int | float) or isinstance(s, bool):
            raise ValueError(f"{where}: 'score' must be a number, got {s!r}")
        image_idx.append(index[a["image_id"]])
        kps.append(k)
        scores.append(s)
        kp_scores.append(ks if ks is not None else [0.0] * NUM_COCO)
        has_kp_scores.append(ks is not None)
    try:
        kp_N51 = np.array(kps, dtype=np.float64).reshape(-1, NUM_COCO, 3)
        ks_NK = np.array(kp_scores, dtype=np.float64).reshape(-1, NUM_COCO)
    except (TypeError, ValueError) as e:
        bad = next(j for j, a in enumerate(entries)
                   if not all(isinstance(v, int | float) and not isinstance(v, bool)
                              for v in a["keypoints"] + (a.get("keypoint_scores") or [])))
        raise ValueError(f"{path}: {key}[{bad}]: keypoints and keypoint_scores must be "
                         f"numbers ({e})") from e  # fmt: skip
    score_N = np.array(scores, dtype=np.float64)
    finite_N = (np.isfinite(kp_N51).all(axis=(1, 2)) & np.isfinite(ks_NK).all(axis=1)
                & np.isfinite(score_N))  # fmt: skip
    if not finite_N.all():
        raise ValueError(f"{path}: {key}[{int(np.flatnonzero(~finite_N)[0])}]: NaN or inf in "
                         f"keypoints or scores")  # fmt: skip
    # Detectors' heatmap scores can leave [0, 1] a little; confidences are clipped into it.
    from_v_NK = (kp_N51[..., 2] > 0) * np.clip(score_N, 0.0, 1.0)[:, None]
    conf_NK = np.where(np.array(has_kp_scores)[:, None], np.clip(ks_NK, 0.0, 1.0), from_v_NK)
    coco_NK3 = np.concatenate([kp_N51[..., :2], conf_NK[..., None]], axis=-1)
    return np.array(image_idx, dtype=np.int64), coco_NK3.astype(np.float32)


def read_coco_keypoints(path: str | Path, *, images: str | Path | None = None,
                        camera_frame: str | re.Pattern[str] | None = None
                        ) -> dict[str | None, CocoSequence]:  # fmt: skip
    """Read COCO keypoints of any detector -> {sequence: CocoSequence} in Panoptic-15.

    ``path`` is either a COCO results list (``[{"image_id", "keypoints": [51], "score"}]``,
    with ``images`` the dataset file whose "images" map ids to ``file_name``) or a dataset file
    with "images" and "annotations" (annotations may carry "score"). Each image's camera and
    frame (and optionally sequence) come from its "camera"/"frame"/"sequence" fields if present,
    else from ``camera_frame``, a regex searched in ``file_name`` with named groups ``camera``
    and ``frame`` (and optionally ``sequence``); the default matches the Panoptic layout
    ``[<seq>/hdImgs/]<cam>/<cam>_<frame:08d>.jpg`` and ``<cam>/<frame>.jpg``. Images whose
    sequence is not known are under the key None.

    Keypoint confidence: "keypoint_scores" (17 values) if present, else the visibility flag v
    (0 -> 0, > 0 -> 1) times the person "score" (1 when absent); clipped to [0, 1]. COCO-17 is
    mapped to Panoptic-15 by :func:`coco17_to_panoptic15` (neck and mid-hip derived). Every
    listed image is labelled: one without entries has no people. Coordinates stay in pixels of
    the images the detector saw ("width"/"height" of the image entry, where given).
    Raises ValueError naming the file and the entry on any malformed entry.
    """
    path = Path(path)
    pattern = _compile_pattern(camera_frame)
    data = _load_json(path, "COCO keypoints file")
    if isinstance(data, list):
        if images is None:
            raise ValueError(f"{path}: a COCO results list needs the dataset file that maps "
                             f"its image_id to file_name (images=..., --coco-images FILE)")
        images_path = Path(images)
        dataset = _load_json(images_path, "COCO dataset file")
        people, people_key = data, "results"
    elif isinstance(data, dict) and "images" in data and "annotations" in data:
        if images is not None:
            raise ValueError(f"{path}: is a COCO dataset file with its own images; images= "
                             f"(--coco-images) is only for a results list")  # fmt: skip
        images_path, dataset = path, data
        people, people_key = data["annotations"], "annotations"
    else:
        raise ValueError(f"{path}: expected a COCO results list or a dataset file with "
                         f"'images' and 'annotations'")  # fmt: skip
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise ValueError(f"{images_path}: COCO dataset file has no 'images' list")
    if not isinstance(people, list):
        raise ValueError(f"{path}: '{people_key}' must be a list")

    index: dict[Any, int] = {}
    table: list[_Image] = []
    seen: dict[tuple[str | None, str, int], str] = {}
    for i, entry in enumerate(dataset["images"]):
        image_id, image = _parse_image(entry, f"{images_path}: images[{i}]", pattern)
        if image_id in index:
            raise ValueError(f"{image.where}: image id {image_id!r} appears twice")
        key = (image.sequence, image.camera, image.frame)
        if key in seen:
            raise ValueError(f"{image.where}: camera {image.camera!r} frame {image.frame} is "
                             f"also {seen[key].split(': ')[-1]}")  # fmt: skip
        seen[key] = image.where
        index[image_id] = len(table)
        table.append(image)

    image_idx_N, coco_NK3 = _parse_people(people, path, people_key, index)
    poses_N = coco17_to_panoptic15(coco_NK3)
    order = np.argsort(image_idx_N, kind="stable")
    bounds = np.searchsorted(image_idx_N[order], np.arange(len(table) + 1))
    out: dict[str | None, CocoSequence] = {}
    for i, image in enumerate(table):
        seq = out.setdefault(image.sequence, CocoSequence(labels={}))
        seq.labels.setdefault(image.frame, {})[image.camera] = poses_N[
            order[bounds[i] : bounds[i + 1]]
        ]
        if image.size is not None:
            known = seq.image_size.setdefault(image.camera, image.size)
            if known != image.size:
                raise ValueError(f"{image.where}: image is {image.size[0]}x{image.size[1]} px, "
                                 f"other images of camera {image.camera!r} are "
                                 f"{known[0]}x{known[1]}")  # fmt: skip
    return out
