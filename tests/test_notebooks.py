"""The Colab notebooks: committed without outputs, and each runs top to bottom with SMOKE = True.

Executed with nbclient in a fresh Jupyter kernel (this Python), in a temporary folder; the
parameter cell (tag "parameters") is switched from `SMOKE = False` to `SMOKE = True`.
"""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))


def test_the_three_tutorials_exist_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "custom_images.ipynb",
        "quickstart.ipynb",
        "scaling_up.ipynb",
    ]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert 'find_spec("keras_byol")' in code[0].source  # installs itself when needed
        parameters = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(parameters) == 1 and "SMOKE = False" in parameters[0].source, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BYOL_ROOT", str(ROOT))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = cell.source.replace("SMOKE = False", "SMOKE = True")
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    expected = {"quickstart": 4, "custom_images": 2, "scaling_up": 0}[path.stem]
    assert len(figures) >= expected, (path.name, len(figures))
    if path.stem == "quickstart":
        assert "gives the same embeddings" in text and "random weights" in text
    if path.stem == "custom_images":
        assert "Skipped 3 unreadable image file(s)" in text and "neighbours with the" in text
    if path.stem == "scaling_up":
        assert "Resuming from" in text and text.count("Done: 6 steps") == 2
