"""DataIterator's local shuffle, resumable position and torch batches, over a
fake execution (a plain list of blocks) so that they are tested on their own."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from dataflow.block import array_from_numpy
from dataflow.errors import PlanError
from dataflow.iterators import DataIterator, shuffled_batches, skip_rows


class FakeStream:
    def __init__(self, tables: list[pa.Table]) -> None:
        self.tables = tables
        self.closed = False

    def iter_blocks(self):
        yield from self.tables

    def close(self) -> None:
        self.closed = True

    def stats(self) -> None:
        return None


def blocks(sizes: list[int]) -> list[pa.Table]:
    out, start = [], 0
    for n in sizes:
        out.append(pa.table({"id": pa.array(range(start, start + n), pa.int64())}))
        start += n
    return out


def make_iterator(sizes: list[int]) -> DataIterator:
    return DataIterator(lambda: FakeStream(blocks(sizes)))


def ids(batches) -> list[list[int]]:
    return [list(map(int, b["id"])) for b in batches]


SIZES = [7, 13, 1, 20, 9, 30]  # 80 rows


def test_shuffle_buffer_spans_blocks_and_a_seed_reproduces_it():
    def run(seed):
        return ids(
            make_iterator(SIZES).iter_batches(
                batch_size=8, local_shuffle_buffer_size=16, local_shuffle_seed=seed
            )
        )

    a, b, c = run(3), run(3), run(4)
    assert a == b and a != c
    flat = [i for batch in a for i in batch]
    assert sorted(flat) == list(range(80)) and flat != list(range(80))
    assert [len(x) for x in a] == [8] * 10
    # rows of the second block appear in the first batches: the buffer spans blocks
    assert any(i >= 7 for i in a[0])


def test_without_a_seed_epochs_differ():
    it = make_iterator(SIZES)
    e0 = ids(it.iter_batches(batch_size=10, local_shuffle_buffer_size=20))
    e1 = ids(it.iter_batches(batch_size=10, local_shuffle_buffer_size=20))
    assert e0 != e1 and sorted(sum(e0, [])) == sorted(sum(e1, [])) == list(range(80))


def test_shuffled_batches_pure_function():
    rng = np.random.default_rng(0)
    out = list(shuffled_batches(iter(blocks([5, 5, 5])), 4, 6, rng))
    assert [t.num_rows for t in out] == [4, 4, 4, 3]
    assert sorted(sum((t.column("id").to_pylist() for t in out), [])) == list(range(15))
    assert [t.num_rows for t in skip_rows(iter(blocks([3, 4, 5])), 5)] == [2, 5]


@pytest.mark.parametrize("shuffle", [None, 16])
def test_resume_from_state_dict_continues_exactly(shuffle):
    kw = dict(batch_size=8, local_shuffle_buffer_size=shuffle, local_shuffle_seed=11)
    full = ids(make_iterator(SIZES).iter_batches(**kw))

    it = make_iterator(SIZES)
    got = []
    for k, batch in enumerate(it.iter_batches(**kw)):
        got.append(list(map(int, batch["id"])))
        if k == 3:
            break
    state = it.state_dict()
    assert state["epoch"] == 0 and state["rows"] == 32
    if shuffle is None:  # 32 rows = blocks of 7, 13, 1 done, 11 rows into the fourth
        assert (state["blocks_done"], state["rows_into_block"]) == (3, 11)

    fresh = make_iterator(SIZES)
    fresh.load_state_dict(state)
    rest = ids(fresh.iter_batches(**kw))
    assert got + rest == full
    assert fresh.state_dict()["epoch"] == 1 and fresh.state_dict()["rows"] == 0


def test_resume_needs_the_same_settings():
    it = make_iterator(SIZES)
    batches = it.iter_batches(batch_size=8)
    next(batches)
    batches.close()
    state = it.state_dict()
    fresh = make_iterator(SIZES)
    fresh.load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size=8"):
        list(fresh.iter_batches(batch_size=4))
    with pytest.raises(ValueError, match="not a DataIterator state"):
        fresh.load_state_dict({"epoch": 1})


def test_broken_off_epoch_restarts_without_a_loaded_state():
    it = make_iterator(SIZES)
    first = next(it.iter_batches(batch_size=8))
    again = next(it.iter_batches(batch_size=8))
    assert list(first["id"]) == list(again["id"]) == list(range(8))
    assert it.state_dict()["epoch"] == 1


def test_iter_torch_batches_on_a_fake_stream():
    emb = np.arange(40, dtype=np.float32).reshape(10, 4)
    table = pa.table({"x": np.arange(10, dtype=np.float64), "emb": array_from_numpy(emb)})
    it = DataIterator(lambda: FakeStream([table]))
    out = list(it.iter_torch_batches(batch_size=None))
    assert out[0]["x"].data_ptr() == table.column("x").chunk(0).buffers()[1].address
    assert torch.equal(out[0]["emb"], torch.from_numpy(emb))
    batches = list(it.iter_torch_batches(batch_size=4, dtypes={"x": torch.float32}, drop_last=True))
    assert [b["x"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert batches[0]["x"].dtype == torch.float32 and batches[1]["emb"].shape == (4, 4)
    summed = list(it.iter_torch_batches(batch_size=5, collate_fn=lambda b: float(b["x"].sum())))
    assert summed == [10.0, 35.0]


def test_bad_arguments_fail_before_execution():
    it = DataIterator(lambda: pytest.fail("must not execute"))
    with pytest.raises(PlanError, match="local_shuffle_buffer_size must be a positive int"):
        it.iter_batches(local_shuffle_buffer_size=0)
    with pytest.raises(PlanError, match="needs a batch_size"):
        it.iter_torch_batches(batch_size=None, local_shuffle_buffer_size=10)
    with pytest.raises(TypeError, match="dtypes must be"):
        it.iter_torch_batches(dtypes="float")
