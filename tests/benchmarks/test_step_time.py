"""benchmarks/step_time.py: its loop version computes exactly what pose_step computes.

Smoke preset, synthetic frames, tiny images: a few seconds on one core.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import step_time
import torch

from selfpose3d.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and other processes on the machine
    make OpenMP barriers across threads slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(input_mode: str, attention: bool) -> Config:
    cfg = load_config(REPO / "configs" / "smoke.yaml",
                      [f"model.input_mode={input_mode}",
                       f"model.use_attention={str(attention).lower()}"])  # fmt: skip
    # Tiny images keep the 2D networks cheap; both sizes change together to stay consistent.
    model = dataclasses.replace(cfg.model, image_size=[96, 64], heatmap_size=[24, 16])
    return dataclasses.replace(cfg, model=model)


def _inputs(input_mode: str = "pseudo_heatmaps", attention: bool = False, people: int = 2,
            batch_size: int = 2):  # fmt: skip
    cfg = _config(input_mode, attention)
    inputs = step_time.build_inputs(cfg, people, batch_size, seed=0, epoch=0, data=None)
    return inputs, step_time.prepare_model(inputs, CPU)


# The 2D networks dominate the cost of their cases: one sample there, two in the 3D-only one.
@pytest.mark.parametrize(
    ("input_mode", "attention", "batch_size"),
    [("pseudo_heatmaps", False, 2), ("pseudo_heatmaps", True, 1), ("images", True, 1)],
)
def test_loop_version_has_the_losses_and_gradients_of_pose_step(input_mode, attention,
                                                                batch_size):  # fmt: skip
    inputs, model = _inputs(input_mode, attention, batch_size=batch_size)
    vec = step_time.run_once(step_time.vectorised_step, model, inputs)
    loop = step_time.run_once(step_time.loop_pose_step, model, inputs)
    expected = {"loss_reproj", "loss_l1", "loss", "people"}
    expected |= {"loss_attention"} if attention else set()
    expected |= {"loss_2d"} if input_mode == "images" else set()
    assert set(vec[0]) == expected
    assert float(vec[0]["people"]) == 2.0
    assert any(g is not None and g.abs().sum() > 0 for g in vec[2].values())
    step_time.assert_same(vec, loop)


def test_the_check_catches_a_loop_that_drops_a_view():
    inputs, model = _inputs()
    vec = step_time.run_once(step_time.vectorised_step, model, inputs)
    fewer = inputs.batch.select_views([0, 1])  # the smoke rig has 3 views
    loop = step_time.run_once(step_time.loop_pose_step, model, inputs, fewer)
    with pytest.raises(AssertionError):
        step_time.assert_same(vec, loop)


def test_timer_sees_the_backward_of_every_per_person_call():
    inputs, model = _inputs(people=2)
    timer = step_time.NetTimer(step_time.network_groups(model), CPU)
    try:
        t = step_time.timed_step(step_time.loop_pose_step, model, inputs, timer, CPU)
    finally:
        timer.close()
    # 2 samples x 2 people x 2 augmentations batch-1 pose V2V calls, each with a backward.
    records = timer.backward_records
    assert len(records) == 8
    assert all(start is not None and end is not None and end >= start
               for _, start, end in records)  # fmt: skip
    assert 0 < t.nets3d < t.total
    flops = step_time.call_flops(timer.calls, CPU)["3d"]
    assert flops > 0


def test_operator_profile_counts_the_sampling_calls_of_each_version():
    inputs, model = _inputs(people=2, batch_size=1)
    views = inputs.batch.cameras.num_views

    def sampler_calls(name: str) -> float:
        table = step_time.operator_profile(name, model, inputs, rows=200, steps=1)
        row = next(line for line in table.splitlines() if line.startswith("aten::grid_sampler_2d"))
        return float(row.split()[-1])

    assert sampler_calls("vectorised") == 2.0  # the root cube and every pose cube
    # The loop samples view by view: the root cube, then 2 people x 2 augmentations.
    assert sampler_calls("loop") == views * (1 + 2 * 2)
