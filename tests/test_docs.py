"""The front page and the generated results pages: in date with the committed JSON, and true to CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_pages_are_up_to_date():
    """Rerunning the generator on the committed results changes nothing."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "docs_results.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_is_a_front_page_whose_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme_test = next(ln for ln in readme.splitlines() if "pytest -q" in ln and ln.startswith("python3 -m venv"))
    assert ci.replace(" -q ", " ").replace("pip install -q", "pip install") == readme_test.strip()
    for page in ("method", "teachers", "serving", "scale", "results", "history", "recformer", "CONTRACTS"):
        assert (ROOT / "docs" / f"{page}.md").exists() and f"docs/{page}.md" in readme
