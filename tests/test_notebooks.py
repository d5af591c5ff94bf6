"""The tutorial notebooks run top to bottom in a real kernel (nbclient), in their quick mode (NOISELAB_QUICK=1).

A cell that raises fails its notebook's test with the cell's error; each notebook's time is printed (pytest -s).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 300

pytestmark = pytest.mark.slow


def test_the_tutorial_sequence_is_there():
    assert [path.stem[:2] for path in NOTEBOOKS] == [f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)]
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    monkeypatch.setenv("NOISELAB_QUICK", "1")  # the kernel inherits it
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name} is committed with outputs: clear them"
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    print(f"{path.name}: {seconds:.1f} s")
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    # the last code cell shows something: a widget or a chart
    last = [cell for cell in notebook.cells if cell.cell_type == "code"][-1]
    assert last.outputs, f"{path.name}'s last cell shows nothing"
    assert os.environ["NOISELAB_QUICK"] == "1"
