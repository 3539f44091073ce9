"""dumps_function/loads_function: code pickled by value keeps its file name, and
the driver's source lines of that file reach the loading process's linecache."""

from __future__ import annotations

import functools
import linecache
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runtime import fnpickle
from runtime.fnpickle import dumps_function, loads_function

HERE = str(Path(__file__).resolve())


def make_closure():
    offset = 3

    def inner(x):
        return [v + offset for v in x]  # a comprehension: a nested code object in 3.11

    return inner


def code_filenames(fn) -> set[str]:
    """co_filename of ``fn``'s code and of every code object nested in it."""
    names, todo = set(), [fn.__code__]
    while todo:
        code = todo.pop()
        names.add(code.co_filename)
        todo += [c for c in code.co_consts if hasattr(c, "co_filename")]
    return names


def test_code_pickled_by_value_keeps_its_file_name() -> None:
    class Model:  # defined in a function: pickled by value, with its methods
        def __call__(self, x):
            return [v * 2 for v in x]

    fns = {
        "lambda": lambda x: x + 1,
        "closure": make_closure(),
        "method": Model.__call__,
    }
    for name, fn in fns.items():
        back = loads_function(dumps_function(fn))
        assert code_filenames(back) == {HERE}, name
    assert loads_function(dumps_function(make_closure()))([1, 2]) == [4, 5]
    model = loads_function(dumps_function(Model))()
    assert model([1, 2]) == [2, 4]
    assert loads_function(dumps_function(functools.partial(fns["lambda"])))(1) == 2


def test_another_process_gets_file_names_and_source_lines(tmp_path: Path) -> None:
    """A fresh interpreter that cannot read the file still formats the traceback
    with its source line: the lines came with the function."""
    name = "<cell-42>"
    src = "def udf(x):\n    return x / 0  # the failing line\n"
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    namespace: dict = {}
    exec(compile(src, name, "exec"), namespace)
    (tmp_path / "fn.pkl").write_bytes(dumps_function(namespace["udf"]))
    script = (
        "import sys, traceback; from runtime.fnpickle import loads_function\n"
        f"fn = loads_function(open({str(tmp_path / 'fn.pkl')!r}, 'rb').read())\n"
        "try:\n    fn(1)\nexcept ZeroDivisionError:\n    traceback.print_exc()\n"
    )
    root = str(Path(fnpickle.__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=root, check=True
    )
    assert 'File "<cell-42>", line 2, in udf\n    return x / 0  # the failing line\n' in out.stderr


def test_big_files_are_not_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fnpickle, "MAX_SOURCE_BYTES", 10)
    sources, _ = pickle.loads(dumps_function(lambda x: x))
    assert sources == {}
    monkeypatch.undo()
    sources, _ = pickle.loads(dumps_function(lambda x: x))
    assert list(sources) == [HERE]
    assert sources[HERE] == linecache.getlines(HERE)


def test_unpicklable_state_raises() -> None:
    lock = threading.Lock()
    with pytest.raises(TypeError, match="lock"):
        dumps_function(lambda: lock)
