"""Random but realistic camera rigs for the geometry tests."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from selfpose3d.geometry.camera import project_points

WIDTH, HEIGHT = 1920, 1080


def look_at_rotation(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera rotation of a camera at ``centre`` looking at ``target`` (z up world)."""
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def random_rig(rng: np.random.Generator, n_views: int) -> dict[str, np.ndarray]:
    """n_views HD cameras 3-4 m around the origin, Panoptic-like intrinsics and distortion.

    Returns K (V,3,3), dist (V,5), R (V,3,3), t (V,3) mm; R includes a small random
    Rodrigues perturbation so that no camera is exactly level.
    """
    az = rng.uniform(0, 2 * np.pi, n_views)
    dist_xy = rng.uniform(3000, 4000, n_views)
    centres = np.stack([dist_xy * np.cos(az), dist_xy * np.sin(az),
                        rng.uniform(800, 3000, n_views)], -1)  # fmt: skip
    targets = rng.normal(0, 200, (n_views, 3)) + [0, 0, 1000]
    R = np.stack([cv2.Rodrigues(rng.normal(0, 0.03, 3))[0] @ look_at_rotation(c, g)
                  for c, g in zip(centres, targets, strict=True)])  # fmt: skip
    t = -np.einsum("vij,vj->vi", R, centres)
    f = rng.uniform(1350, 1650, n_views)
    K = np.zeros((n_views, 3, 3))
    K[:, 0, 0], K[:, 1, 1] = f, f * rng.uniform(0.99, 1.01, n_views)
    K[:, 0, 2], K[:, 1, 2] = rng.uniform(930, 990, n_views), rng.uniform(510, 570, n_views)
    K[:, 2, 2] = 1.0
    dist = np.stack([rng.uniform(-0.29, -0.22, n_views), rng.uniform(0.16, 0.23, n_views),
                     rng.normal(0, 3e-4, n_views), rng.normal(0, 3e-4, n_views),
                     rng.uniform(-0.06, 0.06, n_views)], -1)  # fmt: skip
    return {"K": K, "dist": dist, "R": R, "t": t}


def random_points(rng: np.random.Generator, n: int, half_extent: float = 1500.0) -> np.ndarray:
    """(n, 3) world mm in a (2 half_extent)^2 x 2 m capture volume standing on the floor."""
    return np.stack([rng.uniform(-half_extent, half_extent, n),
                     rng.uniform(-half_extent, half_extent, n),
                     rng.uniform(0, 2000, n)], -1)  # fmt: skip


def visible_points(rng: np.random.Generator, rig: dict[str, np.ndarray], n: int) -> np.ndarray:
    """(n, 3) world mm in the capture volume that every camera sees (20 px from the border)."""
    X = random_points(rng, 20 * n, half_extent=1200.0)
    uv = project_points(X, rig["K"], rig["dist"], rig["R"], rig["t"])  # (V, 20 n, 2)
    inside = ((uv >= 20) & (uv < [WIDTH - 20, HEIGHT - 20])).all(-1).all(0)
    assert inside.sum() >= n, "the test rig sees too little of the capture volume"
    return X[inside][:n]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def make_rig() -> Callable[[np.random.Generator, int], dict[str, np.ndarray]]:
    return random_rig


@pytest.fixture
def make_points() -> Callable[..., np.ndarray]:
    return random_points


@pytest.fixture
def make_visible_points() -> Callable[..., np.ndarray]:
    return visible_points
