"""The `selfpose3d train` / `evaluate` commands: outputs and the errors a user can cause (no
Ray cluster is started here; the Ray Train runs are in tests/pipelines/test_train.py)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from selfpose3d.cli import main
from selfpose3d.config import load_config
from selfpose3d.training.evaluate import evaluate
from selfpose3d.training.run import train

REPO = Path(__file__).resolve().parents[1]

FAST = ["model.input_mode=pseudo_heatmaps", "model.use_attention=false",
        "train.root_consistency_weight=0", "train.max_steps_per_epoch=2"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_evaluate_prints_the_table_or_one_json_object(smoke_data, tmp_path, capsys):
    run = tmp_path / "run"
    train(load_config(REPO / "configs" / "smoke.yaml", FAST), smoke_data, run, ["root"],
          progress=False)  # fmt: skip
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(smoke_data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == evaluate(run, smoke_data)
    assert {"ap25", "ap50", "ap75", "ap100", "ap125", "ap150", "recall500", "mpjpe",
            "root_mpjpe"} <= set(out)  # fmt: skip
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(smoke_data), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "AP25" in table and "Root MPJPE" in table and f"{int(out['num_gt'])} GT people" in table


def test_evaluate_names_a_wrong_split_and_a_missing_checkpoint(smoke_data, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--data", str(smoke_data)]) == 2
    assert "no checkpoint here" in capsys.readouterr().err
    run = tmp_path / "run"
    train(load_config(REPO / "configs" / "smoke.yaml", FAST), smoke_data, run, ["root"],
          progress=False)  # fmt: skip
    code = main(["evaluate", "--checkpoint", str(run), "--data", str(smoke_data),
                 "--split", "validation"])  # fmt: skip
    assert code == 2 and "no 'validation' split" in capsys.readouterr().err


def test_train_refuses_a_missing_dataset(tmp_path, capsys):
    code = main(["train", "--config", str(REPO / "configs" / "smoke.yaml"),
                 "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2 and "no train split" in capsys.readouterr().err


def test_train_names_an_unreachable_ray_address_quickly(smoke_data, tmp_path, capsys):
    address = f"127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    smoke = str(REPO / "configs" / "smoke.yaml")
    code = main(["train", "--config", smoke, "--data", str(smoke_data),
                 "--out", str(tmp_path / "run"), "--address", address])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"cannot reach the Ray cluster at '{address}'" in err
    assert time.perf_counter() - t0 < 30


def test_tune_refuses_a_missing_dataset_a_bad_space_and_an_existing_sweep(smoke_data, tmp_path,
                                                                           capsys):  # fmt: skip
    smoke = str(REPO / "configs" / "smoke.yaml")
    code = main(["tune", "--config", smoke, "--data", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "sweep")])  # fmt: skip
    assert code == 2 and "no train split" in capsys.readouterr().err
    code = main(["tune", "--config", smoke, "--data", str(smoke_data), "--out",
                 str(tmp_path / "sweep"), "--num-samples", "0"])  # fmt: skip
    assert code == 2 and "sweep.num_samples" in capsys.readouterr().err
    code = main(["tune", "--config", smoke, "--data", str(smoke_data), "--out",
                 str(tmp_path / "sweep"), "--resume"])  # fmt: skip
    assert code == 2 and "no sweep to resume here" in capsys.readouterr().err
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "base.yaml").write_text("{}\n")
    code = main(["tune", "--config", smoke, "--data", str(smoke_data), "--out",
                 str(tmp_path / "sweep")])  # fmt: skip
    assert code == 2 and "already holds a sweep; pass --resume" in capsys.readouterr().err
    code = main(["tune", "--config", smoke, "--data", str(smoke_data), "--out",
                 str(tmp_path / "sweep"), "--resume", "--address",
                 f"127.0.0.1:{free_port()}"])  # fmt: skip
    assert code == 2 and "cannot reach the Ray cluster" in capsys.readouterr().err
