"""Cameras, projection with lens distortion, affine image transforms and triangulation.

Pure NumPy / torch functions (no Ray); see each module's docstring for frames and units.
"""

from selfpose3d.geometry.affine import (
    apply_affine,
    augmentation_matrix,
    compose_affine,
    fit_box,
    get_affine_matrix,
    get_resize_matrix,
    invert_affine,
    project_to_image,
    random_augmentation_matrix,
    sample_augmentation,
    scale_affine,
    warp_image,
)
from selfpose3d.geometry.camera import (
    Camera,
    array_module,
    depth,
    distort_normalized,
    project_points,
    stack_cameras,
    world_to_camera,
)
from selfpose3d.geometry.triangulation import (
    projection_matrices,
    projection_matrix,
    reprojection_errors,
    triangulate,
    triangulate_dlt,
    triangulate_robust,
    undistort_points,
)

__all__ = [
    "Camera",
    "apply_affine",
    "array_module",
    "augmentation_matrix",
    "compose_affine",
    "depth",
    "distort_normalized",
    "fit_box",
    "get_affine_matrix",
    "get_resize_matrix",
    "invert_affine",
    "project_points",
    "project_to_image",
    "projection_matrices",
    "projection_matrix",
    "random_augmentation_matrix",
    "reprojection_errors",
    "sample_augmentation",
    "scale_affine",
    "stack_cameras",
    "triangulate",
    "triangulate_dlt",
    "triangulate_robust",
    "undistort_points",
    "warp_image",
    "world_to_camera",
]
