"""Driver <-> worker messages: exact round trips, including arguments plain pickle refuses."""

from __future__ import annotations

import pickle

import pyarrow as pa

from runtime.protocol import RunTask, Shutdown, TaskDone, TaskFailed, decode, encode
from runtime.refs import ObjectRef

REF = ObjectRef("w1ab-7", 634, 2, "shm", "123-abc")


def test_messages_round_trip_exactly():
    schema = pa.schema([("x", pa.int64())])
    done = TaskDone(3, (REF,), (schema.serialize().to_pybytes(),), 1.0, 2.5, 0.25, {"rows": 2.0})
    failed = TaskFailed(4, "ValueError", "bad", "Traceback ...", pickle.dumps(ValueError("bad")))
    run = RunTask(5, "fn1", (REF, REF), (1, "a", None), "map_batches(f)", (0,), False)
    for msg in (done, failed, run, Shutdown()):
        assert decode(encode(msg)) == msg
    got = decode(encode(done))
    assert pa.ipc.read_schema(pa.py_buffer(got.schemas[0])) == schema
    assert got.refs[0] == REF and got.refs[0].session == "123-abc"


def test_unpicklable_arguments_fall_back_to_cloudpickle():
    offset = 10
    msg = RunTask(1, "fn", (), (lambda v: v + offset,), "t")
    got = decode(encode(msg))
    assert got.args[0](5) == 15 and got.task_id == 1


def test_refs_pickle_as_plain_tuples():
    assert REF.__reduce__() == (ObjectRef, ("w1ab-7", 634, 2, "shm", "123-abc"))
    assert pickle.loads(pickle.dumps(REF)) == REF
