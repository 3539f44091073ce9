"""Publishes a running pipeline to ``dataflow.metrics`` (Prometheus ``/metrics``
and ``dataflow top``): an observer that registers the run at start and, at
each scrape, samples the operators' live counters and the stats collector's
totals. It only reads, from the metrics server's thread; the loop pays nothing.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import TYPE_CHECKING

from dataflow import metrics
from dataflow.exec.metering import step_stats
from dataflow.exec.stats import ExecutorObserver

if TYPE_CHECKING:
    from dataflow.exec.interfaces import PhysicalOperator
    from dataflow.exec.stats import DatasetStats
    from runtime.backends.base import StoreStats


class MetricsExporter(ExecutorObserver):
    """Registers this run with ``dataflow.metrics`` for its lifetime;
    ``output`` is the executor's queue to the consumer (its ``len`` is exported)."""

    def __init__(self, stats: DatasetStats, output: Sized | None = None) -> None:
        self._stats = stats
        self._output = output
        self._ops: list[PhysicalOperator] = []
        self._key: int | None = None
        self._run = ""

    def on_start(self, ops: list[PhysicalOperator]) -> None:
        self._ops = list(ops)
        self._run = metrics.new_run_name()
        self._key = metrics.register_run(self.sample)

    def on_finish(self, store: StoreStats | None) -> None:
        if self._key is not None:
            metrics.finish_run(self._key)
            self._key = None

    def sample(self) -> metrics.RunSample:
        """The run now (called from the metrics server's thread)."""
        stats = self._stats
        out = metrics.RunSample(
            self._run,
            running=True,
            output_queue_blocks=len(self._output) if self._output is not None else 0,
            iterator_wait_seconds=stats.iterator_wait_s,
            iterator_user_seconds=stats.iterator_user_s,
        )
        for op, s in zip(self._ops, list(stats.operators)):
            m = op.metrics
            sample = metrics.OperatorSample(
                op.name,
                rows_in=m.rows_in,
                rows_out=m.rows_out,
                bytes_in=m.bytes_in,
                bytes_out=m.bytes_out,
                tasks_running=op.num_active_tasks(),
                tasks_finished=s.tasks,
                tasks_failed=s.failed_tasks,
                tasks_retried=s.retries,
                task_seconds=s.task_wall_s,
                cpu_seconds=s.cpu_s,
                backpressure_seconds=s.backpressure_s,
                queued_bytes=m.queued_bytes,
                output_bytes=op.output_bytes(),
            )
            # A copy (one C call): the loop thread adds to the counters meanwhile.
            # Live rows in come from the operator: the collector copies them at the end.
            for step in step_stats(s.step_infos, dict(s.counters), m.rows_in):
                sample.steps.append(
                    metrics.StepSample(
                        step.name,
                        step.kind,
                        rows_in=step.rows_in,
                        rows_out=step.rows_out,
                        bytes_out=step.bytes_out,
                        seconds=step.wall_s,
                        cpu_seconds=step.cpu_s,
                        files=step.files,
                        rows_written=step.rows_written,
                        bytes_written=step.bytes_written,
                    )
                )
            out.operators.append(sample)
        return out
