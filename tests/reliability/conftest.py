"""Kill-safety and full-disk tests: helpers in _kill.py; tiny runs from tests/infer/_run_factory.py."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "infer"))
