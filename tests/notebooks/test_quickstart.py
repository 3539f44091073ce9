"""Execute notebooks/quickstart.ipynb (nbclient) so it never rots, and check
what it printed against the sample data read directly."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_runs_and_prints_the_right_numbers(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    from dataflow.demo import generate_sample

    monkeypatch.setenv("DATAFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parents[1]))
    monkeypatch.delenv("DATAFLOW_DISABLE_PROGRESS_BARS", raising=False)
    scratch = tmp_path / "tmp"  # the kernel's temp dir: the notebook must clean it
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    displays = [o for o in outputs if o.output_type in ("display_data", "execute_result")]

    sample = pq.read_table(generate_sample(tmp_path / "cache", rows=200_000))
    kept = sample.filter(pc.field("category") != "spam")
    checksum = pc.sum(kept.column("id")).as_py()
    assert f"rows written: {kept.num_rows:,}; id checksum: {checksum}" in text
    assert f"trained on {kept.num_rows:,} rows" in text
    assert "-- Physical plan --" in text and "fused[3 stages]" in text
    assert "read_parquet->map_batches(standardize)" in text  # the stats table
    assert any("image/png" in o.data for o in displays)
    progress = [
        o.data["text/plain"] for o in displays if "rows out in" in o.data.get("text/plain", "")
    ]
    assert any(f"{kept.num_rows:,} rows" in p for p in progress)
    leftovers = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor")]
    assert leftovers == []  # torch keeps its own compile cache there; nothing of ours stays
