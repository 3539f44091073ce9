"""iter_tf_batches / to_tf / iter_jax_batches. TensorFlow and JAX start thread pools
at import, and the local backend forks workers: each framework's checks run in a
fresh interpreter (inline backend) so the test process never imports them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import dataflow as df

_COMMON = """
import numpy as np
import dataflow as df
df.init(backend="inline")
rows = [{"x": float(i), "v": np.full(3, i, np.float32), "s": f"s{i}", "y": i % 2}
        for i in range(10)]
ds = df.from_items(rows, override_num_blocks=3)
"""


def _run(script: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", _COMMON + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_iter_jax_batches_shards_pads_and_converts():
    pytest.importorskip("jax")
    out = _run(
        """
        import jax
        batches = list(ds.iter_jax_batches(batch_size=4, dtypes={"x": np.float32},
                                           collate_fn=lambda b: {k: b[k] for k in ("x", "v", "y")}))
        assert [b["x"].shape for b in batches] == [(4,), (4,), (2,)]
        assert all(isinstance(b["x"], jax.Array) for b in batches)
        assert batches[0]["x"].dtype == np.float32 and batches[0]["v"].shape == (4, 3)
        assert np.concatenate([np.asarray(b["x"]) for b in batches]).tolist() == [float(i) for i in range(10)]
        assert np.asarray(batches[1]["v"])[:, 0].tolist() == [4, 5, 6, 7]
        assert batches[0]["x"].sharding.spec == jax.sharding.PartitionSpec("batch")
        padded = list(ds.select_columns(["y", "x"]).iter_jax_batches(batch_size=4, paddings={"y": -1, "x": 0.5}))
        assert np.asarray(padded[-1]["y"]).tolist() == [0, 1, -1, -1]
        assert np.asarray(padded[-1]["x"]).tolist() == [8.0, 9.0, 0.5, 0.5]
        assert len(list(ds.select_columns(["y"]).iter_jax_batches(batch_size=4, drop_last=True))) == 2
        for bad, msg in ((lambda: next(ds.iter_jax_batches(batch_size=4))), "column 's' has dtype"), \\
                        ((lambda: ds.iter_jax_batches(batch_size=0)), "batch_size must be a positive int"):
            try:
                bad()
            except (TypeError, ValueError, df.PlanError) as e:
                assert msg in str(e), e
            else:
                raise AssertionError("no error")
        print("jax ok")
        """
    )
    assert out.strip().endswith("jax ok")


@pytest.mark.slow  # TensorFlow's import alone takes 10-40 s on 2 cores
def test_iter_tf_batches_and_to_tf_for_keras():
    pytest.importorskip("tensorflow")
    out = _run(
        """
        import tensorflow as tf
        batches = list(ds.iter_tf_batches(batch_size=4, dtypes={"x": tf.float32}))
        assert [int(b["x"].shape[0]) for b in batches] == [4, 4, 2]
        assert batches[0]["x"].dtype == tf.float32 and batches[0]["v"].shape == (4, 3)
        assert batches[0]["s"].dtype == tf.string and batches[0]["s"].numpy().tolist() == [b"s0", b"s1", b"s2", b"s3"]
        assert np.concatenate([b["y"].numpy() for b in batches]).tolist() == [i % 2 for i in range(10)]

        data = ds.to_tf(["x", "v"], "y", batch_size=4)
        spec = data.element_spec
        assert spec[0]["v"] == tf.TensorSpec((None, 3), tf.float32, name="v")
        assert spec[1] == tf.TensorSpec((None,), tf.int64, name="y")
        for _ in range(2):  # every epoch runs the pipeline again
            seen = [(f["x"].numpy().tolist(), l.numpy().tolist()) for f, l in data]
            assert [x for xs, _ in seen for x in xs] == [float(i) for i in range(10)]
            assert [y for _, ys in seen for y in ys] == [i % 2 for i in range(10)]

        model = tf.keras.Sequential([tf.keras.Input(shape=(1,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        import warnings
        with warnings.catch_warnings():  # Keras notes the end of an unknown-length epoch
            warnings.filterwarnings("ignore", "Your input ran out of data")
            history = model.fit(ds.to_tf("x", "y", batch_size=5), epochs=2, verbose=0, shuffle=False)
        assert len(history.history["loss"]) == 2
        try:
            ds.to_tf("nope", "y")
        except ValueError as e:
            assert "to_tf: unknown column 'nope'" in str(e)
        else:
            raise AssertionError("no error")
        print("tf ok")
        """
    )
    assert out.strip().endswith("tf ok")


def test_missing_framework_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    ds = df.range(3)
    with pytest.raises(ImportError, match="pip install 'dataflow\\[jax\\]'"):
        ds.iter_jax_batches(batch_size=2)
    with pytest.raises(ImportError, match="pip install 'dataflow\\[tensorflow\\]'"):
        ds.iter_tf_batches(batch_size=2)
