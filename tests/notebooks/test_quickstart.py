"""notebooks/quickstart.ipynb: the saved copy has its outputs (a reader on a code
host sees them), and executing it again (nbclient) still works and prints the
same checks. The notebook writes its own data and UDF (no dataflow.demo)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def check_outputs(nb) -> None:
    """What every run of the notebook shows, saved or fresh."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "every code cell ran"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    displays = [o for o in outputs if o.output_type in ("display_data", "execute_result")]
    plain = "\n".join(o.data.get("text/plain", "") for o in displays)

    assert "8 files, 200,000 rows" in text
    assert "-- Physical plan --" in text and "fused[3 stages]" in text
    trained = int(re.search(r"trained on ([\d,]+) rows", text).group(1).replace(",", ""))
    written, by_pyarrow = re.search(r"rows written: ([\d,]+); pyarrow: ([\d,]+)", text).groups()
    assert written == by_pyarrow and int(written.replace(",", "")) == trained
    checksum, expected = re.search(r"id checksum: (\d+); pyarrow: (\d+)", text).groups()
    assert checksum == expected
    # The stats tables: a row per step, in their own units.
    assert "  map_batches(standardize)" in text and "read 200,000 rows, 8 files" in text
    assert f"wrote {written} rows" in text
    assert re.search(r"  filter\(source != 'spam'\)\s+200000\s+" + written.replace(",", ""), text)
    # Progress: widget bars, then the final counts as text.
    assert any("application/vnd.jupyter.widget-view+json" in o.data for o in displays)
    assert f"dataflow: {written} rows out in" in plain
    assert f"dataflow: {written} rows written in" in plain
    assert any("image/png" in o.data for o in displays)


def test_the_saved_notebook_has_its_outputs_and_user_code():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    check_outputs(nb)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "dataflow.demo" not in source
    assert "def standardize(" in source and "pq.write_table(" in source
    intro = nb.cells[0].source
    assert "matplotlib" in intro and "Jupyter" in intro


@pytest.mark.slow
def test_the_notebook_still_runs(tmp_path, monkeypatch):
    import nbclient

    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parents[1]))
    monkeypatch.delenv("DATAFLOW_DISABLE_PROGRESS_BARS", raising=False)
    scratch = tmp_path / "tmp"  # the kernel's temp dir: the notebook must clean it
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    check_outputs(nb)
    leftovers = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor")]
    assert leftovers == []  # torch keeps its own compile cache there; nothing of ours stays
