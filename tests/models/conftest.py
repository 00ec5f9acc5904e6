"""A tiny calibrated rig for the model tests: cameras on a ring looking at the capture space.

Original images are 320 x 240 px; heatmaps 80 x 60 px; the affine from image to heatmap px
is the pixel-centre-preserving resize u' = (u + 0.5) / 4 - 0.5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from selfpose3d.models.voxel import CameraBatch

IMAGE_WH = (320, 240)
HEATMAP_WH = (80, 60)
RESIZE = np.array([[0.25, 0.0, -0.375], [0.0, 0.25, -0.375]])


def look_at(centre: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World -> camera rotation and translation (mm) of a camera at ``centre`` facing
    ``target`` with the world's z axis up (camera x right, y down, z forward)."""
    z = target - centre
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ centre


def make_rig(
    num_views: int = 3, seed: int = 0, batch: int = 1, distortion: bool = True
) -> tuple[CameraBatch, torch.Tensor]:
    """Cameras (B, V) around (0, 0, 900) mm at ~5 m and the image -> heatmap affines."""
    rng = np.random.default_rng(seed)
    Ks, dists, Rs, ts = [], [], [], []
    for v in range(num_views):
        azimuth = 2 * math.pi * v / num_views + rng.uniform(-0.3, 0.3)
        radius, height = rng.uniform(4500, 5500), rng.uniform(1500, 2500)
        centre = np.array([radius * math.cos(azimuth), radius * math.sin(azimuth), height])
        R, t = look_at(centre, np.array([0.0, 0.0, 900.0]) + rng.normal(0, 100, 3))
        f = rng.uniform(280, 320)
        Ks.append([[f, 0, 160 + rng.uniform(-5, 5)], [0, f, 120 + rng.uniform(-5, 5)], [0, 0, 1]])
        k = (
            [rng.uniform(-0.1, 0.0), rng.uniform(0.0, 0.05), 0.0, 0.0, 0.0]
            if distortion
            else [0.0] * 5
        )
        dists.append(k)
        Rs.append(R)
        ts.append(t)
    one = {
        "K": np.array(Ks),
        "dist": np.array(dists),
        "R": np.array(Rs),
        "t": np.array(ts),
        "size": np.array([IMAGE_WH] * num_views, dtype=float),
    }
    cams = CameraBatch.from_mapping({k: np.stack([v] * batch) for k, v in one.items()})
    affines = torch.as_tensor(RESIZE, dtype=torch.float32).expand(batch, num_views, 2, 3)
    return cams, affines.contiguous()


@pytest.fixture
def rig():
    return make_rig


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and when other processes load the
    machine, OpenMP barriers across 2 threads made these tests ~3x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
