"""Source operator for blocks already in memory or in the store."""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING

from dataflow.block import split_to_max_size
from dataflow.exec.interfaces import BlockOrigin, ExecEnv, PhysicalOperator, RefBundle

if TYPE_CHECKING:
    import pyarrow as pa

    from runtime.backends.base import Backend


class InputBuffer(PhysicalOperator):
    """Emits fixed bundles: ``InputData`` tables are put into the store at start
    (and owned by the pipeline), ``MaterializedData`` bundles are only borrowed.

    >>> InputBuffer("from_blocks", tables=[pa.table({"x": [1]})])  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        *,
        tables: list[pa.Table] | None = None,
        bundles: list[RefBundle] | None = None,
    ) -> None:
        super().__init__(name, [])
        self._tables = tables or []
        self._out: deque[RefBundle] = deque(
            dataclasses.replace(b, owns_blocks=False) for b in bundles or ()
        )
        self._backend: Backend | None = None

    def start(self, env: ExecEnv) -> None:
        self._backend = env.backend
        max_bytes = env.ctx.target_max_block_size
        seq = 0
        try:
            for table in self._tables:
                for piece in split_to_max_size(table, max_bytes):
                    ref = env.backend.put(piece)
                    origin = BlockOrigin("the in-memory data", seq)
                    self._out.append(
                        RefBundle(refs=(ref,), schema=piece.schema, seq=(seq,), origins=(origin,))
                    )
                    seq += 1
        except BaseException:  # e.g. a full spill disk: free the blocks already put
            self.shutdown()
            raise
        self._tables = []
        self.metrics.queued_bytes = sum(b.nbytes for b in self._out)

    def has_next(self) -> bool:
        return bool(self._out)

    def _get_next(self) -> RefBundle:
        bundle = self._out.popleft()
        self.metrics.queued_bytes -= bundle.nbytes
        return bundle

    def output_bytes(self) -> int:
        return self.metrics.queued_bytes

    def shutdown(self) -> None:
        owned = [r for b in self._out if b.owns_blocks for r in b.refs]
        self._out.clear()
        self.metrics.queued_bytes = 0
        if owned and self._backend is not None:
            self._backend.free(owned)
