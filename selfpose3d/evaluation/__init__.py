"""Evaluation: the Panoptic AP/recall/MPJPE protocol, PCP for Shelf/Campus, metric tables."""

from selfpose3d.evaluation.panoptic import (
    RECALL_THRESHOLD_MM,
    THRESHOLDS_MM,
    FrameGT,
    FramePrediction,
    FrameRootPrediction,
    evaluate_panoptic,
    evaluate_roots,
)
from selfpose3d.evaluation.pcp import (
    CAMPUS_EVAL_FRAMES,
    SHELF_EVAL_FRAMES,
    PCPResult,
    evaluate_pcp,
    load_actors_gt,
    panoptic15_to_shelf14,
)
from selfpose3d.evaluation.report import (
    PANOPTIC_COLUMNS,
    PCP_COLUMNS,
    ROOT_COLUMNS,
    format_metrics_table,
)

__all__ = [
    "CAMPUS_EVAL_FRAMES",
    "PANOPTIC_COLUMNS",
    "PCP_COLUMNS",
    "RECALL_THRESHOLD_MM",
    "ROOT_COLUMNS",
    "SHELF_EVAL_FRAMES",
    "THRESHOLDS_MM",
    "FrameGT",
    "FramePrediction",
    "FrameRootPrediction",
    "PCPResult",
    "evaluate_panoptic",
    "evaluate_pcp",
    "evaluate_roots",
    "format_metrics_table",
    "load_actors_gt",
    "panoptic15_to_shelf14",
]
