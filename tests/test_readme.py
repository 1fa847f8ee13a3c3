"""The README's example runs as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def _fit_example():
    """The README's `model.fit` example: the block that builds keras_byol.BYOL."""
    return next(block for block in _python_blocks() if "keras_byol.BYOL(" in block)


def test_readme_has_a_short_model_fit_example():
    example = _fit_example()
    assert "keras_byol.BYOL(" in example and "model.fit(" in example
    assert len(example.strip().splitlines()) <= 20


def test_readme_is_a_short_guide_whose_links_reach_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    for link in linked:
        assert (ROOT / link).is_file(), link
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert pages and pages <= linked, pages - linked


def test_every_docs_figure_names_its_command():
    """A page with measurements shows at least one command that produced them."""
    for page in (ROOT / "docs").glob("*.md"):
        text = page.read_text()
        if re.search(r"\b20\d\d-\d\d-\d\d\b", text):  # a dated measurement
            assert "python " in text or "bash " in text, page.name


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_fit_example())
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(8, 512)" in result.stdout
    assert "loss:" in result.stdout and "projection_std:" in result.stdout
