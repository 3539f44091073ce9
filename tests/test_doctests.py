"""The examples in the public API's docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pyarrow as pa
import pytest

import dataflow as df

PUBLIC_MODULES = [
    "dataflow.aggregate",
    "dataflow.block",
    "dataflow.context",
    "dataflow.dataset",
    "dataflow.errors",
    "dataflow.dataset_all_to_all",
    "dataflow.exec.metering",
    "dataflow.distributed",
    "dataflow.expressions",
    "dataflow.grouped_data",
    "dataflow.iterators",
    "dataflow.plan.logical",
    "dataflow.read_api",
    "dataflow.session",
    "dataflow.sources.avro",
    "dataflow.sources.datasource",
    "dataflow.sources.sql",
    "dataflow.sources.tfrecords",
    "dataflow.sources.webdataset",
    "dataflow.torch_convert",
    "dataflow.torch_utils",
    "dataflow.udf",
    "runtime.errors",
    "runtime.resources",
]


@pytest.fixture
def inline_session():
    df.init("inline")
    yield
    df.shutdown()


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_docstring_examples_run(inline_session, name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(
        module,
        extraglobs={"df": df, "pa": pa, "np": np},
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
        report=True,
    )
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
