"""read_webdataset / write_webdataset: shards written by tarfile and by the library,
exact round trips, decoders, streaming, pushdown and bad shards."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import dataflow as df
from dataflow.errors import SourceError
from dataflow.sources import file_based, webdataset
from dataflow.sources.webdataset import WebDatasetDatasource


@pytest.fixture(autouse=True)
def inline_backend():
    df.init(backend="inline")
    yield
    df.shutdown()


def _tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _images(n: int, shape=(8, 6, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_reads_shards_written_by_tarfile_with_every_decoder(tmp_path):
    rgb, gray = _images(2), _images(1, (5, 4), seed=1)[0]
    jpg = _encode(rgb[0], "JPEG")
    _tar(
        tmp_path / "a.tar",
        [
            ("s/0001.jpg", jpg),
            ("s/0001.cls", b"3"),
            ("s/0001.json", b'{"w": 1.5, "tags": ["x"]}'),
            ("s/0001.txt", "héllo".encode()),
            ("s/0002.seg.png", _encode(gray, "PNG")),
            ("s/0002.npy", _npy(np.arange(3, dtype=np.int16))),
            ("s/0002.cls", b"7\n"),
        ],
    )
    rows = df.read_webdataset(str(tmp_path)).take_all()
    assert [r["__key__"] for r in rows] == ["s/0001", "s/0002"]
    assert {r["__url__"] for r in rows} == {str(tmp_path / "a.tar")}
    first, second = rows
    assert first["jpg"].dtype == np.uint8
    assert np.array_equal(first["jpg"], np.asarray(Image.open(io.BytesIO(jpg))))
    assert (first["cls"], first["json"], first["txt"]) == (3, {"w": 1.5, "tags": ["x"]}, "héllo")
    assert second["seg.png"].shape == (5, 4, 1)  # grayscale comes back HWC
    assert np.array_equal(second["seg.png"][:, :, 0], gray)
    assert second["npy"].tolist() == [0, 1, 2] and second["cls"] == 7
    assert first["seg.png"] is None and second["jpg"] is None

    raw = df.read_webdataset(str(tmp_path / "a.tar"), decoder=False).take_all()
    assert raw[0]["jpg"] == jpg and raw[0]["cls"] == b"3"
    suffixed = df.read_webdataset(str(tmp_path), suffixes=["cls", "*.png"]).take_all()
    assert [sorted(r) for r in suffixed] == [
        ["__key__", "__url__", "cls", "seg.png"],
        ["__key__", "__url__", "cls", "seg.png"],
    ]
    renamed = df.read_webdataset(
        str(tmp_path),
        decoder=[True, lambda s: {**s, "label": s["cls"] * 10}],
        filerename=lambda name: name.replace(".seg.png", ".mask.png"),
    ).take_all()
    assert [r["label"] for r in renamed] == [30, 70] and "mask.png" in renamed[1]


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_round_trip_is_exact(tmp_path):
    imgs = _images(6)
    rows = [
        {
            "__key__": f"k{i:03d}",
            "png": imgs[i],
            "cls": i,
            "json": {"i": i, "name": f"n{i}"},
            "txt": f"text {i}",
            "npy": np.full(4, i, np.float32),
            "bin": bytes([i, 255 - i]),
        }
        for i in range(6)
    ]
    df.from_items(rows, override_num_blocks=2).write_webdataset(str(tmp_path / "out"))
    shards = sorted((tmp_path / "out").glob("*.tar"))
    assert len(shards) == 2
    with tarfile.open(shards[0]) as tar:
        assert tar.getnames()[:7] == [
            f"k000.{c}" for c in ("png", "cls", "json", "txt", "npy", "bin")
        ] + ["k001.png"]
    back = df.read_webdataset(str(tmp_path / "out")).take_all()
    assert [r["__key__"] for r in back] == [r["__key__"] for r in rows]
    for got, want in zip(back, rows):
        assert np.array_equal(got["png"], want["png"]) and got["png"].dtype == np.uint8
        assert (got["cls"], got["json"], got["txt"], got["bin"]) == (
            want["cls"],
            want["json"],
            want["txt"],
            want["bin"],
        )
        assert got["npy"].dtype == np.float32 and got["npy"].tolist() == want["npy"].tolist()

    # Raw bytes (a lossy .jpg included) survive a decoder=False / encoder=False round trip.
    jpgs = [_encode(imgs[i], "JPEG") for i in range(3)]
    df.from_items([{"__key__": f"j{i}", "jpg": jpgs[i]} for i in range(3)]).write_webdataset(
        str(tmp_path / "raw"), encoder=False
    )
    raw = df.read_webdataset(str(tmp_path / "raw"), decoder=False).take_all()
    assert [r["jpg"] for r in raw] == jpgs


def test_the_webdataset_package_reads_our_shards(tmp_path):
    pytest.importorskip("webdataset")
    imgs = _images(3)
    df.from_items(
        [{"__key__": f"x{i}", "png": imgs[i], "cls": i} for i in range(3)], override_num_blocks=1
    ).write_webdataset(str(tmp_path))
    (shard,) = sorted(tmp_path.glob("*.tar"))
    from webdataset.autodecode import Decoder, imagehandler
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    decode = Decoder([imagehandler("rgb8")])
    with open(shard, "rb") as f:
        files = ({**m, "__url__": str(shard)} for m in tar_file_iterator(f))
        samples = [decode(s) for s in group_by_keys(files)]
    assert [s["__key__"] for s in samples] == ["x0", "x1", "x2"]
    assert [int(s["cls"]) for s in samples] == [0, 1, 2]
    assert all(np.array_equal(s["png"], imgs[i]) for i, s in enumerate(samples))


def test_projection_skips_decoding_and_limit_stops_early(tmp_path, capsys):
    members = []
    for i in range(10):
        members += [(f"{i:04d}.jpg", b"this is not a jpeg"), (f"{i:04d}.cls", str(i).encode())]
    _tar(tmp_path / "bad-images.tar", members)
    ds = df.read_webdataset(str(tmp_path)).select_columns(["cls"])
    assert [r["cls"] for r in ds.take_all()] == list(range(10))  # no .jpg decoded
    ds.limit(2).explain()
    text = capsys.readouterr().out
    assert "read_webdataset columns=[cls] limit=2" in text
    assert "read_webdataset: decodes only cls; each task stops after 2 rows" in text
    assert ds.limit(2).take_all() == [{"cls": 0}, {"cls": 1}]
    with pytest.raises(SourceError, match="cannot identify image file") as info:
        df.read_webdataset(str(tmp_path)).take_all()
    assert info.value.path == str(tmp_path / "bad-images.tar")


def test_shards_stream_one_at_a_time(tmp_path, monkeypatch):
    for s in range(3):
        _tar(
            tmp_path / f"shard-{s}.tar",
            [(f"{s}-{i:03d}.cls", str(i).encode()) for i in range(20)],
        )
    monkeypatch.setattr(webdataset, "_SAMPLES_PER_BLOCK", 2)
    seen: list[str] = []

    def spy(sample):
        seen.append(sample["__key__"])
        return sample

    src = WebDatasetDatasource(str(tmp_path), decoder=[True, spy])
    # One task over the three shards, with blocks of at most one byte's worth.
    blocks = file_based._read_files(src, src.files(), pa.schema([]), 1)
    first = next(blocks)
    assert first.column("__key__").to_pylist() == ["0-000"]
    assert 2 <= len(seen) <= 4 and all(k.startswith("0-") for k in seen)  # one shard open
    rest = list(blocks)
    assert sum(b.num_rows for b in [first, *rest]) == 60 and len(seen) == 60


def test_bad_shards_and_paths(tmp_path):
    _tar(tmp_path / "split.tar", [("a.cls", b"1"), ("b.cls", b"2"), ("a.txt", b"x")])
    with pytest.raises(SourceError, match="'a' are not contiguous") as info:
        df.read_webdataset(str(tmp_path / "split.tar")).take_all()
    assert info.value.path == str(tmp_path / "split.tar")

    (tmp_path / "notatar.tar").write_bytes(b"plain text, not a tar archive" * 40)
    with pytest.raises(SourceError, match="notatar.tar") as info:
        df.read_webdataset(str(tmp_path / "notatar.tar")).take_all()
    assert info.value.path == str(tmp_path / "notatar.tar")

    _tar(
        tmp_path / "shapes.tar",
        [
            ("a.png", _encode(_images(1)[0], "PNG")),
            ("b.png", _encode(_images(1, (3, 3, 3))[0], "PNG")),
        ],
    )
    with pytest.raises(
        SourceError, match="sample 'a' is \\(8, 6, 3\\), sample 'b' is \\(3, 3, 3\\)"
    ):
        df.read_webdataset(str(tmp_path / "shapes.tar")).take_all()

    with pytest.raises(SourceError, match="no such file or directory"):
        df.read_webdataset(str(tmp_path / "missing")).take_all()
    with pytest.raises(ValueError, match="decoder must be True"):
        df.read_webdataset(str(tmp_path), decoder="PIL")


def test_credentials_in_a_shard_url_are_not_printed():
    with pytest.raises(SourceError) as info:
        df.read_webdataset("ftp://bob:hunter2@127.0.0.1:1/train-0000.tar").take_all()
    assert "hunter2" not in str(info.value) and "hunter2" not in info.value.path
    assert "ftp://bob:***@127.0.0.1:1/train-0000.tar" in str(info.value)


def test_write_errors_leave_no_output(tmp_path):
    with pytest.raises(Exception, match="has a dot in its file name"):
        df.from_items([{"__key__": "a.b", "cls": 1}]).write_webdataset(str(tmp_path / "dot"))
    assert not (tmp_path / "dot").exists()
    with pytest.raises(Exception, match="cannot encode a float as .weight"):
        df.from_items([{"weight": 0.5}]).write_webdataset(str(tmp_path / "float"))
    assert not (tmp_path / "float").exists()
    table = pa.table({"cls": [1, 2]})
    df.from_arrow(table).write_webdataset(str(tmp_path / "keys"))
    keys = [r["__key__"] for r in df.read_webdataset(str(tmp_path / "keys")).take_all()]
    assert len(set(keys)) == 2
