"""``python -m cluster.local up|down|add-node|status|env``: see :mod:`cluster.local`."""

from __future__ import annotations

import argparse
import shlex
import sys

from cluster import local


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cluster.local",
        description="Start and stop a local Ray cluster and MLflow tracking server on this "
        "machine, bound to 127.0.0.1. Only the processes recorded in --state-dir are stopped.",
    )
    p.add_argument("--state-dir", default=str(local.DEFAULT_STATE_DIR),
                   help="where the services' pids, addresses and logs are kept "
                        "(default: %(default)s)")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start a Ray head (+ nodes) and an MLflow server")
    up.add_argument("--num-cpus", type=int, default=None,
                    help="logical CPUs of the head (default: the machine's cores)")
    up.add_argument("--nodes", type=int, default=0,
                    help="extra worker nodes on this machine (default: 0)")
    up.add_argument("--node-cpus", type=int, default=1, help="logical CPUs of each extra node")
    up.add_argument("--port", type=int, default=6379, help="GCS port (default: %(default)s)")
    up.add_argument("--dashboard-port", type=int, default=8265,
                    help="dashboard and job-server port (default: %(default)s)")
    up.add_argument("--client-port", type=int, default=10001,
                    help="Ray client server port (default: %(default)s)")
    up.add_argument("--mlflow-port", type=int, default=5000,
                    help="MLflow server port (default: %(default)s)")
    up.add_argument("--no-mlflow", action="store_true", help="start Ray only")
    up.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default: %(default)s; anything else exposes the "
                         "cluster to the network: see the README)")  # fmt: skip
    up.add_argument("--auth-mode", choices=local.AUTH_MODES, default="token",
                    help="Ray's token authentication (default: %(default)s); clients need "
                         "the same RAY_AUTH_MODE")  # fmt: skip

    node = sub.add_parser("add-node", help="join one more worker node to the running head")
    node.add_argument("--num-cpus", type=int, default=1)

    down = sub.add_parser("down", help="stop the recorded services (default: all)")
    down.add_argument("names", nargs="*", help="e.g. ray-node-1 or mlflow (default: all)")

    sub.add_parser("status", help="list the recorded services")
    sub.add_parser("env", help="print the `export` lines clients need")
    return p


def _exports(state_dir: str) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}"
                     for k, v in local.client_env(state_dir).items())  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    state = args.state_dir
    try:
        if args.command == "up":
            env = {}
            if not args.no_mlflow:  # first: the Ray nodes' jobs then track to it by default
                server = local.start_mlflow(state, port=args.mlflow_port, host=args.host)
                env["MLFLOW_TRACKING_URI"] = server.addresses["tracking_uri"]
                print(f"MLflow server {server.addresses['tracking_uri']}")
            head = local.start_head(state, port=args.port, dashboard_port=args.dashboard_port,
                                    client_port=args.client_port, num_cpus=args.num_cpus,
                                    host=args.host, auth_mode=args.auth_mode, env=env)  # fmt: skip
            print(f"Ray head      {head.addresses['gcs']}  dashboard {head.addresses['dashboard']}")
            for _ in range(args.nodes):
                node = local.add_node(state, num_cpus=args.node_cpus, env=env)
                print(f"Ray node      {node.name} ({args.node_cpus} CPU)")
            print(f"\nFor clients (logs in {state}):\n{_exports(state)}")
        elif args.command == "add-node":
            node = local.add_node(state, num_cpus=args.num_cpus)
            print(f"started {node.name}")
        elif args.command == "down":
            stopped = local.stop(state, args.names or None)
            print("stopped " + (", ".join(stopped) if stopped else "nothing (none recorded)"))
        elif args.command == "status":
            for s in local.services(state):
                where = "  ".join(f"{k}={v}" for k, v in s.addresses.items())
                print(f"{s.name:<12} {'up  ' if s.alive() else 'DOWN'} pid {s.pid:<8} {where}")
        elif args.command == "env":
            print(_exports(state))
    except local.ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
