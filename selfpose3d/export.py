"""Export a trained model for inference without the training code.

:func:`export_model` writes, into one directory:

- the networks that hold weights, each as TorchScript (``torch.jit.trace``, ``<name>.pt``,
  the default) or as a ``torch.export`` program (``<name>.pt2``): ``root_v2v`` and
  ``pose_v2v`` (root_net's and pose_net's V2V), and in ``images`` input mode
  ``heatmap_net_2d`` (images -> heatmaps) and, when the model has one, ``attention_net_2d``
  (a training aid: :meth:`ExportedModel.predict` does not use it);
- ``geometry.json``: every model setting the geometry needs (capture space, voxel bins, pose
  cube, soft-argmax beta, image and heatmap sizes, heatmap sigma, proposal threshold, max
  people, input mode, joint names, image normalisation) and the files written. It is
  written last, so a directory with a geometry.json is a complete export.

:class:`ExportedModel` loads such a directory and runs the full inference (heatmaps -> root
cube -> proposals -> poses): the networks are the exported ones, the geometry between them
is plain code from :mod:`selfpose3d.geometry` and :mod:`selfpose3d.models.voxel` /
``root_net`` / ``pose_net`` / ``heatmaps`` (projection, sampling, NMS, soft-argmax). It
imports neither ``selfpose3d.training`` nor ``selfpose3d.losses`` nor the model classes.

TorchScript is deprecated in torch 2.x (``torch.jit.trace`` warns) but works in the torch
this project pins; the ``torch_export`` format is the forward-compatible alternative.

Frames and units are the model's: world mm (z up), original image px (OpenCV convention),
heatmap px. Shape legend: B samples, V views, J joints, P people, (H, W) network input px,
(h, w) heatmap px, K = max_people proposals, (X, Y, Z) voxels.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from selfpose3d.geometry import affine
from selfpose3d.geometry.camera import Camera, stack_cameras
from selfpose3d.io import atomic_write_bytes, atomic_write_json
from selfpose3d.models.config import ADDED_FIELDS
from selfpose3d.models.heatmaps import render_heatmaps
from selfpose3d.models.output import ModelOutput
from selfpose3d.models.pose_net import pose_cubes, soft_argmax
from selfpose3d.models.root_net import nms_topk, subvoxel_offsets
from selfpose3d.models.voxel import (
    CameraBatch,
    SpaceProjector,
    voxel_axes,
)
from selfpose3d.skeleton import NUM_JOINTS, PANOPTIC15_JOINTS, ROOT_INDEX

if TYPE_CHECKING:
    from selfpose3d.models.config import ModelConfig
    from selfpose3d.models.model import SelfPose3dModel

ExportFormat = Literal["torchscript", "torch_export"]
EXPORT_VERSION = 1
GEOMETRY_FILE = "geometry.json"
_SUFFIX: dict[str, str] = {"torchscript": ".pt", "torch_export": ".pt2"}
# Exported name -> the sub-module of SelfPose3dModel it comes from.
_NETWORKS = {
    "root_v2v": "root_net.v2v",
    "pose_v2v": "pose_net.v2v",
    "heatmap_net_2d": "heatmap_net_2d",
    "attention_net_2d": "attn_net_2d",
}
_GEOMETRY_KEYS = (
    "input_mode", "image_size", "heatmap_size", "heatmap_sigma", "space_size", "space_center",
    "root_bins", "pose_cube_size", "pose_cube_offset", "pose_bins", "beta", "max_people",
    "proposal_threshold", "root_refine", "projection_cache_size",
)  # fmt: skip

Cameras = CameraBatch | Mapping[str, Any]


# -- export ------------------------------------------------------------------------------------


def geometry_of(cfg: ModelConfig) -> dict[str, Any]:
    """The model settings the exported inference needs, as plain JSON values."""
    from selfpose3d.data.augment import IMAGENET_MEAN, IMAGENET_STD

    geometry = {k: getattr(cfg, k) for k in _GEOMETRY_KEYS}
    geometry.update({k: list(v) for k, v in geometry.items() if isinstance(v, (list, tuple))})
    geometry["joints"] = list(PANOPTIC15_JOINTS)
    geometry["image_mean"] = list(IMAGENET_MEAN)  # RGB in [0, 1], images mode
    geometry["image_std"] = list(IMAGENET_STD)
    return geometry


def _example_inputs(name: str, cfg: ModelConfig) -> torch.Tensor:
    """A batch of 2 (batch size 1 and 0 are special-cased by torch.export)."""
    gen = torch.Generator().manual_seed(0)
    if name == "root_v2v":
        return torch.rand(2, 1, *cfg.root_bins, generator=gen)
    if name == "pose_v2v":
        return torch.rand(2, NUM_JOINTS, *cfg.pose_bins, generator=gen)
    w, h = cfg.image_size
    return torch.randn(2, 3, h, w, generator=gen)


def _serialise(module: torch.nn.Module, example: torch.Tensor, fmt: ExportFormat) -> bytes:
    buffer = io.BytesIO()
    if fmt == "torchscript":
        with warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.export, and still the format that
            # every torch release and libtorch (C++) load: the default, deliberately.
            warnings.filterwarnings("ignore", category=FutureWarning)
            # V2V pads cubes whose sides are not multiples of 4: the trace keeps the padding
            # of the config's cube sizes, the only sizes these networks ever see.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(traced, buffer)
    elif fmt == "torch_export":
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        with warnings.catch_warnings():
            # The V2V weights are channels_last, i.e. not contiguous: torch.export.save warns
            # and stores their storage range instead, which is exact for CPU weights.
            warnings.filterwarnings("ignore", message="No complete tensor found")
            torch.export.save(program, buffer)
    else:
        raise ValueError(f"format must be one of {sorted(_SUFFIX)}, got {fmt!r}")
    return buffer.getvalue()


def export_loaded_model(
    model: SelfPose3dModel,
    out_dir: Path | str,
    *,
    format: ExportFormat = "torchscript",
    source: str | None = None,
) -> Path:
    """Export the networks of ``model`` (traced in eval mode, on CPU) and geometry.json into
    ``out_dir``; returns ``out_dir``. ``source`` (e.g. the checkpoint) is recorded."""
    if format not in _SUFFIX:
        raise ValueError(f"format must be one of {sorted(_SUFFIX)}, got {format!r}")
    out = Path(out_dir)
    cfg = model.cfg
    was_training = model.training
    model.eval()
    files: dict[str, str] = {}
    try:
        for name, attr in _NETWORKS.items():
            module = _submodule(model, attr)
            if module is None:  # e.g. no 2D network in pseudo_heatmaps mode
                continue
            original = next(module.parameters()).device
            module.cpu()
            try:
                with torch.no_grad():
                    data = _serialise(module, _example_inputs(name, cfg), format)
            finally:
                module.to(original)
            files[name] = f"{name}{_SUFFIX[format]}"
            atomic_write_bytes(out / files[name], data)
    finally:
        model.train(was_training)
    atomic_write_json(out / GEOMETRY_FILE, {
        "export_version": EXPORT_VERSION, "format": format, "files": files, "source": source,
        "torch_version": torch.__version__, "geometry": geometry_of(cfg),
    })  # fmt: skip
    return out


def _submodule(model: torch.nn.Module, attr: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(attr)
    except AttributeError:  # the attribute is None: the model was built without it
        return None


def export_model(
    checkpoint_dir: Path | str, out_dir: Path | str, *, format: ExportFormat = "torchscript"
) -> Path:
    """Export a trained model for :class:`ExportedModel`; returns ``out_dir``.

    checkpoint_dir: a run directory, its ``final/`` directory, a checkpoints directory or a
    checkpoint file (as ``selfpose3d evaluate --checkpoint`` takes).
    """
    from selfpose3d.training.evaluate import load_trained_model, resolve_checkpoint

    if format not in _SUFFIX:
        raise ValueError(f"format must be one of {sorted(_SUFFIX)}, got {format!r}")
    path = resolve_checkpoint(checkpoint_dir)
    model, _ = load_trained_model(path)
    return export_loaded_model(model, out_dir, format=format, source=str(path))


# -- inference -----------------------------------------------------------------------------------


# The model's own output type: the exported model returns the same fields.
ExportedOutput = ModelOutput


def _read_geometry(directory: Path) -> dict[str, Any]:
    path = directory / GEOMETRY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected a directory written by "
                                f"`selfpose3d export`)")  # fmt: skip
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("export_version") != EXPORT_VERSION:
        raise ValueError(f"{path}: not a selfpose3d export of version {EXPORT_VERSION}")
    geometry = meta.get("geometry")
    if isinstance(geometry, dict):
        meta["geometry"] = {**ADDED_FIELDS, **geometry}
    missing = [k for k in _GEOMETRY_KEYS if k not in meta.get("geometry", {})]
    if missing or meta.get("format") not in _SUFFIX or not isinstance(meta.get("files"), dict):
        raise ValueError(f"{path}: incomplete export description "
                         f"(missing {missing or 'format/files'})")  # fmt: skip
    return meta


def _load_network(path: Path, fmt: str, device: torch.device | str) -> Callable:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exported network not found")
    try:
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)  # see _serialise
                return torch.jit.load(str(path), map_location=device).eval()
        return torch.export.load(str(path)).module().to(device)
    except (RuntimeError, ValueError, OSError) as e:
        raise ValueError(f"{path}: cannot be loaded as a {fmt} network ({e})") from e


class ExportedModel:
    """Inference from an export directory: exported networks + the geometry in plain code.

    The same interface as ``SelfPose3dModel.predict``: cameras (CameraBatch or a mapping K,
    dist, R, t, size, (B, V, ...), original image px, world mm), affines (B, V, 2, 3)
    original px -> heatmap px, and per input mode images (B, V, 3, H, W) normalised, or
    pseudo 2D poses (B, V, P, J, 2) original px with weights (B, V, P, J).
    """

    def __init__(self, meta: dict[str, Any], networks: dict[str, Callable],
                 device: torch.device | str = "cpu") -> None:  # fmt: skip
        self.meta = meta
        self.geometry: dict[str, Any] = meta["geometry"]
        self.networks = networks
        self.device = torch.device(device)
        g = self.geometry
        self.input_mode: str = g["input_mode"]
        self.projector = SpaceProjector(
            g["space_center"],
            g["space_size"],
            g["root_bins"],
            cache_size=g["projection_cache_size"],
        ).to(self.device)
        step = [s / (n - 1) for s, n in zip(g["space_size"], g["root_bins"], strict=True)]
        origin = [c - s / 2 for c, s in zip(g["space_center"], g["space_size"], strict=True)]
        self.voxel_step = torch.tensor(step, device=self.device)  # (3,) mm
        self.origin = torch.tensor(origin, device=self.device)  # root voxel 0, mm
        # Pose-cube voxel centres relative to the root along each axis, mm.
        cube = (g["pose_cube_offset"], g["pose_cube_size"], g["pose_bins"])
        self.axes = voxel_axes(*cube, device=self.device)

    @classmethod
    def load(cls, directory: Path | str, device: torch.device | str = "cpu") -> ExportedModel:
        directory = Path(directory)
        meta = _read_geometry(directory)
        needed = ["root_v2v", "pose_v2v"]
        if meta["geometry"]["input_mode"] == "images":
            needed.append("heatmap_net_2d")
        absent = [n for n in needed if n not in meta["files"]]
        if absent:
            raise ValueError(f"{directory / GEOMETRY_FILE}: the export lacks {absent}")
        networks = {name: _load_network(directory / file, meta["format"], device)
                    for name, file in meta["files"].items()}  # fmt: skip
        return cls(meta, networks, device)

    # -- inputs --------------------------------------------------------------------------------

    def prepare_views(
        self, cameras: Sequence[Camera], images: Sequence[np.ndarray] | None = None
    ) -> tuple[CameraBatch, torch.Tensor, torch.Tensor | None]:
        """One frame's inputs: V cameras (at their images' size) and optionally V RGB uint8
        images -> cameras (1, V), affines (1, V, 2, 3) original px -> heatmap px (the resize
        to the network input, aspect kept, padded), images (1, V, 3, H, W) normalised."""
        g = self.geometry
        (W, H), (w, h) = g["image_size"], g["heatmap_size"]
        stacked = stack_cameras(list(cameras))
        cams = CameraBatch.from_mapping({k: v[None] for k, v in stacked.items()},
                                        device=self.device)  # fmt: skip
        to_input = np.stack([affine.get_resize_matrix((c.width, c.height), (W, H))
                             for c in cameras])  # fmt: skip
        to_heatmap = affine.compose_affine(affine.scale_affine(w / W, h / H), to_input)
        affines = torch.from_numpy(to_heatmap).to(self.device, torch.float32)[None]
        if images is None:
            return cams, affines, None
        if len(images) != len(cameras):
            raise ValueError(f"{len(images)} images for {len(cameras)} cameras")
        warped = np.stack([affine.warp_image(im, a, (W, H))
                           for im, a in zip(images, to_input, strict=True)])  # fmt: skip
        x = torch.from_numpy(warped).to(self.device).permute(0, 3, 1, 2).to(torch.float32) / 255
        mean = torch.tensor(g["image_mean"], device=self.device).view(3, 1, 1)
        std = torch.tensor(g["image_std"], device=self.device).view(3, 1, 1)
        return cams, affines, ((x - mean) / std)[None]

    # -- the pipeline -------------------------------------------------------------------------

    def _run_2d(self, name: str, images: torch.Tensor) -> torch.Tensor:
        if name not in self.networks:
            raise ValueError(f"this export has no {name} (input_mode={self.input_mode!r})")
        w, h = self.geometry["image_size"]
        if images.ndim != 5 or tuple(images.shape[2:]) != (3, h, w):
            raise ValueError(f"images: expected (B, V, 3, {h}, {w}), got {tuple(images.shape)}")
        out = self.networks[name](images.flatten(0, 1))
        return out.reshape(*images.shape[:2], *out.shape[1:])

    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, V, 3, H, W) normalised -> heatmaps (B, V, J, h, w)."""
        return self._run_2d("heatmap_net_2d", images)

    def attention(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, V, 3, H, W) -> attention maps (B, V, J, h, w) in (0, 1)."""
        return self._run_2d("attention_net_2d", images)

    def pseudo_heatmaps(
        self, joints: torch.Tensor, weights: torch.Tensor, affines: torch.Tensor
    ) -> torch.Tensor:
        """joints (B, V, P, J, 2) original px, weights (B, V, P, J), affines (B, V, 2, 3)
        -> Gaussian heatmaps (B, V, J, h, w), max over people."""
        flat = joints.reshape(*joints.shape[:2], -1, 2)
        points = affine.apply_affine(flat, affines.to(joints.dtype)).reshape(joints.shape)
        return render_heatmaps(points, weights.to(joints.dtype), self.geometry["heatmap_size"],
                               self.geometry["heatmap_sigma"], combine="max")  # fmt: skip

    def root_cube(
        self, root_heatmaps: torch.Tensor, cameras: CameraBatch, affines: torch.Tensor
    ) -> torch.Tensor:
        """root_heatmaps (B, V, 1, h, w) -> root likelihood (B, X, Y, Z)."""
        return self.networks["root_v2v"](self.projector(root_heatmaps, cameras, affines))[:, 0]

    def propose(self, cubes: torch.Tensor) -> torch.Tensor:
        """cubes (B, X, Y, Z) -> proposals (B, K, 5): x, y, z mm, score, flag."""
        g = self.geometry
        scores, index = nms_topk(cubes, g["max_people"])
        position = index.to(cubes.dtype)
        if g["root_refine"]:
            position = position + subvoxel_offsets(cubes, index)
        xyz = self.origin.to(cubes.dtype) + position * self.voxel_step.to(cubes.dtype)
        flag = (scores > g["proposal_threshold"]).to(cubes.dtype)
        return torch.cat([xyz, scores[..., None], flag[..., None]], dim=-1)

    def poses(
        self,
        heatmaps: torch.Tensor,
        proposals: torch.Tensor,
        cameras: CameraBatch,
        affines: torch.Tensor,
    ) -> torch.Tensor:
        """heatmaps (B, V, J, h, w), proposals (B, K, 5) -> poses (B, K, J, 3) mm: the flagged
        proposals' cubes (all in one V2V call) and their soft-argmax; other rows are 0."""
        b, k = proposals.shape[:2]
        sample, slot = torch.nonzero(proposals[..., 4] > 0.5, as_tuple=True)  # (M,), (M,)
        poses = heatmaps.new_zeros(b, k, heatmaps.shape[2], 3)
        if sample.numel() == 0:
            return poses
        roots = proposals[sample, slot, :3].to(heatmaps.dtype)  # (M, 3)
        # One version of the M people's views: (1, M, ...) in, (M, J, X, Y, Z) out.
        cubes = pose_cubes(heatmaps[sample][None], roots, self.axes, cameras[sample],
                           affines[sample][None])[0]  # fmt: skip
        out = self.networks["pose_v2v"](cubes)
        joints = roots[:, None, :] + soft_argmax(out, self.axes, self.geometry["beta"])
        return poses.index_put((sample, slot), joints)

    def predict(
        self,
        cameras: Cameras,
        affines: torch.Tensor,
        images: torch.Tensor | None = None,
        pseudo_joints: torch.Tensor | None = None,
        pseudo_weights: torch.Tensor | None = None,
    ) -> ExportedOutput:
        """Views -> heatmaps -> proposals -> poses (no gradients)."""
        with torch.inference_mode():
            affines = affines.to(self.device)
            if self.input_mode == "images":
                if images is None:
                    raise ValueError("input_mode 'images' needs images (B, V, 3, H, W)")
                heatmaps = self.heatmaps(images.to(self.device))
            else:
                if pseudo_joints is None or pseudo_weights is None:
                    raise ValueError("input_mode 'pseudo_heatmaps' needs pseudo_joints and "
                                     "pseudo_weights")  # fmt: skip
                heatmaps = self.pseudo_heatmaps(
                    pseudo_joints.to(self.device), pseudo_weights.to(self.device), affines
                )
            if not isinstance(cameras, CameraBatch):
                cameras = CameraBatch.from_mapping(cameras)
            cams = cameras.to(heatmaps.device, heatmaps.dtype)
            affines = affines.to(heatmaps.dtype)
            root_cubes = self.root_cube(heatmaps[:, :, ROOT_INDEX : ROOT_INDEX + 1], cams,
                                        affines)  # fmt: skip
            proposals = self.propose(root_cubes)
            poses = self.poses(heatmaps, proposals, cams, affines)
        return ExportedOutput(heatmaps=heatmaps, root_cubes=root_cubes, proposals=proposals,
                              poses=poses)  # fmt: skip
