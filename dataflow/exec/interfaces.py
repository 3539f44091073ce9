"""Physical-plan interfaces: ``RefBundle`` (what flows) and ``PhysicalOperator``.

A ``RefBundle`` is one or more blocks in the object store plus their metadata;
operators pass bundles downstream and the executor frees refs when their last
consumer is done (``owns_blocks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.refs import ObjectRef

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class RefBundle:
    """Blocks in the store, with what is known of them.

    ``seq`` orders bundles for ``preserve_order`` (a tuple so that a task's k-th
    output of input s sorts as ``(s, k)``); ``owns_blocks`` says whether the
    consumer may free the refs once done with them.
    """

    refs: tuple[ObjectRef, ...]
    schema: pa.Schema | None = None
    seq: tuple[int, ...] = (0,)
    owns_blocks: bool = True

    @property
    def num_rows(self) -> int:
        return sum(r.num_rows for r in self.refs)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.refs)
