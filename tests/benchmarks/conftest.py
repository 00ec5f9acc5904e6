"""benchmarks/ is a directory of scripts, not a package: its tests import them by file name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
