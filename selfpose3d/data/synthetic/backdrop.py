"""Static backgrounds: the floor and surroundings of a rig seen through one camera.

Every pixel's viewing ray (lens distortion inverted) is intersected with the scene of the
rig (floor plane z = 0 plus the dome sphere, the room's walls and ceiling, or the outdoor
horizon) and the hit point is given a procedural texture: floor tiles, wooden planks or
paving, dome panels, painted walls with a door, sky and trees. Texture contrast fades where
a pixel covers many texture periods, which keeps distant tiles from aliasing. Computed once
per camera per sequence (the surroundings do not move).

Units: mm (model frame, z up); images are BGR uint8 of the camera's size.
"""

from __future__ import annotations

import numpy as np

from selfpose3d.data.synthetic.rigs import Environment
from selfpose3d.geometry.camera import Camera


def _hash(i: np.ndarray, j: np.ndarray, seed: float) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell (i, j)."""
    x = np.sin(i * 12.9898 + j * 78.233 + seed * 37.719) * 43758.5453
    return x - np.floor(x)


def pixel_rays(cam: Camera) -> np.ndarray:
    """(H, W, 3) unit viewing rays in world coordinates of every pixel centre of ``cam``."""
    u, v = np.meshgrid(np.arange(cam.width, dtype=np.float64), np.arange(cam.height))
    xd = (u - cam.K[0, 2] - cam.K[0, 1] / cam.K[1, 1] * (v - cam.K[1, 2])) / cam.K[0, 0]
    yd = (v - cam.K[1, 2]) / cam.K[1, 1]
    k1, k2, p1, p2, k3 = cam.dist
    x, y = xd.copy(), yd.copy()
    for _ in range(12):  # fixed-point inversion of the distortion model
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x, y = (xd - dx) / radial, (yd - dy) / radial
    d = np.stack([x, y, np.ones_like(x)], -1) @ cam.R  # camera -> world: R^T d
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _fade(pattern: np.ndarray, footprint: np.ndarray, period: float) -> np.ndarray:
    """Blend a [0, 1] pattern toward its mean 0.5 where a pixel spans > 1/3 of a period."""
    keep = np.clip(1.5 - 3.0 * footprint / period, 0.0, 1.0)
    return 0.5 + (pattern - 0.5) * keep


def _lines(coord: np.ndarray, period: float, width: float) -> np.ndarray:
    """1 on thin lines every ``period`` mm (seams, grout), 0 elsewhere."""
    frac = np.abs((coord / period + 0.5) % 1.0 - 0.5) * period
    return (frac < width / 2).astype(np.float64)


def footprint_of(s: np.ndarray, d: np.ndarray, cam: Camera) -> np.ndarray:
    """Approximate size (mm) of a pixel's footprint at distance ``s`` on a grazing surface."""
    return np.minimum(s, 1e6) / cam.K[0, 0] / np.maximum(np.abs(d[..., 2]), 0.05)


def _mix(a, b, w):
    return a * (1 - w[..., None]) + np.asarray(b) * w[..., None]


def render_background(env: Environment, cam: Camera, rng: np.random.Generator,
                      style: np.ndarray) -> np.ndarray:  # fmt: skip
    """(H, W, 3) uint8 BGR image of the empty scene as ``cam`` sees it.

    ``style`` (4,) = texture seed and BGR colour balance of the sequence, the same for all
    cameras (they film one scene); ``rng`` adds the camera's own small colour and noise.
    """
    d = pixel_rays(cam)
    c = cam.center
    seed, tint = float(style[0]), style[1:] * rng.uniform(0.97, 1.03, size=3)
    hit_floor = np.where(d[..., 2] < -1e-6, -c[2] / np.minimum(d[..., 2], -1e-6), np.inf)
    s_wall, wall_rgb = _surroundings(env, c, d, seed, cam)
    floor = hit_floor < s_wall
    s = np.where(floor, hit_floor, s_wall)
    p = c + d * np.minimum(s, 1e6)[..., None]
    footprint = footprint_of(s, d, cam)
    img = np.where(floor[..., None], _floor(env, p, footprint, seed), wall_rgb)
    # Lens vignetting and static sensor noise.
    h, w = cam.height, cam.width
    yy, xx = np.mgrid[0:h, 0:w]
    rr = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img = img * tint * (1.0 - 0.12 * rr)[..., None] + rng.normal(0, 1.0, size=(h, w, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def sequence_style(rng: np.random.Generator) -> np.ndarray:
    """(4,) texture seed and colour balance of one sequence's surroundings."""
    return np.concatenate([[rng.uniform(0, 100)], rng.uniform(0.9, 1.1, size=3)])


def _floor(env: Environment, p: np.ndarray, footprint: np.ndarray, seed: float) -> np.ndarray:
    x, y = p[..., 0], p[..., 1]
    if env.kind == "room":  # wooden planks, 180 mm wide, staggered joints
        row = np.floor(y / 180.0)
        col = np.floor((x + _hash(row, row, seed) * 1200) / 1200.0)
        grain = 0.35 + 0.4 * _hash(row, col, seed) + 0.1 * np.sin(x / 23.0 + row)
        shade = _fade(grain, footprint, 180)
        base = _mix(np.array([40.0, 80, 125]), [95, 150, 200], shade)  # BGR browns
        seams = np.maximum(_lines(y, 180.0, 6.0), _lines(x + _hash(row, row, seed) * 1200, 1200, 6))
        return _mix(base, [25, 45, 70], _fade(seams, footprint, 180) * 0.8)
    if env.kind == "dome":  # light grey tiles with dark grout, slightly tinted per sequence
        tile = 600.0
        i, j = np.floor(x / tile), np.floor(y / tile)
        shade = _fade(0.4 + 0.2 * ((i + j) % 2) + 0.2 * _hash(i, j, seed), footprint, tile)
        base = _mix(np.array([120.0, 125, 130]), [200, 205, 210], shade)
        grout = _fade(np.maximum(_lines(x, tile, 12), _lines(y, tile, 12)), footprint, tile)
        return _mix(base, [60, 60, 65], grout * 0.9)
    r = np.hypot(x, y)  # outdoor: paving stones in the square, grass beyond
    i, j = np.floor(x / 450.0), np.floor(y / 450.0)
    stone = _fade(0.3 + 0.5 * _hash(i, j, seed), footprint, 450)
    paving = _mix(np.array([110.0, 130, 140]), [170, 185, 195], stone)
    paving = _mix(paving, [70, 80, 85], _fade(np.maximum(_lines(x, 450, 15), _lines(y, 450, 15)),
                                              footprint, 450) * 0.8)  # fmt: skip
    blades = _fade(_hash(np.floor(x / 60), np.floor(y / 60), seed), footprint, 60)
    grass = _mix(np.array([30.0, 90, 45]), [60, 150, 90], blades)
    return np.where((r < 9000)[..., None], paving, grass)


def _surroundings(env: Environment, c, d, seed: float, cam: Camera):
    """(distance along each ray to the walls/sky (H, W), their colour (H, W, 3))."""
    if env.kind == "dome":
        oc = c - np.asarray(env.center)
        b = d @ oc
        s = -b + np.sqrt(np.maximum(b * b - (oc @ oc - env.radius**2), 0.0))
        q = oc + d * s[..., None]  # relative to the sphere centre
        az = np.arctan2(q[..., 1], q[..., 0])
        el = np.arcsin(np.clip(q[..., 2] / env.radius, -1, 1))
        band = np.floor(el / 0.2)
        cols = 24.0
        col = np.floor(az / (2 * np.pi) * cols + 0.5 * (band % 2))
        shade = 0.55 + 0.3 * _hash(band, col, seed)
        panel = _mix(np.array([150.0, 150, 150]), [225, 228, 230], shade)
        fa = (az / (2 * np.pi) * cols + 0.5 * (band % 2)) % 1.0
        fe = (el / 0.2) % 1.0
        seam = (np.minimum(fa, 1 - fa) < 0.03) | (np.minimum(fe, 1 - fe) < 0.04)
        dot = (np.hypot(fa - 0.5, (fe - 0.5) * 0.5) < 0.05) & (_hash(col, band, seed) < 0.6)
        panel = _mix(panel, [70, 70, 75], seam.astype(np.float64))
        return s, _mix(panel, [30, 30, 30], dot.astype(np.float64))
    if env.kind == "room":
        s = np.full(d.shape[:2], np.inf)
        which = np.zeros(d.shape[:2], dtype=int)
        for k, (axis, bound) in enumerate(((0, env.half_x), (0, -env.half_x), (1, env.half_y),
                                           (1, -env.half_y), (2, env.height))):  # fmt: skip
            with np.errstate(divide="ignore", invalid="ignore"):
                sk = (bound - c[axis]) / d[..., axis]
            sk = np.where(sk > 0, sk, np.inf)
            which = np.where(sk < s, k, which)
            s = np.minimum(s, sk)
        q = c + d * np.minimum(s, 1e6)[..., None]
        hue = np.array([[190.0, 200, 215], [200, 205, 190], [215, 200, 185], [185, 210, 200],
                        [235, 235, 235]])[which]  # fmt: skip
        along = np.where(which < 2, q[..., 1], q[..., 0])
        plaster = _hash(np.floor(along / 40), np.floor(q[..., 2] / 40), seed)
        wall = hue * (0.85 + 0.15 * _fade(plaster, footprint_of(s, d, cam), 40))[..., None]
        door = (which == 2) & (np.abs(along - 800) < 450) & (q[..., 2] < 2100)
        window = (which == 0) & (np.abs(along) < 900) & (q[..., 2] > 900) & (q[..., 2] < 2100)
        skirting = (which < 4) & (q[..., 2] < 100)
        wall = _mix(wall, [60, 90, 120], door.astype(np.float64))
        wall = _mix(wall, [250, 235, 215], window.astype(np.float64))
        return s, _mix(wall, [50, 50, 55], skirting.astype(np.float64))
    # Outdoor: a treeline 35 m away, then sky.
    horiz = np.linalg.norm(d[..., :2], axis=-1)
    s = np.where(horiz > 1e-6, 35000.0 / np.maximum(horiz, 1e-6), np.inf)
    z = c[2] + d[..., 2] * s
    az = np.arctan2(d[..., 1], d[..., 0])
    crown = 5000 + 2500 * _hash(np.floor(az * 60), np.floor(az * 60), seed)
    trees = (z > 0) & (z < crown)
    sky = _mix(np.array([235.0, 215, 200]), [200, 140, 90], np.clip(d[..., 2] * 3, 0, 1))
    foliage = _hash(np.floor(az * 400), np.floor(z / 300), seed)
    leaves = _mix(np.array([25.0, 60, 30]), [45, 95, 55], foliage)
    return np.where(trees, s, np.inf), np.where(trees[..., None], leaves, sky)
