"""A skip inside a trio test keeps its reason and its place in ``pytest -rs`` (issue 12: one
skip was reported as "_pytest/python.py:187: Skipped"; conftest.pytest_pyfunc_call)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tests

ROOT = Path(tests.__file__).parent.parent


def test_a_skip_in_a_trio_test_is_reported_with_its_reason(tmp_path: Path) -> None:
    probe = ROOT / "tests" / f"test_probe_skip_{tmp_path.name}.py"
    probe.write_text(
        "import pytest\n\n\nasync def test_skips() -> None:\n    pytest.skip('the reason')\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(probe)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
    finally:
        probe.unlink()
    assert "1 skipped" in done.stdout, done.stdout + done.stderr
    assert f"{probe.name}:5: the reason" in done.stdout, done.stdout
    assert "python.py" not in done.stdout
