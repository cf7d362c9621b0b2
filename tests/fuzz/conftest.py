"""The fuzz targets live in _targets.py (shared with benchmarks/fuzz.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
