"""The Backend contract: every backend passes these tests.

A backend opts in with one line in its own test module::

    class TestLocal(BackendContract):
        backend_name = "local"

Only the ``runtime.backends.base.Backend`` protocol is used here, so the suite
holds for backends whose workers are other processes or other machines.
Behaviour specific to one backend (zero-copy RSS, SIGKILL retries, /dev/shm
cleanup) is tested next to that backend under tests/runtime/. A backend whose
futures are done when ``submit`` returns says so with ``synchronous = True``.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from typing import Any, ClassVar

import cloudpickle
import pyarrow as pa
import pytest

from runtime.backends import get_backend_class
from runtime.errors import ObjectLostError, RemoteTaskError, ResourceError, TaskCancelledError
from runtime.resources import Resources
from runtime.task import current_task

# Task functions travel by value, so remote workers need not import this module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

STORE_BYTES = 256 * 1024 * 1024


# -- task functions and actor classes used by the suite ----------------------


def add_column(tables: list[pa.Table], name: str, value: int):
    for table in tables:
        yield table.append_column(name, pa.array([value] * table.num_rows, pa.int64()))


def emit_nothing(tables: list[pa.Table]):
    return []


def count_rows(tables: list[pa.Table]):
    rows = sum(t.num_rows for t in tables)
    current_task().add("rows_seen", rows)
    current_task().add("calls")
    yield pa.table({"rows": [rows]})


def emit_value(tables: list[pa.Table], value: int):
    yield pa.table({"value": [value]})


def raise_value_error(tables: list[pa.Table], message: str):
    raise ValueError(message)


class UnpicklableError(Exception):
    """Pickles, but cannot be rebuilt: its constructor needs two arguments."""

    def __init__(self, left: str, right: str) -> None:
        super().__init__(f"{left}/{right}")


def raise_unpicklable(tables: list[pa.Table]):
    raise UnpicklableError("left", "right")


def raise_local_class(tables: list[pa.Table]):
    class LocalError(ValueError):  # not importable anywhere: pickles only by value
        pass

    raise LocalError("made in the task")


def yield_int(tables: list[pa.Table]):
    yield 5


def sleep_then_emit(tables: list[pa.Table], seconds: float, tag: str):
    time.sleep(seconds)
    yield pa.table({"tag": [tag]})


class CallCounter:
    """Counts its calls: a worker that caches the function sees 1, 2, 3..."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, tables: list[pa.Table]):
        self.calls += 1
        yield pa.table({"pid": [os.getpid()], "calls": [self.calls]})


class Accumulator:
    def __init__(self) -> None:
        self.total = 0

    def __call__(self, tables: list[pa.Table], k: int):
        self.total += k + sum(t.num_rows for t in tables)
        yield pa.table({"total": [self.total]})


def make_accumulator() -> Accumulator:
    return Accumulator()


def failing_factory() -> Accumulator:
    raise RuntimeError("model weights missing")


def sample_table() -> pa.Table:
    return pa.table(
        {
            "a": pa.array([1, 2, None], pa.int64()),
            "b": ["x", "yy", "\u00e9"],
            "c": [[1], [], [2, 3]],
        }
    )


class BackendContract:
    """Tests every Backend implementation must pass."""

    backend_name: ClassVar[str] = ""
    backend_options: ClassVar[dict[str, Any]] = {}

    @classmethod
    def make_backend(cls) -> Any:
        backend_cls = get_backend_class(cls.backend_name)
        return backend_cls(
            num_cpus=2, num_gpus=0, object_store_memory=STORE_BYTES, **cls.backend_options
        )

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        backend = cls.make_backend()
        yield backend
        backend.shutdown()

    def synchronous(self, backend: Any) -> bool:
        return bool(getattr(backend, "synchronous", False))

    def run(self, backend: Any, fn: Any, inputs=(), args=(), **kwargs: Any):
        handle = backend.register_function(fn)
        try:
            return backend.submit(handle, inputs, args, **kwargs).result(timeout=60)
        finally:
            backend.release_function(handle)

    def tables(self, backend: Any, refs) -> list[pa.Table]:
        return [backend.get(ref) for ref in refs]

    # -- objects -------------------------------------------------------------

    def test_put_get_round_trip(self, backend):
        table = sample_table()
        ref = backend.put(table)
        assert ref.num_rows == 3 and ref.nbytes > 0
        got = backend.get(ref)
        assert got.equals(table)
        assert got.to_pydict() == {"a": [1, 2, None], "b": ["x", "yy", "é"], "c": [[1], [], [2, 3]]}
        backend.free([ref])

    def test_get_after_free_raises_object_lost(self, backend):
        ref = backend.put(pa.table({"x": [1]}))
        backend.free([ref])
        backend.free([ref])  # freeing twice is harmless
        with pytest.raises(ObjectLostError):
            backend.get(ref)

    def test_store_stats_account_puts_and_frees(self, backend):
        table = pa.table({"x": list(range(10_000))})
        before = backend.store_stats()
        refs = [backend.put(table), backend.put(table)]
        during = backend.store_stats()
        assert during.capacity_bytes == STORE_BYTES
        assert during.num_objects == before.num_objects + 2
        assert during.used_bytes >= before.used_bytes + 2 * table.nbytes
        assert during.peak_bytes >= during.used_bytes
        backend.free(refs)
        after = backend.store_stats()
        assert (after.num_objects, after.used_bytes) == (before.num_objects, before.used_bytes)

    # -- tasks ---------------------------------------------------------------

    def test_submit_with_inputs_and_args(self, backend):
        refs = [backend.put(pa.table({"x": [1, 2, 3]})), backend.put(pa.table({"x": [4, 5]}))]
        result = self.run(backend, add_column, refs, ("k", 7))
        outs = self.tables(backend, result.refs)
        assert [t.to_pydict() for t in outs] == [
            {"x": [1, 2, 3], "k": [7, 7, 7]},
            {"x": [4, 5], "k": [7, 7]},
        ]
        assert [r.num_rows for r in result.refs] == [3, 2]
        assert all(r.nbytes > 0 for r in result.refs)
        assert result.schemas == [t.schema for t in outs]
        assert result.schemas[0] == pa.schema([("x", pa.int64()), ("k", pa.int64())])
        backend.free([*refs, *result.refs])

    def test_outputs_feed_the_next_task(self, backend):
        first = self.run(backend, emit_value, (), (41,))
        second = self.run(backend, add_column, first.refs, ("plus", 1))
        assert self.tables(backend, second.refs)[0].to_pydict() == {"value": [41], "plus": [1]}
        backend.free([*first.refs, *second.refs])

    def test_task_may_yield_nothing(self, backend):
        assert self.run(backend, emit_nothing).refs == []

    def test_counters_timing_and_worker(self, backend):
        refs = [backend.put(pa.table({"x": [1, 2, 3]})), backend.put(pa.table({"x": [4, 5]}))]
        result = self.run(backend, count_rows, refs)
        assert result.counters == {"rows_seen": 5.0, "calls": 1.0}
        assert self.tables(backend, result.refs)[0].to_pydict() == {"rows": [5]}
        assert result.start_ts <= result.end_ts and result.wall_s >= 0 and result.cpu_s >= 0
        assert result.worker_id and result.attempts == 1
        backend.free([*refs, *result.refs])

    def test_many_concurrent_tasks_keep_their_results(self, backend):
        handle = backend.register_function(emit_value)
        futures = [backend.submit(handle, (), (i,)) for i in range(40)]
        values = []
        for future in futures:
            result = future.result(timeout=60)
            values.append(self.tables(backend, result.refs)[0]["value"][0].as_py())
            backend.free(result.refs)
        assert values == list(range(40))
        backend.release_function(handle)

    def test_in_driver_task_gives_the_same_result(self, backend):
        ref = backend.put(pa.table({"x": [1, 2]}))
        result = self.run(backend, add_column, [ref], ("k", 3), in_driver=True)
        assert self.tables(backend, result.refs)[0].to_pydict() == {"x": [1, 2], "k": [3, 3]}
        backend.free([ref, *result.refs])

    def test_function_is_cached_per_worker(self, backend):
        handle = backend.register_function(CallCounter(), name="count_calls")
        calls = defaultdict(list)
        for _ in range(6):
            result = backend.submit(handle).result(timeout=60)
            row = self.tables(backend, result.refs)[0].to_pylist()[0]
            calls[row["pid"]].append(row["calls"])
            backend.free(result.refs)
        backend.release_function(handle)
        # One unpickled instance per worker: its counter climbs 1, 2, 3... there.
        assert sum(map(len, calls.values())) == 6
        for seen in calls.values():
            assert seen == list(range(1, len(seen) + 1))

    def test_released_function_can_be_registered_again(self, backend):
        first = backend.register_function(emit_value)
        backend.release_function(first)
        second = backend.register_function(emit_value)
        result = backend.submit(second, (), (9,)).result(timeout=60)
        assert self.tables(backend, result.refs)[0].to_pydict() == {"value": [9]}
        backend.free(result.refs)
        backend.release_function(second)

    # -- errors --------------------------------------------------------------

    def test_user_error_keeps_type_message_and_traceback(self, backend):
        handle = backend.register_function(raise_value_error)
        future = backend.submit(handle, (), ("bad block 7",), name="map_batches(check)")
        with pytest.raises(RemoteTaskError) as info:
            future.result(timeout=60)
        err = info.value
        assert err.type_name == "ValueError"
        assert err.message == "bad block 7"
        assert "ValueError: bad block 7" in str(err)
        assert "raise_value_error" in err.traceback_text
        assert isinstance(err.cause, ValueError) and str(err.cause) == "bad block 7"
        assert err.task_name == "map_batches(check)"
        backend.release_function(handle)

    def test_unpicklable_user_error_still_reports(self, backend):
        handle = backend.register_function(raise_unpicklable)
        with pytest.raises(RemoteTaskError) as info:
            backend.submit(handle).result(timeout=60)
        assert (info.value.type_name, info.value.message) == ("UnpicklableError", "left/right")
        assert "raise_unpicklable" in info.value.traceback_text
        # One rule on every backend, in-process ones too: no cause that could not travel.
        assert info.value.cause is None
        backend.release_function(handle)

    def test_user_error_of_a_local_class_travels_by_value(self, backend):
        handle = backend.register_function(raise_local_class)
        with pytest.raises(RemoteTaskError) as info:
            backend.submit(handle).result(timeout=60)
        cause = info.value.cause
        assert type(cause).__name__ == "LocalError" and isinstance(cause, ValueError)
        assert str(cause) == "made in the task" and cause.args == ("made in the task",)
        backend.release_function(handle)

    def test_non_table_output_is_a_type_error(self, backend):
        handle = backend.register_function(yield_int, name="bad_udf")
        with pytest.raises(RemoteTaskError) as info:
            backend.submit(handle).result(timeout=60)
        assert info.value.type_name == "TypeError"
        assert "bad_udf" in info.value.message and "pyarrow.Table" in info.value.message
        backend.release_function(handle)

    # -- optional capabilities (declared on Backend: every backend answers) ---

    def test_prestart_and_worker_pids_answer(self, backend):
        assert isinstance(backend.prestart(), bool)
        assert isinstance(backend.driver_threads, bool)
        pids = backend.worker_pids()
        assert isinstance(pids, list) and all(isinstance(p, int) for p in pids)

    def test_task_stack_shows_the_running_task_or_says_none(self, backend):
        handle = backend.register_function(sleep_then_emit)
        future = backend.submit(handle, (), (1.5, "slow"))
        time.sleep(0.5)
        stack = backend.task_stack(future, 5.0)
        assert stack is None or "sleep_then_emit" in stack
        backend.free(future.result(timeout=60).refs)
        backend.release_function(handle)

    def test_impossible_request_raises_resource_error(self, backend):
        handle = backend.register_function(emit_value)
        gpus = backend.total_resources().gpu + 1
        with pytest.raises(ResourceError) as info:
            backend.submit(handle, (), (1,), resources=Resources(cpu=1, gpu=gpus), name="embed")
        assert "embed" in str(info.value) and f"{gpus:g}" in str(info.value)
        backend.release_function(handle)

    # -- waiting and cancelling -------------------------------------------------

    def test_wait_any_returns_done_futures(self, backend):
        handle = backend.register_function(sleep_then_emit)
        # The slow task sleeps long enough that the fast one finishes first even
        # when its worker is slow to start (Ray under load); it is cancelled after.
        synchronous = self.synchronous(backend)
        slow = backend.submit(handle, (), (0.5 if synchronous else 20.0, "slow"))
        fast = backend.submit(handle, (), (0.0, "fast"))
        done = backend.wait_any([slow, fast], 30)
        assert fast in done and all(f.done() for f in done)
        if not slow.done():  # a timeout returns only what is done by then
            assert backend.wait_any([slow], 0.01) == []
            backend.cancel(slow)
            with pytest.raises(TaskCancelledError):
                slow.result(timeout=20)
        else:
            backend.free(slow.result(timeout=60).refs)
        backend.free(fast.result(timeout=60).refs)
        assert backend.wait_any([], 0) == []
        backend.release_function(handle)

    def test_cancel_running_task(self, backend):
        if self.synchronous(backend):
            pytest.skip("a synchronous backend's tasks are done when submitted")
        handle = backend.register_function(sleep_then_emit)
        future = backend.submit(handle, (), (60.0, "never"))
        time.sleep(0.3)
        started = time.monotonic()
        backend.cancel(future)
        with pytest.raises(TaskCancelledError):
            future.result(timeout=20)
        assert time.monotonic() - started < 20
        # The backend keeps working after a cancellation.
        result = backend.submit(handle, (), (0.0, "after")).result(timeout=60)
        assert self.tables(backend, result.refs)[0].to_pydict() == {"tag": ["after"]}
        backend.free(result.refs)
        backend.release_function(handle)

    # -- actors --------------------------------------------------------------

    def test_actor_state_persists_across_calls(self, backend):
        factory = backend.register_function(make_accumulator)
        actor = backend.start_actor(factory, resources=Resources(cpu=1), name="acc")
        actor.ready.result(timeout=60)
        ref = backend.put(pa.table({"x": [1, 2]}))
        totals = []
        for k, inputs in ((1, ()), (2, (ref,)), (3, ())):
            result = backend.submit_actor(actor, inputs, (k,)).result(timeout=60)
            totals.append(self.tables(backend, result.refs)[0]["total"][0].as_py())
            backend.free(result.refs)
        assert totals == [1, 5, 8]
        backend.stop_actor(actor)
        backend.free([ref])
        backend.release_function(factory)

    def test_failing_actor_constructor_fails_ready(self, backend):
        factory = backend.register_function(failing_factory)
        actor = backend.start_actor(factory, resources=Resources(cpu=1))
        with pytest.raises(RemoteTaskError) as info:
            actor.ready.result(timeout=60)
        assert info.value.type_name == "RuntimeError"
        assert info.value.message == "model weights missing"
        assert "failing_factory" in info.value.traceback_text
        backend.stop_actor(actor)
        backend.release_function(factory)

    def test_actor_holds_resources_until_stopped(self, backend):
        total = backend.total_resources()
        assert total.cpu == 2
        assert self._available_cpu(backend, 2)
        factory = backend.register_function(make_accumulator)
        actor = backend.start_actor(factory, resources=Resources(cpu=1))
        actor.ready.result(timeout=60)
        assert self._available_cpu(backend, 1)
        backend.stop_actor(actor)
        assert self._available_cpu(backend, 2)
        backend.release_function(factory)

    def _available_cpu(self, backend: Any, expected: float, within_s: float = 10.0) -> bool:
        """Whether available CPUs reach ``expected`` (remote backends report lazily)."""
        deadline = time.monotonic() + within_s
        while backend.available_resources().cpu != expected:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # -- lifetime ------------------------------------------------------------

    def test_shutdown_is_idempotent(self):
        backend = self.make_backend()
        result = self.run(backend, emit_value, (), (3,))
        assert self.tables(backend, result.refs)[0].to_pydict() == {"value": [3]}
        backend.shutdown()
        backend.shutdown()
