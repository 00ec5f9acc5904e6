"""`selfpose3d predict` end to end on the smoke dataset: the three output files and their
formats, triangulation accuracy and track ids against the GT, checkpoints of both input
modes, the Panoptic-layout and Parquet sources, and the errors a user can cause."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from selfpose3d.baselines.triangulation import read_frames_without_images
from selfpose3d.cli import main
from selfpose3d.config import load_config
from selfpose3d.data.panoptic import MultiViewFrame
from selfpose3d.data.schema import frames_to_table, read_dataset
from selfpose3d.evaluation import FrameGT, FramePrediction, evaluate_panoptic
from selfpose3d.inference import PARQUET_SCHEMA, FrameResult, write_predictions
from selfpose3d.skeleton import NUM_JOINTS, ROOT_INDEX
from selfpose3d.tracks import count_id_switches, match_to_gt

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")
SUMMARY_KEYS = ["mode", "checkpoint", "frames", "people", "tracks", "seconds",
                "frames_per_second", "device"]  # fmt: skip


def read_output(out: Path) -> tuple[list[dict], dict, dict]:
    """(predictions.jsonl objects, predictions.parquet as columns, summary.json)."""
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    table = pq.read_table(out / "predictions.parquet")
    assert table.schema.remove_metadata() == PARQUET_SCHEMA
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == SUMMARY_KEYS
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    return lines, table.to_pydict(), summary


def check_formats(lines: list[dict], rows: dict, summary: dict,
                  frames: list[MultiViewFrame]) -> None:  # fmt: skip
    """Every frame once, in order; JSON lines and Parquet rows agree; counts in the summary."""
    assert [(d["sequence"], d["frame"]) for d in lines] == [(f.sequence, f.frame) for f in frames]
    people = [(d["sequence"], d["frame"], p) for d in lines for p in d["people"]]
    assert summary["frames"] == len(lines) and summary["people"] == len(people)
    assert rows["sequence"] == [s for s, _, _ in people]
    assert rows["frame"] == [f for _, f, _ in people]
    assert rows["track_id"] == [p["track_id"] for _, _, p in people]
    np.testing.assert_allclose(rows["score"], [p["score"] for _, _, p in people], rtol=1e-6)
    joints = np.array([p["joints"] for _, _, p in people], dtype=np.float64).reshape(-1, 15, 3)
    assert joints.shape == (len(people), NUM_JOINTS, 3) and np.isfinite(joints).all()
    np.testing.assert_allclose(np.array(rows["joints"], dtype=np.float64).reshape(joints.shape),
                               joints, atol=0.01)  # fmt: skip
    tracked = {p["track_id"] for _, _, p in people} - {-1}
    assert summary["tracks"] == len(tracked)
    assert summary["seconds"] > 0 and summary["frames_per_second"] == pytest.approx(
        summary["frames"] / summary["seconds"])  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Smoke-sized tensors gain nothing from intra-op threads, and on a busy machine OpenMP
    barriers across threads make the model calls many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def test_frames(smoke_data) -> list[MultiViewFrame]:
    return list(read_frames_without_images(smoke_data / "test"))


@pytest.fixture(scope="module")
def triangulated(smoke_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "tri"
    code = main(["predict", "--triangulate", "--config", SMOKE, "--data", str(smoke_data),
                 "--split", "test", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    return out


def test_triangulation_lands_on_the_gt_with_consistent_track_ids(triangulated, test_frames,
                                                                  capsys):  # fmt: skip
    lines, rows, summary = read_output(triangulated)
    check_formats(lines, rows, summary, test_frames)
    assert summary["mode"] == "triangulation" and summary["checkpoint"] is None
    assert summary["device"] == "cpu"

    preds = [FramePrediction(np.array([p["joints"] for p in d["people"]]).reshape(-1, 15, 3),
                             np.array([p["score"] for p in d["people"]]))
             for d in lines]  # fmt: skip
    gts = [FrameGT.from_xyzv(f.gt_poses) for f in test_frames]
    metrics = evaluate_panoptic(preds, gts)
    print(f"triangulation on the smoke test split: recall@100mm {metrics['recall100']:.1f}%, "
          f"MPJPE {metrics['mpjpe']:.1f} mm")  # fmt: skip
    assert metrics["recall100"] > 80.0  # most GT people have a prediction within 100 mm

    pred_roots = [p.poses[:, ROOT_INDEX] for p in preds]
    gt_roots = [np.where(g.visible[:, ROOT_INDEX, None], g.poses[:, ROOT_INDEX], np.nan)
                for g in gts]  # fmt: skip
    matches = match_to_gt(pred_roots, gt_roots)
    track_ids = [np.array([p["track_id"] for p in d["people"]], dtype=np.int64) for d in lines]
    switches = count_id_switches(track_ids, [f.gt_ids for f in test_frames], matches)
    gt_people = len({int(i) for f in test_frames for i in f.gt_ids})
    print(f"id switches: {switches}; {summary['tracks']} tracks for {gt_people} GT people")
    assert switches == 0
    # Every GT person is followed by one track (no fragmentation of the matched tracks).
    per_person: dict[int, set[int]] = {}
    for ids, gt_ids, pairs in zip(track_ids, [f.gt_ids for f in test_frames], matches,
                                  strict=True):  # fmt: skip
        for p, g in pairs:
            per_person.setdefault(int(gt_ids[g]), set()).add(int(ids[p]))
    assert len(per_person) == gt_people and all(len(t) == 1 for t in per_person.values())


def test_a_panoptic_root_gives_the_parquet_predictions(smoke_data, triangulated, tmp_path,
                                                       capsys):  # fmt: skip
    out = tmp_path / "from_root"
    # The smoke_data fixture ingested the Panoptic-layout root next to it, <dir>/../raw.
    code = main(["predict", "--triangulate", "--config", SMOKE, "--data",
                 str(smoke_data.parent / "raw"), "--split", "test", "--out", str(out)])  # fmt: skip
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    lines, _, summary = read_output(out)
    assert last.startswith(f"predicted {summary['frames']} frames: {summary['people']} people, "
                           f"{summary['tracks']} tracks, ") and "frames/s" in last  # fmt: skip
    expected, _, _ = read_output(triangulated)
    assert [(d["sequence"], d["frame"], [p["track_id"] for p in d["people"]]) for d in lines] \
        == [(d["sequence"], d["frame"], [p["track_id"] for p in d["people"]])
            for d in expected]  # fmt: skip
    got = np.array([p["joints"] for d in lines for p in d["people"]])
    want = np.array([p["joints"] for d in expected for p in d["people"]])
    np.testing.assert_allclose(got, want, atol=0.05)


def save_random_model(run: Path, *overrides: str) -> Path:
    """A smoke-preset model with random weights, saved as `selfpose3d train` saves one."""
    from selfpose3d.models.model import build_model
    from selfpose3d.training.checkpoint import model_signature
    from selfpose3d.training.run import save_final

    cfg = load_config(SMOKE, list(overrides))
    model = build_model(cfg.model)
    return save_final(model, cfg, model_signature(model, cfg.model, cfg.train.preset),
                      run / "final")  # fmt: skip


@pytest.mark.parametrize("input_mode", ["pseudo_heatmaps", "images"])
def test_checkpoint_predictions(smoke_data, test_frames, tmp_path, input_mode):
    # Threshold 0: every root proposal is a person, so that random weights give people too.
    overrides = [f"model.input_mode={input_mode}", "model.use_attention=false",
                 "model.proposal_threshold=0.0"]  # fmt: skip
    weights = save_random_model(tmp_path / "run", *overrides)
    data, frames = smoke_data, test_frames
    if input_mode == "images":  # the 2D network is the slow part: three frames are enough
        data = tmp_path / "three"
        (data / "test").mkdir(parents=True)
        subset = list(read_dataset(smoke_data / "test"))[:3]
        pq.write_table(frames_to_table(subset), data / "test" / "part-00000.parquet")
        frames = subset
    out = tmp_path / "out"
    code = main(["predict", "--checkpoint", str(tmp_path / "run"), "--data", str(data),
                 "--split", "test", "--out", str(out), "--device", "cpu", "--batch-size", "2",
                 "--quiet"])  # fmt: skip
    assert code == 0
    lines, rows, summary = read_output(out)
    check_formats(lines, rows, summary, frames)
    assert summary["mode"] == "model" and summary["checkpoint"] == str(weights)
    assert summary["device"] == "cpu"
    assert summary["people"] == 4 * len(frames)  # model.max_people proposals per frame


def test_no_track_and_overwrite(triangulated, smoke_data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["predict", "--triangulate", "--config", SMOKE, "--data", str(smoke_data),
            "--split", "test", "--out", str(out), "--no-track", "--quiet"]  # fmt: skip
    assert main(args) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert "untracked" in capsys.readouterr().out
    lines, _, summary = read_output(out)
    assert summary["tracks"] == 0 and (out / "notes.txt").read_text() == "mine"
    assert {p["track_id"] for d in lines for p in d["people"]} == {-1}
    expected, _, _ = read_output(triangulated)
    assert [[p["joints"] for p in d["people"]] for d in lines] \
        == [[p["joints"] for p in d["people"]] for d in expected]  # fmt: skip


def test_a_failed_write_leaves_the_previous_output(tmp_path):
    pose = np.arange(NUM_JOINTS * 3, dtype=np.float64).reshape(1, NUM_JOINTS, 3)

    def results(n: int, fail: bool = False):
        for i in range(n):
            if fail and i == 1:
                raise RuntimeError("interrupted")
            yield FrameResult(sequence="s", frame=i, poses=pose + i, scores=np.array([0.5]),
                              track_ids=np.array([3]))  # fmt: skip

    base = {"mode": "triangulation", "checkpoint": None, "device": "cpu"}
    summary = write_predictions(tmp_path, results(2), base)
    assert summary["frames"] == 2 and summary["people"] == 2 and summary["tracks"] == 1
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="interrupted"):
        write_predictions(tmp_path, results(3, fail=True), base, overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    line = json.loads((tmp_path / "predictions.jsonl").read_text().splitlines()[1])
    assert line == {"sequence": "s", "frame": 1, "people": [
        {"track_id": 3, "score": 0.5, "joints": (pose[0] + 1).tolist()}]}  # fmt: skip


def test_missing_pseudo_labels_are_named(smoke_data, test_frames, tmp_path, capsys):
    # A Parquet frame without labels, for a model that renders its heatmaps from them.
    save_random_model(tmp_path / "run", "model.input_mode=pseudo_heatmaps",
                      "model.use_attention=false")  # fmt: skip
    frames = list(read_dataset(smoke_data / "test"))[:4]
    frames[2].pseudo_poses = None
    (tmp_path / "pq" / "test").mkdir(parents=True)
    pq.write_table(frames_to_table(frames), tmp_path / "pq" / "test" / "part-00000.parquet")
    code = main(["predict", "--checkpoint", str(tmp_path / "run"), "--data",
                 str(tmp_path / "pq"), "--out", str(tmp_path / "out"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"{frames[2].sequence}/{frames[2].frame}: the frame has no pseudo 2D " \
        "labels, which the model's input mode 'pseudo_heatmaps' needs" in err  # fmt: skip
    assert "run `selfpose3d pseudo-label`" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "summary.json").exists()

    # A recording (Panoptic layout) whose sequence has no label file at all.
    sequence = test_frames[0].sequence
    root = tmp_path / "recording"
    shutil.copytree(smoke_data.parent / "raw" / sequence, root / sequence,
                    ignore=shutil.ignore_patterns("pseudo2d_*"))  # fmt: skip
    code = main(["predict", "--triangulate", "--data", str(root), "--sequence", sequence,
                 "--out", str(tmp_path / "out2"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"pseudo2d_{sequence}.json: no pseudo 2D labels for sequence" in err
    assert "run `selfpose3d pseudo-label`" in err
    # Without a manifest, the sequences must be named.
    code = main(["predict", "--triangulate", "--data", str(root), "--out",
                 str(tmp_path / "out3"), "--quiet"])  # fmt: skip
    assert code == 2 and "no manifest.json listing the sequences" in capsys.readouterr().err


def test_cli_errors(smoke_data, tmp_path, capsys):
    out = str(tmp_path / "out")

    def run(*args: str) -> str:
        assert main(["predict", *args, "--quiet"]) == 2
        return capsys.readouterr().err

    assert "no checkpoint here" in run("--checkpoint", str(tmp_path / "none"), "--data",
                                       str(smoke_data), "--out", out)  # fmt: skip
    assert "no such dataset" in run("--triangulate", "--data", str(tmp_path / "none"),
                                    "--out", out)  # fmt: skip
    (tmp_path / "empty").mkdir()
    assert "neither a Panoptic-layout root" in run(
        "--triangulate", "--data", str(tmp_path / "empty"), "--out", out
    )
    assert "no sequence 'nope' here" in run("--triangulate", "--data", str(smoke_data),
                                            "--sequence", "nope", "--out", out)  # fmt: skip
    assert "tracking max_gap must be >= 0" in run("--triangulate", "--data", str(smoke_data),
                                                  "--max-gap", "-1", "--out", out)  # fmt: skip
    save_random_model(tmp_path / "run", "model.input_mode=pseudo_heatmaps",
                      "model.use_attention=false")  # fmt: skip
    assert "--config and --set go with --triangulate" in run(
        "--checkpoint", str(tmp_path / "run"), "--config", SMOKE, "--data", str(smoke_data),
        "--out", out)  # fmt: skip
    (tmp_path / "file").write_text("x")
    assert "exists and is not a directory" in run(
        "--triangulate", "--data", str(smoke_data), "--out", str(tmp_path / "file")
    )
    with pytest.raises(SystemExit):  # --checkpoint or --triangulate is required
        main(["predict", "--data", str(smoke_data), "--out", out])
