"""The cluster templates and their renderer: plain unit tests, no Ray instance started.

The cloud template is checked against the cluster-launcher schema shipped with the installed
Ray; the KubeRay templates against the fields KubeRay requires, and the RayJob's entrypoint
with the real `selfpose3d` argument parser."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cluster.render import main, parameters, render
from selfpose3d.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
CLOUD = REPO / "cluster" / "cloud" / "aws-gpu.yaml"
RAYCLUSTER = REPO / "cluster" / "k8s" / "raycluster.yaml"
RAYJOB = REPO / "cluster" / "k8s" / "rayjob.yaml"
PROG = "python -m cluster.render"

TEMPLATE = """\
name: "${NAME}"
image: "${IMAGE:-rayproject/ray:2.60.0}"
replicas: ${REPLICAS:-2}
again: "${NAME}"
"""


def _write(tmp_path: Path, text: str = TEMPLATE) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return path


# ---- the renderer ------------------------------------------------------------------------


def test_parameters_in_order_with_defaults_and_a_default_given_once_applies_everywhere():
    text = "a: ${B:-x}\nb: ${A}\nc: ${C:-}\nd: ${B}\ne: $SHELL_VAR\n"
    assert parameters(text) == {"B": "x", "A": None, "C": ""}
    assert render(text, {"A": "1"}) == "a: x\nb: 1\nc: \nd: x\ne: $SHELL_VAR\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: ${lower}\n", "line 1: malformed placeholder '${lower}'"),
        ("a: 1\nb: ${A:b}\n", "line 2: malformed placeholder '${A:b}'"),
        ("a: ${A:-1}\nb: ${A:-2}\n", "parameter A has two defaults: '1' and '2'"),
    ],
    ids=["lowercase-name", "colon-without-dash", "two-defaults"],
)
def test_malformed_placeholders_and_conflicting_defaults_are_refused(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parameters(text)


def test_render_substitutes_values_and_falls_back_to_defaults():
    out = yaml.safe_load(render(TEMPLATE, {"NAME": "sp", "REPLICAS": "5"}))
    assert out == {"name": "sp", "image": "rayproject/ray:2.60.0", "replicas": 5, "again": "sp"}
    # An empty value counts as not given, as with the shell's `:-`.
    assert yaml.safe_load(render(TEMPLATE, {"NAME": "sp", "REPLICAS": ""}))["replicas"] == 2


def test_every_missing_required_parameter_and_every_unknown_key_is_named():
    text = "a: ${A}\nb: ${B}\nc: ${C:-3}\n"
    with pytest.raises(ValueError, match=r"^t\.yaml: missing required parameter\(s\) A, B$"):
        render(text, {}, source="t.yaml")
    with pytest.raises(ValueError) as e:
        render(text, {"A": "1", "BB": "2", "Z": "3"}, source="t.yaml")
    assert "missing required parameter(s) B;" in str(e.value)
    assert "unknown parameter(s) BB, Z (the template's parameters: A, B, C)" in str(e.value)
    with pytest.raises(ValueError, match="unknown parameter"):  # even when nothing is missing
        render(text, {"A": "1", "B": "2", "c": "3"})


def test_a_result_that_is_not_yaml_is_refused_naming_the_template():
    with pytest.raises(ValueError, match=r"^my/template\.yaml: the rendered text is not valid"):
        render("a: ${V}\n", {"V": "x: y"}, source="my/template.yaml")
    with pytest.raises(ValueError, match="not valid YAML"):
        render("a: ${V}\n", {"V": "[unclosed"})
    # Quoted in the template, the same value is fine.
    assert yaml.safe_load(render('a: "${V}"\n', {"V": "x: y"})) == {"a": "x: y"}


def test_cli_set_wins_over_the_environment_which_wins_over_defaults(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path, 'a: "${A:-da}"\nb: "${B:-db}"\nc: "${C:-dc}"\n')
    monkeypatch.setenv("A", "ea")
    monkeypatch.setenv("B", "eb")
    monkeypatch.setenv("UNRELATED", "ignored")  # not a parameter: neither used nor refused
    assert main([str(path), "--set", "A=sa=with=equals"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"a": "sa=with=equals", "b": "eb", "c": "dc"}


def test_cli_list_prints_every_parameter_with_its_default(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NAME", raising=False)
    assert main([str(_write(tmp_path)), "--list"]) == 0  # NAME is required, yet --list works
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["NAME", "IMAGE", "REPLICAS"]
    assert lines[0].endswith("(required)")
    assert lines[1].endswith("'rayproject/ray:2.60.0'") and lines[2].endswith("'2'")


def test_cli_out_replaces_the_file_atomically_and_writes_nothing_on_error(
    tmp_path, monkeypatch, capsys
):
    template = _write(tmp_path)
    out = tmp_path / "out" / "rendered.yaml"
    out.parent.mkdir()
    out.write_text("old: true\n")
    seen = {}
    real_replace = os.replace

    def replace(src: str, dst: Path) -> None:  # the whole new text is in a sibling temp file
        seen["src"], seen["text"], seen["old"] = Path(src), Path(src).read_text(), dst.read_text()
        real_replace(src, dst)

    monkeypatch.setattr("cluster.render.os.replace", replace)
    assert main([str(template), "--set", "NAME=sp", "--out", str(out)]) == 0
    assert seen["src"].parent == out.parent and seen["src"] != out
    assert seen["old"] == "old: true\n" and seen["text"] == out.read_text()
    assert yaml.safe_load(out.read_text())["name"] == "sp"
    assert out.stat().st_mode & 0o777 == 0o644
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in out.parent.iterdir()) == ["rendered.yaml"]

    monkeypatch.delenv("NAME", raising=False)
    before = out.read_text()
    assert main([str(template), "--out", str(out)]) == 2  # NAME missing
    assert main([str(template), "--set", 'NAME=x"y', "--out", str(out)]) == 2  # not YAML
    assert out.read_text() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["rendered.yaml"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{t}"], "missing required parameter(s) NAME"),
        (["{t}", "--set", "NAME=x", "--set", "NOPE=1"], "unknown parameter(s) NOPE"),
        (["{t}", "--set", "NAME"], "--set 'NAME': expected NAME=VALUE"),
        (["{t}", "--set", 'NAME=say "hi"'], "not valid YAML"),
        (["{t}", "--bogus"], "unrecognized arguments: --bogus"),
        (["no/such/template.yaml"], "template 'no/such/template.yaml' not found"),
        (["{t}", "--set", "NAME=x", "--out", "{t}.d/missing/dir.yaml"], "No such file"),
    ],
    ids=["missing", "unknown", "bad-set", "not-yaml", "bad-flag", "no-template", "bad-out"],
)
def test_cli_errors_are_one_line_on_stderr_and_exit_code_2(
    tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.delenv("NAME", raising=False)
    template = str(_write(tmp_path))
    argv = [a.replace("{t}", template) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith(f"{PROG}: error: ") and message in captured.err


def test_module_runs_as_a_command_and_finds_the_bundled_templates(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE", "PVC_NAME")}
    run = subprocess.run([sys.executable, "-m", "cluster.render", "--help"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0 and "${NAME:-default}" in run.stdout and "--list" in run.stdout
    run = subprocess.run([sys.executable, "-m", "cluster.render", "k8s/raycluster.yaml"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().endswith("IMAGE, MLFLOW_TRACKING_URI, PVC_NAME")


@pytest.mark.parametrize("path", [CLOUD, RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_every_template_documents_its_parameters_in_its_header(path):
    text = path.read_text()
    header = text[: text.index("\n\n") if path == CLOUD else text.index("\napiVersion")]
    assert all(line.startswith("#") for line in header.splitlines())
    assert "python -m cluster.render" in header
    undocumented = [name for name in parameters(text) if name not in header]
    assert undocumented == []


# ---- cloud VMs: the Ray cluster launcher -------------------------------------------------

CLOUD_VALUES = {
    "CLUSTER_NAME": "sp-test",
    "REGION": "eu-west-1",
    "IMAGE": "registry.example.com/selfpose3d:0.1.0-gpu",
    "AMI": "ami-0123456789abcdef0",
    "NFS_SERVER": "fs-0123abcd.efs.eu-west-1.amazonaws.com",
    "MLFLOW_TRACKING_URI": "http://10.0.3.7:5000",
    "GPU_INSTANCE_TYPE": "g5.12xlarge",
    "GPU_NODE_CPUS": "48",
    "GPUS_PER_NODE": "4",
    "MAX_GPU_WORKERS": "7",
    "HEAD_CPUS": "3",
    "SHARED_DIR": "/mnt/efs",
}


def _ray_launcher_schema() -> dict[str, Any]:
    # find_spec locates the installed package without importing (or starting) Ray.
    ray_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0])
    return json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())


def _exported(commands: list[str], name: str) -> list[str]:
    return [m for c in commands for m in re.findall(rf"\b{name}=\"?([^\";\s]+)", c)]


@pytest.mark.parametrize("auth_mode", ["token", "disabled"])
def test_cloud_config_passes_rays_schema_and_keeps_the_dashboard_private(auth_mode):
    config = yaml.safe_load(render(CLOUD.read_text(), CLOUD_VALUES | {"AUTH_MODE": auth_mode}))
    schema = _ray_launcher_schema()
    jsonschema.validate(config, schema)
    broken = yaml.safe_load(render(CLOUD.read_text(), CLOUD_VALUES))
    broken["available_node_types"]["gpu_worker"]["max_workers"] = "7"  # the schema bites
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)

    assert config["cluster_name"] == "sp-test" and config["provider"]["region"] == "eu-west-1"
    assert config["docker"]["image"] == CLOUD_VALUES["IMAGE"]
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    gpu = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(gpu) == 1
    gpu = gpu[0]
    assert gpu["resources"] == {"CPU": 48, "GPU": 4}
    assert gpu["node_config"]["InstanceType"] == "g5.12xlarge"
    assert (gpu["min_workers"], gpu["max_workers"], config["max_workers"]) == (0, 7, 7)
    assert "GPU" not in head["resources"] and head["resources"]["CPU"] == 3
    assert {t["node_config"]["ImageId"] for t in types.values()} == {"ami-0123456789abcdef0"}

    head_cmds, worker_cmds = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    ray_start = [c for c in head_cmds if "ray start --head" in c]
    assert len(ray_start) == 1
    assert "--dashboard-host=127.0.0.1" in ray_start[0] and "--num-cpus=3" in ray_start[0]
    assert "0.0.0.0" not in " ".join(head_cmds + worker_cmds)
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in worker_cmds)
    assert _exported(head_cmds, "RAY_AUTH_MODE") == [auth_mode]
    assert _exported(worker_cmds, "RAY_AUTH_MODE") == [auth_mode]
    for commands in (head_cmds, worker_cmds):
        assert _exported(commands, "MLFLOW_TRACKING_URI") == ["http://10.0.3.7:5000"]

    # The shared storage: mounted on every host, at the same path in every container.
    assert "--volume /mnt/efs:/mnt/efs" in config["docker"]["run_options"]
    mount = " ".join(config["initialization_commands"])
    assert '"fs-0123abcd.efs.eu-west-1.amazonaws.com:/" "/mnt/efs"' in mount


def test_cloud_defaults_are_an_autoscaling_g5_group_with_token_auth():
    required = {k: CLOUD_VALUES[k] for k in ("IMAGE", "AMI", "NFS_SERVER", "MLFLOW_TRACKING_URI")}
    assert {k for k, v in parameters(CLOUD.read_text()).items() if v is None} == set(required)
    config = yaml.safe_load(render(CLOUD.read_text(), required))
    jsonschema.validate(config, _ray_launcher_schema())
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["node_config"]["InstanceType"] == "g5.xlarge" and gpu["max_workers"] == 4
    assert _exported(config["worker_start_ray_commands"], "RAY_AUTH_MODE") == ["token"]


# ---- Kubernetes: KubeRay -----------------------------------------------------------------

K8S_VALUES = {
    "IMAGE": "registry.example.com/selfpose3d:0.1.0-gpu",
    "PVC_NAME": "panoptic-shared",
    "MOUNT_PATH": "/data/shared",
    "MLFLOW_TRACKING_URI": "http://mlflow.mlflow.svc.cluster.local:5000",
    "GPUS_PER_WORKER": "2",
    "MIN_GPU_WORKERS": "1",
    "MAX_GPU_WORKERS": "6",
    "AUTH_SECRET": "sp-token",
}
JOB_VALUES = K8S_VALUES | {
    "DATA": "/data/shared/panoptic-pq",
    "OUT": "/data/shared/runs/paper",
    "CONFIG": "configs/paper.yaml",
    "WORKERS": "6",
}


def _render_k8s(path: Path, values: dict[str, str]) -> dict[str, Any]:
    docs = list(yaml.safe_load_all(render(path.read_text(), values)))
    assert len(docs) == 1
    return docs[0]


def _walk(node: Any):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)


def _cluster_spec(which: str) -> dict[str, Any]:
    if which == "raycluster":
        return _render_k8s(RAYCLUSTER, K8S_VALUES)["spec"]
    return _render_k8s(RAYJOB, JOB_VALUES)["spec"]["rayClusterSpec"]


def test_kuberay_kinds_and_the_rayjob_runs_the_rayclusters_cluster():
    cluster = _render_k8s(RAYCLUSTER, K8S_VALUES)
    job = _render_k8s(RAYJOB, JOB_VALUES)
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert cluster["metadata"]["name"] == "selfpose3d"
    assert job["metadata"]["name"] == "selfpose3d-train"
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]


@pytest.mark.parametrize("which", ["raycluster", "rayjob"])
def test_kuberay_cluster_spec_has_the_required_fields_and_the_given_values(which):
    spec = _cluster_spec(which)
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"].startswith("2.60")
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    [head_container] = head["template"]["spec"]["containers"]
    assert head_container["image"] == K8S_VALUES["IMAGE"]
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]

    [group] = spec["workerGroupSpecs"]
    assert group["groupName"] == "gpu"
    assert isinstance(group["replicas"], int)
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert (group["minReplicas"], group["maxReplicas"]) == (1, 6)
    [worker] = group["template"]["spec"]["containers"]
    assert worker["image"] == K8S_VALUES["IMAGE"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == "2"

    for params in (head["rayStartParams"], group["rayStartParams"]):
        assert all(isinstance(v, str) for v in params.values()), params  # KubeRay wants strings

    for pod in (head["template"]["spec"], group["template"]["spec"]):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["volumes"] if "persistentVolumeClaim" in v}  # fmt: skip
        assert claims == {"shared": "panoptic-shared"}
        for container in pod["containers"]:
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts["shared"] == "/data/shared"


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("auth_mode", ["token", "disabled"])
def test_every_container_has_the_auth_mode_and_token_and_ray_containers_the_mlflow_uri(auth_mode):
    cluster = _render_k8s(RAYCLUSTER, K8S_VALUES | {"AUTH_MODE": auth_mode})
    job = _render_k8s(RAYJOB, JOB_VALUES | {"AUTH_MODE": auth_mode})
    token = {"secretKeyRef": {"name": "sp-token", "key": "auth_token"}}
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        ray_containers = [c for g in groups for c in g["template"]["spec"]["containers"]]
        assert len(ray_containers) == 2
        for container in ray_containers:
            env = _env(container)
            assert env["RAY_AUTH_MODE"] == auth_mode and env["RAY_AUTH_TOKEN"] == token
            assert env["MLFLOW_TRACKING_URI"] == K8S_VALUES["MLFLOW_TRACKING_URI"]
        autoscaler = _env(spec["autoscalerOptions"])
        assert autoscaler["RAY_AUTH_MODE"] == auth_mode and autoscaler["RAY_AUTH_TOKEN"] == token
    [submitter] = job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    assert _env(submitter)["RAY_AUTH_MODE"] == auth_mode
    assert _env(submitter)["RAY_AUTH_TOKEN"] == token
    assert submitter["image"] == K8S_VALUES["IMAGE"]


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_nothing_is_exposed_outside_the_kubernetes_cluster(path):
    docs = list(yaml.safe_load_all(render(path.read_text(), JOB_VALUES if path == RAYJOB
                                          else K8S_VALUES)))  # fmt: skip
    assert all(doc["kind"] not in ("Ingress", "Service", "Route", "Gateway") for doc in docs)
    for node in (n for doc in docs for n in _walk(doc) if isinstance(n, dict)):
        assert node.get("serviceType") in (None, "ClusterIP"), node
        assert node.get("type") not in ("LoadBalancer", "NodePort"), node
        assert node.get("enableIngress") in (None, False), node
    spec = docs[0]["spec"].get("rayClusterSpec", docs[0]["spec"])
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"


def test_the_rayjob_entrypoint_is_a_valid_selfpose3d_train_command():
    job = _render_k8s(RAYJOB, JOB_VALUES)
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 600 and spec["backoffLimit"] == 1
    assert spec["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["selfpose3d", "train"]
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"`selfpose3d train` refuses the RayJob entrypoint: {spec['entrypoint']}")
    assert args.command == "train"
    assert args.config == Path("configs/paper.yaml")
    assert args.data == Path("/data/shared/panoptic-pq")
    assert args.out == Path("/data/shared/runs/paper")
    assert args.workers == 6 and args.cpus_per_worker == 2.0
    assert args.use_gpu is True  # one GPU per Train worker
    assert args.resume is True  # a retry on a new cluster continues from the checkpoints
    # The run is on the shared volume, and the GPU group can hold all the workers.
    assert args.data.is_relative_to("/data/shared") and args.out.is_relative_to("/data/shared")
    defaults = parameters(RAYJOB.read_text())
    assert int(defaults["MAX_GPU_WORKERS"]) >= int(defaults["WORKERS"])
    assert defaults["CONFIG"] == "configs/cpu.yaml"
    assert (REPO / defaults["CONFIG"]).is_file()
