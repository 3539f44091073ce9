"""Whole-file and line-oriented sources: ``read_text`` (column ``text``, one row per
line) and ``read_binary_files`` (column ``bytes``, one row per file).

>>> TextDatasource("logs/").files()[0].path     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataflow.sources.file_based import FileBasedDatasource
from dataflow.sources.paths import FileSystems


class TextDatasource(FileBasedDatasource):
    """One row per line in column ``text`` (``\\n`` or ``\\r\\n`` endings);
    ``drop_empty_lines`` drops blank lines as Ray Data does by default."""

    where = "read_text"
    expansion = 1.3

    def __init__(
        self,
        paths: Any,
        *,
        encoding: str = "utf-8",
        drop_empty_lines: bool = True,
        **file_kwargs: Any,
    ) -> None:
        super().__init__(paths, **file_kwargs)
        self.encoding = encoding
        self.drop_empty_lines = drop_empty_lines

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        with self.open_stream(fs, path, "detect") as f:
            data = f.read()
        text = data.decode(self.encoding)
        lines = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten()
        lines = pc.utf8_rtrim(lines, "\r")
        if self.drop_empty_lines:
            lines = lines.filter(pc.not_equal(lines, ""))
        elif text.endswith("\n"):
            lines = lines.slice(0, len(lines) - 1)
        yield pa.table({"text": lines.cast(pa.string())})


class BinaryDatasource(FileBasedDatasource):
    """One row per file: its content in column ``bytes``."""

    where = "read_binary_files"

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        with self.open_stream(fs, path) as f:
            data = f.read()
        yield pa.table({"bytes": pa.array([data], pa.binary())})
