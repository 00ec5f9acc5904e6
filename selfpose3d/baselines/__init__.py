"""Learning-free baselines the self-supervised model is compared against."""

from selfpose3d.baselines.triangulation import (
    TriangulationConfig,
    evaluate_triangulation,
    run_triangulation_baseline,
    triangulate_frame,
)

__all__ = [
    "TriangulationConfig",
    "evaluate_triangulation",
    "run_triangulation_baseline",
    "triangulate_frame",
]
