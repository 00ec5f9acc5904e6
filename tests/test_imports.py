"""The library must not import Ray at import time (Ray lives at the edges)."""

import importlib
import pkgutil
import subprocess
import sys

import selfpose3d


def test_selfpose3d_imports_without_ray():
    modules = [m.name for m in pkgutil.walk_packages(selfpose3d.__path__, "selfpose3d.")]
    assert "selfpose3d.cli" in modules
    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ImportError('ray is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "assert not any(k == 'ray' or k.startswith('ray.') for k in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help_lists_commands(capsys):
    cli = importlib.import_module("selfpose3d.cli")
    try:
        cli.main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for command in ("synth", "ingest", "config"):
        assert command in out
