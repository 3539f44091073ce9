"""The limit operator: passes the first ``n`` rows and then tells the executor
that upstream may stop (running tasks are cancelled, no new ones start)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from dataflow.exec.interfaces import ExecEnv, PhysicalOperator, RefBundle

if TYPE_CHECKING:
    from runtime.backends.base import Backend


class LimitOperator(PhysicalOperator):
    """Keeps ``n`` rows; the block that crosses the limit is sliced in the driver
    (a zero-copy read of the block and one put of the kept rows)."""

    def __init__(self, name: str, inputs: list[PhysicalOperator], n: int) -> None:
        super().__init__(name, inputs)
        self.remaining = n
        self._out: deque[RefBundle] = deque()
        self._backend: Backend | None = None

    def start(self, env: ExecEnv) -> None:
        self._backend = env.backend

    def _add_input(self, bundle: RefBundle, input_index: int) -> None:
        if self.remaining >= bundle.num_rows:
            self.remaining -= bundle.num_rows
            self._out.append(bundle)
            return
        keep, drop, sliced = [], [], None
        for ref in bundle.refs:
            if self.remaining >= ref.num_rows:
                keep.append(ref)
                self.remaining -= ref.num_rows
            elif self.remaining > 0:
                sliced = self._backend.put(self._backend.get(ref).slice(0, self.remaining))
                drop.append(ref)
                self.remaining = 0
            else:
                drop.append(ref)
        if bundle.owns_blocks and drop:
            self._backend.free(drop)
        if keep:
            origins = bundle.block_origins()[: len(keep)]
            self._out.append(
                RefBundle(tuple(keep), bundle.schema, bundle.seq, bundle.owns_blocks, origins)
            )
        if sliced is not None:
            # A new object this pipeline owns, even when the input was borrowed.
            origins = bundle.block_origins()[len(keep) : len(keep) + 1]
            self._out.append(
                RefBundle((sliced,), bundle.schema, bundle.seq + (len(keep),), origins=origins)
            )

    def wants_no_more_input(self) -> bool:
        return self.remaining <= 0

    def input_exhausted(self) -> bool:
        return self.remaining <= 0 or self.all_inputs_done

    def has_next(self) -> bool:
        return bool(self._out)

    def _get_next(self) -> RefBundle:
        return self._out.popleft()

    def output_bytes(self) -> int:
        return sum(b.nbytes for b in self._out)

    def shutdown(self) -> None:
        owned = [r for b in self._out if b.owns_blocks for r in b.refs]
        self._out.clear()
        if owned and self._backend is not None:
            self._backend.free(owned)
