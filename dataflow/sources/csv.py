"""CSV files through ``pyarrow.csv`` (options pass through; ``.gz`` etc. detected).

>>> src = CSVDatasource("data/*.csv", parse_options=pyarrow.csv.ParseOptions(delimiter=";"))
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from dataflow.sources.file_based import FileBasedDatasource
from dataflow.sources.paths import FileSystems


class CSVDatasource(FileBasedDatasource):
    """Reads CSV; ``read_options``, ``parse_options`` and ``convert_options`` are
    ``pyarrow.csv`` objects passed to ``pyarrow.csv.read_csv`` unchanged."""

    reads_without_gil = True

    where = "read_csv"
    expansion = 1.5

    def __init__(
        self,
        paths: Any,
        *,
        read_options: pacsv.ReadOptions | None = None,
        parse_options: pacsv.ParseOptions | None = None,
        convert_options: pacsv.ConvertOptions | None = None,
        **file_kwargs: Any,
    ) -> None:
        super().__init__(paths, **file_kwargs)
        self.read_options = read_options
        self.parse_options = parse_options
        self.convert_options = convert_options

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        with self.open_stream(fs, path, "detect") as f:
            yield pacsv.read_csv(
                f,
                read_options=self.read_options,
                parse_options=self.parse_options,
                convert_options=self.convert_options,
            )
