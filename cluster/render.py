"""Fill in the cluster templates (``cluster/cloud/*.yaml``, ``cluster/k8s/*.yaml``).

A template is YAML with shell-style placeholders: ``${NAME}`` is a required parameter,
``${NAME:-default}`` one with a default. Names are ``[A-Z][A-Z0-9_]*``; a default runs to the
first ``}``. A default written at one occurrence of a name applies to all of them, and two
occurrences may not give different defaults. An empty value counts as not given, as with the
shell's ``:-``. Any other ``${`` in a template is an error, so shell code inside a template
writes its variables as ``$NAME``.

Values are inserted verbatim, not quoted or escaped. A value holding YAML-special characters
(``: # { } [ ] , & * ! | > ' " % @``, a leading ``-`` or ``?``) or one YAML would read as
another type (``yes``, ``1.10``) must therefore sit inside quotes in the template
(``image: "${IMAGE}"``), or inside a block scalar (``>-``, ``|``); a number that must stay a
number (``max_workers: ${MAX_GPU_WORKERS:-4}``) is left unquoted. The rendered text must parse
as YAML, which catches most mistakes of this kind, not all.

    python -m cluster.render cluster/k8s/rayjob.yaml --set IMAGE=... --set DATA=... > job.yaml
    python -m cluster.render cluster/cloud/aws-gpu.yaml --list

Values come from ``--set NAME=VALUE`` (first), then from environment variables named like a
parameter of the template (other variables are ignored), then from the template's defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import yaml

PROG = "python -m cluster.render"
TEMPLATES_DIR = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def parameters(text: str, source: str = "template") -> dict[str, str | None]:
    """The template's parameters in order of first appearance: name -> default (None when
    the parameter is required). Raises ValueError, naming ``source``, for a malformed
    placeholder or for two different defaults of one name."""
    params: dict[str, str | None] = {}
    for start in (m.start() for m in re.finditer(r"\$\{", text)):
        match = PLACEHOLDER.match(text, start)
        if match is None:
            line = text.count("\n", 0, start) + 1
            snippet = text[start:].split("\n", 1)[0][:40]
            raise ValueError(
                f"{source}, line {line}: malformed placeholder {snippet!r} "
                "(expected ${NAME} or ${NAME:-default}, NAME in [A-Z][A-Z0-9_]*)"
            )
        name, default = match["name"], match["default"]
        known = params.get(name)
        if default is not None and known is not None and known != default:
            raise ValueError(
                f"{source}: parameter {name} has two defaults: {known!r} and {default!r}"
            )
        params[name] = default if default is not None else known
    return params


def render(text: str, values: Mapping[str, str], source: str = "template") -> str:
    """Substitute ``values`` (falling back to the defaults) into ``text``.

    Raises ValueError naming every required parameter without a value and every key of
    ``values`` that is no parameter of the template, or, when the result does not parse as
    YAML, naming ``source`` (the template's path, for messages).
    """
    params = parameters(text, source)
    unknown = sorted(set(values) - set(params))
    missing = [name for name, default in params.items()
               if default is None and not values.get(name)]  # fmt: skip
    problems = []
    if missing:
        problems.append(f"missing required parameter(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown parameter(s) {', '.join(unknown)} (the template's "
                        f"parameters: {', '.join(params) or 'none'})")  # fmt: skip
    if problems:
        raise ValueError(f"{source}: {'; '.join(problems)}")
    resolved = {name: values.get(name) or default for name, default in params.items()}
    result = PLACEHOLDER.sub(lambda m: resolved[m["name"]], text)
    try:
        list(yaml.safe_load_all(result))
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise ValueError(
            f"{source}: the rendered text is not valid YAML ({detail}); a value with "
            "YAML-special characters needs quotes around its placeholder"
        ) from None
    return result


def resolve_values(
    params: Mapping[str, str | None], env: Mapping[str, str], sets: Sequence[str]
) -> dict[str, str]:
    """The values given for a template: ``sets`` (``NAME=VALUE`` strings) over the variables
    of ``env`` named like a parameter. Unknown names in ``sets`` are kept, for ``render`` to
    refuse."""
    from cluster.jobs import parse_env

    values = {name: value for name, value in env.items() if name in params}
    return values | parse_env(sets, "--set")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a
    rename: readers see the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a manifest is no secret
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def format_parameters(params: Mapping[str, str | None]) -> str:
    """One line per parameter: its name and its default (quoted), or ``(required)``."""
    width = max((len(name) for name in params), default=0)
    lines = []
    for name, default in params.items():
        lines.append(f"{name:<{width}}  {'(required)' if default is None else repr(default)}\n")
    return "".join(lines)


def template_path(template: str) -> Path:
    """``template`` as given, else relative to ``cluster/`` (``k8s/rayjob.yaml``)."""
    path = Path(template)
    if not path.is_file() and (TEMPLATES_DIR / template).is_file():
        path = TEMPLATES_DIR / template
    if not path.is_file():
        raise FileNotFoundError(f"template {template!r} not found (a path, or one of "
                                f"{', '.join(_bundled_templates())})")  # fmt: skip
    return path


def _bundled_templates() -> list[str]:
    return sorted(str(p.relative_to(TEMPLATES_DIR)) for p in TEMPLATES_DIR.glob("*/*.yaml"))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Render a cluster template: fill in its ${NAME} and ${NAME:-default}\n"
        "placeholders and check that the result is YAML. Values come from --set (first),\n"
        "then from environment variables named like a parameter of the template, then\n"
        "from the template's defaults. A required parameter without a value, or a --set\n"
        "name that is no parameter of the template, is an error (exit code 2).",
        epilog="templates (a path, or relative to the cluster package):\n"
        "  cloud/aws-gpu.yaml   Ray cluster launcher, AWS, CPU head + autoscaling GPU workers\n"
        "  k8s/raycluster.yaml  KubeRay RayCluster for interactive use\n"
        "  k8s/rayjob.yaml      KubeRay RayJob running `selfpose3d train` on its own cluster\n"
        "\nexamples:\n"
        f"  {PROG} cluster/k8s/rayjob.yaml --list\n"
        f"  {PROG} cluster/k8s/rayjob.yaml --set IMAGE=registry/selfpose3d:0.1.0 \\\n"
        "      --set PVC_NAME=shared --set DATA=/shared/panoptic-pq --set OUT=/shared/runs/a \\\n"
        "      --set MLFLOW_TRACKING_URI=http://mlflow.mlflow:5000 --out rayjob.yaml\n"
        f"  IMAGE=registry/selfpose3d:0.1.0 {PROG} cluster/cloud/aws-gpu.yaml ... > ray.yaml\n"
        "\nValues are inserted verbatim: the templates quote every placeholder whose value\n"
        "may hold YAML-special characters.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("template", help="the template file")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter's value (repeatable; wins over the environment)",
    )
    parser.add_argument(
        "--out", type=Path, help="write the result to this file (atomically), not to stdout"
    )
    parser.add_argument(
        "--list", action="store_true", help="print the parameters and their defaults, and exit"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        text = template_path(args.template).read_text(encoding="utf-8")
        params = parameters(text, args.template)
        if args.list:
            sys.stdout.write(format_parameters(params))
            return 0
        values = resolve_values(params, os.environ, args.sets)
        result = render(text, values, source=args.template)
        if args.out is None:
            sys.stdout.write(result)
        else:
            write_atomic(args.out, result)
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
