"""Object references: the small, picklable handles blocks travel as."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A handle on one Arrow table in an object store.

    ``location`` says where the bytes were first written (``"shm"``, ``"disk"``
    or ``"mem"`` for the in-process store); a store may move an object (spill)
    without changing its ref, so readers resolve ``id`` and never trust
    ``location`` for the path. ``session`` names the store that owns it.
    """

    id: str
    nbytes: int
    num_rows: int
    location: str
    session: str

    def __reduce__(self) -> tuple:
        # Refs cross a pipe with every task: a plain tuple pickles several
        # times faster than dataclasses' generic slots state.
        return (ObjectRef, (self.id, self.nbytes, self.num_rows, self.location, self.session))

    def __repr__(self) -> str:
        return f"ObjectRef({self.id[:12]}, rows={self.num_rows}, bytes={self.nbytes})"
