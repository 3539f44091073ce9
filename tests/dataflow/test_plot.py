"""plot_stats: a PNG from a run's timeline, and its argument errors."""

from __future__ import annotations

import pytest

import dataflow as df
from dataflow import session
from dataflow.exec.stats import DatasetStats
from dataflow.exec.trace import Timeline


@pytest.fixture(scope="module")
def local():
    started = session.init("local", num_cpus=2)
    yield started
    session.shutdown()


def test_plot_of_a_run_is_a_png(local, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(df.DataContext.get_current(), "enable_progress_bars", False)
    ds = df.range(20_000, override_num_blocks=8).map_batches(lambda b: b)
    ds.materialize()
    out = df.plot_stats(ds, tmp_path / "run.png", dpi=50)
    assert out == tmp_path / "run.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (500, 375)  # 10 x 7.5 in at 50 dpi
        assert len(img.getcolors(maxcolors=1 << 16) or ()) > 10  # drawn, not blank


def test_plot_of_a_stats_object(tmp_path):
    tl = Timeline(
        ["read", "map"],
        0.0,
        [0.0, 1.0],
        [[0, 10], [0, 5]],
        [[1, 0], [0, 1]],
        [[0, 0], [0, 0]],
        [0, 1 << 20],
        [0, 1 << 20],
    )
    out = df.plot_stats(DatasetStats(wall_s=1.0, timeline=tl), str(tmp_path / "s.png"))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="has not run yet"):
        df.plot_stats(df.range(3), tmp_path / "x.png")
    with pytest.raises(TypeError, match="expects a Dataset that has run"):
        df.plot_stats("stats", tmp_path / "x.png")
    with pytest.raises(ValueError, match="no timeline"):
        df.plot_stats(DatasetStats(), tmp_path / "x.png")
    tl = Timeline(["a"], 0.0, [0.0, 1.0], [[0, 1]], [[0, 0]], [[0, 0]], [0, 0], [0, 0])
    with pytest.raises(FileNotFoundError, match="missing"):
        df.plot_stats(DatasetStats(timeline=tl), tmp_path / "missing" / "x.png")
    assert not (tmp_path / "x.png").exists()
