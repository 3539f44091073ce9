"""webdataset_feed: WebDataset shards of 20,000 64x64 JPEGs + labels → decode → torch batches.

The shards (1,000 samples each, ``<key>.jpg`` + ``<key>.cls``) are generated once
under the data root (seeded; cached by size), before the timed window: each run
times its own window from the first shard opened to the last batch consumed.
``--param webdataset_images=N`` and ``--param webdataset_shard_images=N`` change
the sizes. Every engine decodes with Pillow to HWC uint8 and hands out torch
batches of 256 (images ``(256, 64, 64, 3)`` uint8, labels int64); the checksum
is the row count, the label sum and the pixel sum.

* dataflow: ``read_webdataset`` → ``iter_torch_batches``.
* ray: Ray Data's ``read_webdataset`` → ``iter_torch_batches``.
* webdataset: the package's own loader, ``WebDataset(...).decode("rgb8")
  .to_tuple("jpg", "cls").batched(256)`` in a ``DataLoader`` with one worker per core.
* pyarrow: the hand-written reference, ``tarfile`` + Pillow in one process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.workloads import Result, RunContext, Workload, checksum

IMAGES = 20_000
SHARD_IMAGES = 1_000
SIDE = 64
BATCH = 256
CLASSES = 10
_FORMAT_VERSION = 1


def _shards(ctx: RunContext) -> list[str]:
    """The shard paths, generated unless cached under the data root."""
    n = ctx.param("webdataset_images", IMAGES)
    per = ctx.param("webdataset_shard_images", SHARD_IMAGES)
    root = Path(ctx.data.root) / f"webdataset-v{_FORMAT_VERSION}-n{n}-s{per}-{SIDE}px"
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        try:
            _generate(tmp, n, per)
            try:
                tmp.rename(root)
            except OSError:
                if not root.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(str(p) for p in root.glob("*.tar"))


def _generate(out: Path, n: int, per: int) -> None:
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    for shard in range(0, n, per):
        with tarfile.open(out / f"train-{shard // per:05d}.tar", "w") as tar:
            for i in range(shard, min(n, shard + per)):
                base = (xx * rng.integers(1, 4) + yy * rng.integers(1, 4)) % 256
                noise = rng.integers(0, 32, (SIDE, SIDE, 3))
                img = ((base[:, :, None] + noise) % 256).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=90)
                for suffix, data in (("jpg", buf.getvalue()), ("cls", str(i % CLASSES).encode())):
                    info = tarfile.TarInfo(f"{i:08d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def _consume(ctx: RunContext, batches: Iterable[tuple[Any, Any]], t0: float) -> Result:
    rows = labels = pixels = 0
    for images, cls in batches:
        ctx.first_batch()
        rows += int(images.shape[0])
        labels += int(cls.sum())
        pixels += int(images.sum(dtype=_torch().int64))
    return Result(
        rows=rows,
        checksum=checksum(rows=rows, sum_cls=labels, sum_pixels=pixels),
        wall_s=time.perf_counter() - t0,
    )


def _torch() -> Any:
    import torch

    return torch


def _start(ctx: RunContext) -> tuple[list[str], float]:
    shards = _shards(ctx)  # generation (first run only) is not timed
    ctx.start_clock()
    return shards, time.perf_counter()


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    shards, t0 = _start(ctx)
    ds = df.read_webdataset(shards).select_columns(["jpg", "cls"])
    batches = ds.iter_torch_batches(batch_size=BATCH)
    return _consume(ctx, ((b["jpg"], b["cls"]) for b in batches), t0)


def _ray(ctx: RunContext) -> Result:
    import ray.data

    shards, t0 = _start(ctx)
    ds = ray.data.read_webdataset(shards).select_columns(["jpg", "cls"])
    batches = ds.iter_torch_batches(batch_size=BATCH)
    return _consume(ctx, ((b["jpg"], b["cls"]) for b in batches), t0)


def _webdataset(ctx: RunContext) -> Result:
    import torch
    import webdataset as wds

    shards, t0 = _start(ctx)
    pipeline = (
        wds.WebDataset(shards, shardshuffle=False, empty_check=False)
        .decode("rgb8")
        .to_tuple("jpg", "cls")
        .batched(BATCH, partial=True)
    )
    workers = min(os.cpu_count() or 1, len(shards))
    loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=workers)
    batches = (
        (torch.as_tensor(images), torch.as_tensor(cls, dtype=torch.int64)) for images, cls in loader
    )
    return _consume(ctx, batches, t0)


def _tar_batches(shards: list[str]) -> Iterator[tuple[Any, Any]]:
    """The hand-written reference: tarfile + Pillow, batches of ``BATCH`` rows."""
    import io
    import tarfile

    import numpy as np
    import torch
    from PIL import Image

    images: list[np.ndarray] = []
    labels: list[int] = []
    for path in shards:
        with tarfile.open(path, "r|*") as tar:
            for info in tar:
                data = tar.extractfile(info).read()
                if info.name.endswith(".jpg"):
                    images.append(np.asarray(Image.open(io.BytesIO(data))))
                elif info.name.endswith(".cls"):
                    labels.append(int(data))
                if len(labels) == BATCH and len(images) == BATCH:
                    yield torch.from_numpy(np.stack(images)), torch.tensor(labels)
                    images, labels = [], []
    if labels:
        yield torch.from_numpy(np.stack(images)), torch.tensor(labels)


def _pyarrow(ctx: RunContext) -> Result:
    shards, t0 = _start(ctx)
    return _consume(ctx, _tar_batches(shards), t0)


WORKLOAD = Workload(
    name="webdataset_feed",
    description="WebDataset shards of 64x64 JPEGs + labels → decode → torch batches of 256",
    dataset="none",
    runs={"dataflow": _dataflow, "ray": _ray, "webdataset": _webdataset, "pyarrow": _pyarrow},
    unit="images",
    preload=("torch", "PIL.Image"),
)
