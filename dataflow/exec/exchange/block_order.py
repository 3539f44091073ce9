"""``randomize_block_order``: hold every input bundle, then emit them in a
seeded random order. No task runs and no data moves; rows inside a block keep
their order.
"""

from __future__ import annotations

import random

from dataflow.exec.interfaces import ExecEnv, PhysicalOperator, RefBundle


class RandomizeBlockOrderOperator(PhysicalOperator):
    """A barrier that permutes bundles: input order (by ``seq``) first, so a
    seed gives the same order on every run whatever order blocks arrived in.

    >>> RandomizeBlockOrderOperator("randomize_block_order", [upstream], seed=0)  # doctest: +SKIP
    """

    def __init__(self, name: str, inputs: list[PhysicalOperator], seed: int | None) -> None:
        super().__init__(name, inputs)
        self.seed = seed
        self._held: list[RefBundle] = []
        self._out: list[RefBundle] = []
        self._backend = None

    def start(self, env: ExecEnv) -> None:
        self._backend = env.backend

    def _add_input(self, bundle: RefBundle, input_index: int) -> None:
        self._held.append(bundle)
        self.metrics.queued_bytes += bundle.nbytes

    def _inputs_done(self, input_index: int) -> None:
        held = sorted(self._held, key=lambda b: b.seq)
        random.Random(self.seed).shuffle(held)
        self._held = []
        self.metrics.queued_bytes = 0
        # Reversed so that pop() from the end hands them out in shuffled order.
        self._out = held[::-1]

    def _has_queued(self) -> bool:
        return bool(self._held)

    def has_next(self) -> bool:
        return bool(self._out)

    def _get_next(self) -> RefBundle:
        bundle = self._out.pop()
        return RefBundle(
            bundle.refs, bundle.schema, (len(self._out),), bundle.owns_blocks, bundle.origins
        )

    def output_bytes(self) -> int:
        return sum(b.nbytes for b in self._out)

    def shutdown(self) -> None:
        refs = [r for b in self._held + self._out if b.owns_blocks for r in b.refs]
        self._held, self._out = [], []
        if refs and self._backend is not None:
            self._backend.free(refs)
