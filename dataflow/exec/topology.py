"""The physical DAG as the executor walks it: operators upstream first, each
operator's single downstream consumer, and the moves that connect them."""

from __future__ import annotations

from typing import Protocol

from dataflow.exec.interfaces import PhysicalOperator, RefBundle


class Topology:
    """Operators of the DAG ending at ``sink``, in topological order.

    >>> topo = Topology(sink)  # doctest: +SKIP
    >>> topo.ops[-1] is sink
    True
    """

    def __init__(self, sink: PhysicalOperator) -> None:
        self.sink = sink
        self.ops: list[PhysicalOperator] = []
        self._downstream: dict[int, tuple[PhysicalOperator, int]] = {}
        self._done_sent: set[int] = set()
        self._stopped_upstream: set[int] = set()
        self._visit(sink)

    def _visit(self, op: PhysicalOperator) -> None:
        if any(o is op for o in self.ops):
            raise ValueError(f"{op.name} feeds two operators; the physical DAG must be a tree")
        for i, child in enumerate(op.input_dependencies):
            self._visit(child)
            self._downstream[id(child)] = (op, i)
        self.ops.append(op)

    def upstream_of(self, op: PhysicalOperator) -> list[PhysicalOperator]:
        """Every operator that feeds ``op``, directly or not."""
        out: list[PhysicalOperator] = []
        stack = list(op.input_dependencies)
        while stack:
            o = stack.pop()
            out.append(o)
            stack.extend(o.input_dependencies)
        return out

    def move_outputs(self, output: OutputSink) -> int:
        """Move finished bundles one hop downstream; the sink's go to ``output``
        while it has room (a full consumer queue leaves them in the sink)."""
        moved = 0
        for op in self.ops:
            if op is self.sink:
                while op.has_next() and output.has_room():
                    output.put(op.get_next())
                    moved += 1
                continue
            target, index = self._downstream[id(op)]
            while op.has_next():
                target.add_input(op.get_next(), index)
                moved += 1
        return moved

    def propagate_completion(self) -> None:
        """Tell each operator when one of its inputs will send nothing more, and
        stop everything upstream of an operator that needs no more input."""
        for op in self.ops:
            if op is not self.sink and id(op) not in self._done_sent and op.completed():
                self._done_sent.add(id(op))
                target, index = self._downstream[id(op)]
                target.inputs_done(index)
            if id(op) not in self._stopped_upstream and op.wants_no_more_input():
                self._stopped_upstream.add(id(op))
                for up in self.upstream_of(op):
                    up.finish_early()
                for i in range(len(op.input_dependencies)):
                    if not op._inputs_complete[i]:
                        op.inputs_done(i)

    def done(self) -> bool:
        return self.sink.completed()


class OutputSink(Protocol):
    """Where the sink's bundles go: the consumer's bounded queue."""

    def has_room(self) -> bool: ...

    def put(self, bundle: RefBundle) -> None: ...
