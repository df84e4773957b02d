"""mypy passes on the package (issue 24, "typed seams").

CI runs only pytest, so this test is how mypy runs in CI. It runs from the repository
root, so ``[tool.mypy]`` of pyproject.toml applies (the files, the strictness, the
third-party packages without types).
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_passes() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"mypy failed:\n{proc.stdout}{proc.stderr}"
