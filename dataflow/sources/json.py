"""JSON files: JSON Lines through ``pyarrow.json``, or one JSON array of objects.

>>> src = JSONDatasource("events/")   # each file: JSON Lines or ``[{...}, ...]``
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson

from dataflow.sources.file_based import FileBasedDatasource
from dataflow.sources.paths import FileSystems


class JSONDatasource(FileBasedDatasource):
    """Reads JSON Lines (``pyarrow.json.read_json`` with ``read_options`` /
    ``parse_options``) and files holding a single array of objects."""

    reads_without_gil = True

    where = "read_json"
    expansion = 0.7
    default_extensions = (
        "json",
        "jsonl",
        "json.gz",
        "jsonl.gz",
        "json.br",
        "jsonl.br",
        "json.zst",
        "jsonl.zst",
        "json.lz4",
        "jsonl.lz4",
    )
    lines = False
    """Ray's ``lines=True``: every file is JSON Lines (no array-of-objects check)."""

    def __init__(
        self,
        paths: Any,
        *,
        read_options: pajson.ReadOptions | None = None,
        parse_options: pajson.ParseOptions | None = None,
        **file_kwargs: Any,
    ) -> None:
        super().__init__(paths, **file_kwargs)
        self.read_options = read_options
        self.parse_options = parse_options

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        with self.open_stream(fs, path, "detect") as f:
            data = f.read()
        if not self.lines and data.lstrip()[:1] == b"[":
            rows = json.loads(data)
            if not all(isinstance(r, dict) for r in rows):
                raise ValueError("a JSON array file must hold objects (one per row)")
            yield pa.Table.from_pylist(rows)
            return
        yield pajson.read_json(
            pa.BufferReader(data), read_options=self.read_options, parse_options=self.parse_options
        )
