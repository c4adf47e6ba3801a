"""Runs analytics.ipynb top to bottom headless (nbclient), as CI does through
train-service/tests/notebook.rs; the settings are the notebook's environment:

    CRS_TRAIN_ADDR=... CRS_SERVE_ADDR=... CRS_BUCKET=... python3 analytics/run_notebook.py
"""

import os
import pathlib
import time

import nbformat
from nbclient import NotebookClient

HERE = pathlib.Path(__file__).resolve().parent

if __name__ == "__main__":
    # The client package of this checkout, for a kernel where it is not installed.
    client_path = str(HERE.parent / "examples/python")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [client_path, os.environ.get("PYTHONPATH")]))
    notebook = nbformat.read(HERE / "analytics.ipynb", as_version=4)
    started = time.monotonic()
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    print(f"analytics.ipynb ran in {time.monotonic() - started:.1f} s")
