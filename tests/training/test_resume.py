"""An interrupted run resumes from its last checkpoint and ends where an uninterrupted one does."""

from __future__ import annotations

import pytest
import torch

from selfpose3d.training.checkpoint import load_checkpoint
from selfpose3d.training.run import train

# Root stage, pseudo heatmaps: 2 epochs x 4 steps, checkpoints at steps 3, 4 (epoch end), 6, 8.
OVERRIDES = ("train.root.epochs=2", "train.max_steps_per_epoch=4", "train.checkpoint_every=3")


class Interrupt(Exception):
    pass


def _stop_after(step: int, seen: list[dict]):
    def report(metrics: dict) -> None:
        seen.append(metrics)
        if metrics["step"] == step:
            raise Interrupt

    return report


@pytest.mark.parametrize("stop_at, resumes_at", [(7, 7), (5, 5)])
def test_an_interrupted_run_resumes_from_its_last_checkpoint(
    stop_at, resumes_at, tmp_path, smoke_data, make_config
):
    """Stopped at step 7 (after the mid-epoch checkpoint of step 6) the run resumes inside
    epoch 2; stopped at step 5 it resumes from the epoch-end checkpoint of step 4. Either way
    the final weights equal those of an uninterrupted run bit for bit."""
    cfg = make_config(*OVERRIDES, pseudo=True)
    reference = train(cfg, smoke_data, tmp_path / "full", stages=["root"], progress=False)

    first: list[dict] = []
    with pytest.raises(Interrupt):
        train(cfg, smoke_data, tmp_path / "cut", stages=["root"],
              report=_stop_after(stop_at, first), progress=False)  # fmt: skip
    assert [m["step"] for m in first] == list(range(1, stop_at + 1))
    second: list[dict] = []
    summary = train(cfg, smoke_data, tmp_path / "cut", stages=["root"], report=second.append,
                    progress=False)  # fmt: skip
    assert [m["step"] for m in second] == list(range(resumes_at, 9))
    assert summary["stages"] == ["root"]

    # The steps redone after the checkpoint reproduce the interrupted run's losses exactly.
    redone = {m["step"]: m["loss"] for m in second}
    assert all(redone[m["step"]] == m["loss"] for m in first if m["step"] in redone)
    full = load_checkpoint(reference["final"])["model"]
    resumed = load_checkpoint(summary["final"])["model"]
    for name, value in full.items():
        assert torch.equal(value, resumed[name]), name


def test_a_finished_run_is_not_trained_again(tmp_path, smoke_data, make_config):
    cfg = make_config("train.root.epochs=1", "train.max_steps_per_epoch=2", pseudo=True)
    train(cfg, smoke_data, tmp_path / "run", stages=["root"], progress=False)
    again: list[dict] = []
    summary = train(cfg, smoke_data, tmp_path / "run", stages=["root"], report=again.append,
                    progress=False)  # fmt: skip
    assert again == [] and summary["stages"] == ["root"]
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert (tmp_path / "run" / "final" / "config.yaml").is_file()


def test_the_order_frames_arrive_in_does_not_change_training(
    tmp_path, trained_root, train_frames, make_config
):
    """Ray Data delivers a worker's shard in whatever order its blocks finish. The pose
    stage (which draws its batches from the frames, unlike root_net's synthetic roots) must
    train the same weights from the frames in stored and in reversed order, as the sweep's
    trials rely on: otherwise two trials differ by their data order, not their settings."""
    import random
    import shutil

    from selfpose3d.training.run import train_frames as train_on

    cfg = make_config("train.pose.epochs=1", "train.max_steps_per_epoch=4", pseudo=True)
    shuffled = list(train_frames)
    random.Random(0).shuffle(shuffled)
    weights, people = [], []
    for name, frames in (("stored", train_frames), ("shuffled", shuffled)):
        run = tmp_path / name
        shutil.copytree(trained_root, run)
        rows: list[dict] = []
        summary = train_on(cfg, frames, run, ["root", "pose"], report=rows.append,
                           progress=False)  # fmt: skip
        weights.append(load_checkpoint(summary["final"])["model"])
        people.append(sum(r["people"] for r in rows if r["stage"] == "pose"))
    assert people[0] > 0, "no proposal reached the pose net: the comparison tests nothing"
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
