"""A UDF that raises in a worker shows the user's file, line and source text, as
a local call would, on every backend; ``__cause__`` is the original exception.

Every function and class here is pickled by value (as those of a script or a
notebook are): that is the case in which cloudpickle would otherwise rename
their file ``<dynamic-code>``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

import dataflow as df
from dataflow import session

HERE = Path(__file__).resolve()
SOURCE = HERE.read_text().splitlines()


def line_of(marker: str) -> tuple[int, str]:
    """(line number, stripped text) of the one line of this file holding ``marker``."""
    found = [(i + 1, text.strip()) for i, text in enumerate(SOURCE) if marker in text]
    assert len(found) == 2, found  # the line itself and the test's reference to it
    return found[0]


@pytest.fixture(
    scope="module", params=["inline", "local", pytest.param("ray", marks=pytest.mark.slow)]
)
def any_backend(request) -> Iterator[str]:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    session.init(request.param, num_cpus=2)
    yield request.param
    session.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def fail_module_level(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if 7 in batch["id"]:
        raise ValueError("module-level UDF saw id 7")  # @raise-module-level
    return batch


def fail_with_arg(batch: dict[str, np.ndarray], bad: int) -> dict[str, np.ndarray]:
    if bad in batch["id"]:
        raise ValueError(f"fn_args UDF saw id {bad}")  # @raise-fn-args
    return batch


class FailingModel:
    def __init__(self, bad: int) -> None:
        self.bad = bad

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.bad in batch["id"]:
            raise ValueError(f"actor UDF saw id {self.bad}")  # @raise-actor
        return batch


def make_nested():
    limit = 7

    def nested(row: dict) -> dict:
        if row["id"] == limit:
            raise ValueError("nested UDF saw id 7")  # @raise-nested
        return row

    return nested


def check(error: df.UserCodeError, marker: str, operator: str, cause_text: str) -> None:
    line, text = line_of(marker)
    message = str(error)
    assert f"{operator} failed on " in message
    assert f'File "{HERE}", line {line}, in ' in message
    # The source line follows its "File" line, as in a local traceback.
    after = message.split(f'File "{HERE}", line {line}, in ', 1)[1].splitlines()
    assert after[1].strip() == text
    assert "<dynamic-code>" not in message
    assert isinstance(error.__cause__, ValueError)
    assert str(error.__cause__) == cause_text


def test_module_level_function(any_backend: str) -> None:
    ds = df.range(20, override_num_blocks=2).map_batches(fail_module_level)
    with pytest.raises(df.UserCodeError) as info:
        ds.take_all()
    check(
        info.value,
        "@raise-module-level",
        "map_batches(fail_module_level)",
        "module-level UDF saw id 7",
    )


def test_map_batches_with_fn_args(any_backend: str) -> None:
    ds = df.range(20, override_num_blocks=2).map_batches(fail_with_arg, fn_args=(13,))
    with pytest.raises(df.UserCodeError) as info:
        ds.take_all()
    check(info.value, "@raise-fn-args", "map_batches(fail_with_arg)", "fn_args UDF saw id 13")


def test_lambda(any_backend: str) -> None:
    ds = df.range(20, override_num_blocks=2).map(lambda r: {"id": 10 // (r["id"] - 5)})  # @lambda
    with pytest.raises(df.UserCodeError) as info:
        ds.take_all()
    line, text = line_of("# @lambda")
    message = str(info.value)
    assert f'File "{HERE}", line {line}, in <lambda>\n    {text}' in message
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_nested_function(any_backend: str) -> None:
    ds = df.range(20, override_num_blocks=2).map(make_nested())
    with pytest.raises(df.UserCodeError) as info:
        ds.take_all()
    check(info.value, "@raise-nested", "map(nested)", "nested UDF saw id 7")


def test_callable_class_in_an_actor_pool(any_backend: str) -> None:
    ds = df.range(20, override_num_blocks=2).map_batches(
        FailingModel, fn_constructor_args=(11,), concurrency=1
    )
    with pytest.raises(df.UserCodeError) as info:
        ds.take_all()
    check(info.value, "@raise-actor", "map_batches(FailingModel)", "actor UDF saw id 11")


def test_a_notebook_cell_keeps_its_source(any_backend: str) -> None:
    """Code whose file exists only in the driver's linecache (a notebook cell):
    the worker formats its traceback from the lines the driver shipped."""
    import linecache

    name = "<notebook-cell-7>"
    src = "def cell_udf(row):\n    return {'id': row['id'] // 0}  # from the cell\n"
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    namespace: dict = {}
    exec(compile(src, name, "exec"), namespace)
    with pytest.raises(df.UserCodeError) as info:
        df.range(4).map(namespace["cell_udf"]).take_all()
    assert (
        f"File \"{name}\", line 2, in cell_udf\n    return {{'id': row['id'] // 0}}  # from the cell"
        in str(info.value)
    )
