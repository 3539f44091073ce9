"""ORC files (``pyarrow.orc``): each stripe is a table; selected columns are
the only ones decoded.

>>> OrcDatasource("data/").files()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from dataflow.sources.file_based import FileBasedDatasource
from dataflow.sources.paths import FileSystems


class OrcDatasource(FileBasedDatasource):
    """Reads ORC files stripe by stripe (``pyarrow.orc.ORCFile``)."""

    where = "read_orc"
    default_extensions = ("orc",)
    reads_without_gil = True
    sequential = True

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        import pyarrow.orc as orc

        with fs.arrow.open_input_file(path) as f:
            reader = orc.ORCFile(f)
            names = set(reader.schema.names)
            columns = None if self.columns is None else [c for c in self.columns if c in names]
            for i in range(reader.nstripes):
                stripe = reader.read_stripe(i, columns=columns)
                yield (
                    pa.Table.from_batches([stripe])
                    if isinstance(stripe, pa.RecordBatch)
                    else stripe
                )
