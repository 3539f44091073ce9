"""``.npy`` files: each file's array becomes rows of column ``data`` (first axis =
rows; more dimensions become a tensor column).

>>> NumpyDatasource("arrays/").files()   # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from dataflow.block import array_from_numpy
from dataflow.sources.file_based import FileBasedDatasource
from dataflow.sources.paths import FileSystems


class NumpyDatasource(FileBasedDatasource):
    """Reads ``.npy`` files into column ``data`` (pickled object arrays only
    with ``allow_pickle``)."""

    where = "read_numpy"
    default_extensions = ("npy",)
    allow_pickle = False
    """Ray's ``allow_pickle``: load object arrays (runs pickle: trusted files only)."""

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        with self.open_stream(fs, path) as f:
            data = f.read()
        arr = np.load(io.BytesIO(data), allow_pickle=self.allow_pickle)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        yield pa.table({"data": array_from_numpy(arr, "data")})
