"""Runs a notebook for real (SMOKE = False) and saves its figures and printed text in docs/.

python docs/render_notebook.py colab/quickstart.ipynb
→ docs/quickstart_figure1.png, ..., docs/quickstart_output.txt (the committed notebook is
left unchanged, without outputs).
"""

import base64
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

DOCS = Path(__file__).resolve().parent
_LOG_PREFIXES = ("I0000", "W0000", "E0000", "WARNING: All log", "INFO:tensorflow")


def main(path):
    path = Path(path).resolve()
    notebook = nbformat.read(path, as_version=4)
    os.environ.setdefault("KERAS_BYOL_ROOT", str(DOCS.parent))
    start = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        NotebookClient(
            notebook, timeout=None, kernel_name="python3", resources={"metadata": {"path": workdir}}
        ).execute()
    minutes = (time.time() - start) / 60
    figures, text = 0, [f"# {path.name}, SMOKE = False, {minutes:.1f} min, {time.ctime()}\n"]
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                figures += 1
                png = base64.b64decode(output["data"]["image/png"])
                (DOCS / f"{path.stem}_figure{figures}.png").write_bytes(png)
            elif output.get("output_type") == "stream":
                lines = output["text"].splitlines(keepends=True)
                text += [line for line in lines if not line.startswith(_LOG_PREFIXES)]
    (DOCS / f"{path.stem}_output.txt").write_text("".join(text))
    print(f"{figures} figures and the output text written to {DOCS} ({minutes:.1f} min)")


if __name__ == "__main__":
    main(sys.argv[1])
