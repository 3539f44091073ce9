"""Progress bars: when they show, what each line says, and the builtin observer set."""

from __future__ import annotations

import io
import logging
import re
import sys
import types

import pytest

import dataflow as df
from dataflow import session
from dataflow.exec import progress
from dataflow.exec.progress import ProgressBars, builtin_observers, display_mode
from dataflow.exec.stall import StallDetector
from dataflow.exec.stats import DatasetStats
from dataflow.exec.trace import ChromeTrace, TimelineRecorder


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def local():
    started = session.init("local", num_cpus=2)
    yield started
    session.shutdown()


def test_display_mode_follows_the_context_and_the_stream(monkeypatch):
    ctx = df.DataContext()
    assert display_mode(ctx, io.StringIO()) is None  # not a terminal (a CI log, a pipe)
    assert display_mode(ctx, _Tty()) == "terminal"
    assert display_mode(ctx.replace(enable_progress_bars=False), _Tty()) is None
    monkeypatch.setenv("DATAFLOW_DISABLE_PROGRESS_BARS", "1")
    assert display_mode(df.DataContext._from_env(), _Tty()) is None


def test_a_jupyter_kernel_gets_the_notebook_display(monkeypatch):
    shell = type("ZMQInteractiveShell", (), {})()
    fake = types.SimpleNamespace(get_ipython=lambda: shell)
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert display_mode(df.DataContext(), io.StringIO()) == "notebook"


def test_without_tqdm_a_terminal_gets_one_install_hint(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setattr(progress, "_hinted_tqdm", False)
    with caplog.at_level(logging.WARNING, logger="dataflow"):
        assert display_mode(df.DataContext(), _Tty()) is None
        assert display_mode(df.DataContext(), _Tty()) is None
    assert caplog.text.count("pip install 'dataflow[progress]'") == 1


def test_builtin_observers_follow_the_context(local, tmp_path):
    stats = DatasetStats()
    quiet = df.DataContext(enable_progress_bars=False, stall_warning_s=0)
    assert [type(o) for o in builtin_observers(quiet, local, stats)] == [TimelineRecorder]
    full = quiet.replace(stall_warning_s=5.0, trace_path=str(tmp_path / "t.json"))
    kinds = [type(o) for o in builtin_observers(full, local, stats)]
    assert kinds == [TimelineRecorder, StallDetector, ChromeTrace]


def test_terminal_bars_show_every_operator_and_the_final_counts(local, monkeypatch, capsys):
    ctx = df.DataContext.get_current()
    monkeypatch.setattr(ctx, "enable_progress_bars", True)
    monkeypatch.setattr(progress, "display_mode", lambda ctx: "terminal")
    ds = df.range(6000, override_num_blocks=6).map_batches(lambda b: b).limit(5000)
    ids = [r["id"] for r in ds.take_all()]
    assert len(ids) == len(set(ids)) == 5000 and set(ids) <= set(range(6000))
    err = capsys.readouterr().err
    final = {}
    for line in re.split(r"[\r\n]", err):
        m = re.match(r"\s*(dataflow|read_range->map_batches\(<lambda>\)|limit\(5000\)): (.*)", line)
        if m:
            final[m.group(1)] = m.group(2)
    assert set(final) == {"dataflow", "read_range->map_batches(<lambda>)", "limit(5000)"}, err
    assert final["limit(5000)"].startswith("5.00k rows")
    assert (
        final["dataflow"].startswith("5.00k rows") and "tasks running, store" in final["dataflow"]
    )
    assert "0 running" in final["read_range->map_batches(<lambda>)"]


def test_bars_refuse_an_unknown_mode(local):
    with pytest.raises(ValueError, match="mode must be 'terminal' or 'notebook'"):
        ProgressBars(local, "html")


def test_a_write_counts_rows_written_and_files_not_result_records(
    local, monkeypatch, capsys, tmp_path
):
    ctx = df.DataContext.get_current()
    monkeypatch.setattr(ctx, "enable_progress_bars", True)
    monkeypatch.setattr(progress, "display_mode", lambda ctx: "terminal")
    df.range(3000, override_num_blocks=3).map_batches(lambda b: b).write_parquet(str(tmp_path))
    err = capsys.readouterr().err
    final = {}
    for line in re.split(r"[\r\n]", err):
        # The bar's label is the fused name, cut to 40 characters.
        m = re.match(r"\s*(dataflow|read_range->map_batches\(<lambda>\)->w\S*): (.*)", line)
        if m:
            final[m.group(1)] = m.group(2)
    files = len(list(tmp_path.glob("*.parquet")))
    (op,) = [v for k, v in final.items() if k != "dataflow"]
    assert op.startswith("3.00k rows written") and f"{files} files written" in op, op
    assert final["dataflow"].startswith("3.00k rows written"), final["dataflow"]


def test_a_read_line_counts_its_files(local):
    from dataflow.exec.progress import _OpLine

    class _Op:
        name = "read_parquet"
        metrics = types.SimpleNamespace(rows_out=10, bundles_out=2, queued_bytes=0)

        def steps(self):
            from dataflow.exec.metering import StepInfo

            return (StepInfo("read_parquet", "read"),)

        def num_active_tasks(self):
            return 0

    line = _OpLine(_Op(), 0.0)
    line.task_done({"read.files": 3.0})
    line.task_done({"read.files": 2.0})
    line.update(1.0)
    assert (
        line.text()
        == "read_parquet: 10 rows, 10 rows/s, 5 files read, 2 blocks, 0 running, 0.0 MiB queued"
    )


class _FakeBar:
    """Records what ProgressBars does to a tqdm bar."""

    made: list[_FakeBar] = []

    def __init__(self, desc: str, position: int, unit: str, unit_scale: bool) -> None:
        self.desc, self.unit, self.n, self.closed, self.postfix = desc, unit, 0, False, ""
        _FakeBar.made.append(self)

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text

    def close(self) -> None:
        self.closed = True


def _fake_ipython_display(monkeypatch) -> list:
    shown: list = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def display(obj, display_id=None):
        shown.append(("display", obj))
        return Handle() if display_id else None

    fake = types.SimpleNamespace(Pretty=lambda text: text, display=display)
    monkeypatch.setitem(sys.modules, "IPython.display", fake)
    return shown


def test_notebook_bars_are_tqdm_auto_widgets_with_a_final_text_summary(local, monkeypatch):
    ctx = df.DataContext.get_current()
    monkeypatch.setattr(ctx, "enable_progress_bars", True)
    monkeypatch.setattr(progress, "display_mode", lambda ctx: "notebook")
    monkeypatch.setattr(progress, "_widget_tqdm", lambda: _FakeBar)
    _FakeBar.made = []
    shown = _fake_ipython_display(monkeypatch)
    ids = [
        r["id"] for r in df.range(3000, override_num_blocks=3).map_batches(lambda b: b).take_all()
    ]
    assert sorted(ids) == list(range(3000))
    overall, op = _FakeBar.made
    assert (overall.desc, op.desc) == ("dataflow", "  read_range->map_batches(<lambda>)")
    assert overall.n == op.n == 3000 and overall.closed and op.closed
    assert op.unit == " rows" and "3 blocks, 0 running" in op.postfix
    ((kind, text),) = shown  # one text summary, after the bars closed
    assert kind == "display" and text.startswith("dataflow: 3,000 rows out in")


def test_without_ipywidgets_a_notebook_gets_one_text_block(local, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    assert progress._widget_tqdm() is None
    ctx = df.DataContext.get_current()
    monkeypatch.setattr(ctx, "enable_progress_bars", True)
    monkeypatch.setattr(progress, "display_mode", lambda ctx: "notebook")
    shown = _fake_ipython_display(monkeypatch)
    df.range(2000, override_num_blocks=2).map_batches(lambda b: b).take_all()
    assert shown[0][0] == "display" and all(kind == "update" for kind, _ in shown[1:])
    assert shown[-1][1].startswith("dataflow: 2,000 rows out in")
