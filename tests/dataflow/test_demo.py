"""``dataflow demo``: the sample data, the pipeline's exact output, the training
run and the console entry point."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow import session
from dataflow.cli import main
from dataflow.demo import NUM_FEATURES, generate_sample, run_demo, true_weights


@pytest.fixture(scope="module")
def local():
    started = session.init("local", num_cpus=2)
    yield started
    session.shutdown()


def test_sample_is_deterministic_cached_and_labelled(tmp_path):
    path = generate_sample(tmp_path / "a", rows=4000, files=4)
    again = generate_sample(tmp_path / "a", rows=4000, files=4)
    other = generate_sample(tmp_path / "b", rows=4000, files=4)
    assert path == again == tmp_path / "a" / "sample-v1-4000"
    files = sorted(path.glob("*.parquet"))
    assert [f.name for f in files] == [f"part-{k:03d}.parquet" for k in range(4)]
    table = pq.read_table(path)
    assert table.equals(pq.read_table(other))
    assert table.column("id").to_pylist() == list(range(4000))
    means = np.arange(NUM_FEATURES)
    z = np.stack(
        [(table.column(f"f{i}").to_numpy() - means[i]) / (1 + means[i] / 4) for i in range(16)], 1
    )
    agree = ((z @ true_weights() > 0) == table.column("label").to_numpy().astype(bool)).mean()
    assert 0.92 < agree < 0.98  # 5 % of labels flipped
    assert sorted(set(table.column("category").to_pylist())) == ["api", "mobile", "spam", "web"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["sample-v1-4000"]  # no staging left


def test_demo_trains_and_writes_the_filtered_rows(local, tmp_path, monkeypatch):
    monkeypatch.setattr(df.DataContext.get_current(), "enable_progress_bars", False)
    out = io.StringIO()
    result = run_demo(60_000, cache_dir=tmp_path / "cache", output_dir=tmp_path / "out", out=out)
    source = pq.read_table(tmp_path / "cache" / "sample-v1-60000")
    kept = source.filter(pc.field("category") != "spam")
    assert result.rows_trained == result.rows_written == kept.num_rows
    written = pq.read_table(tmp_path / "out").sort_by("id")
    assert written.column("id").to_pylist() == kept.column("id").to_pylist()
    features = np.stack(written.column("features").to_numpy(zero_copy_only=False))
    means = np.arange(NUM_FEATURES, dtype=np.float32)
    expected = np.stack([kept.column(f"f{i}").to_numpy() for i in range(16)], 1)
    np.testing.assert_allclose(features, (expected - means) / (1 + means / 4), rtol=1e-5)
    assert result.accuracy > 0.75 and result.loss < 0.6  # it learns the hidden weights
    text = out.getvalue()
    assert f"trained a logistic regression on {kept.num_rows:,} rows" in text
    assert f"wrote {kept.num_rows:,} rows to {tmp_path / 'out'}" in text
    assert "read_parquet->map_batches(standardize)" in result.train_stats
    assert "read_parquet->map_batches(standardize)" in result.write_stats  # (write may fuse in)


def test_cli_demo_rejects_a_tiny_sample(capsys):
    assert main(["demo", "--rows", "10"]) == 2
    assert "--rows must be at least 1000" in capsys.readouterr().err


def test_generate_sample_rejects_fewer_rows_than_files(tmp_path):
    with pytest.raises(ValueError, match="rows=3 must be at least files=16"):
        generate_sample(tmp_path, rows=3)
