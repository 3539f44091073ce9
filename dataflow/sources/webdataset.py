"""WebDataset tar shards: one row per sample, one column per file suffix.

A shard is a tar file whose members are named ``<key>.<suffix>``; consecutive
members with one key form a sample (``0001.jpg``, ``0001.cls`` -> the row
``{"__key__": "0001", "jpg": ..., "cls": ...}``), plus ``__url__``, the shard's
path. Shards are streamed (``tarfile`` in ``r|*`` mode, gzip or not) one after
another, so a task holds about one block of samples, never a whole shard.

Tar parsing is the standard library's ``tarfile``: the ``webdataset`` package
adds URL pipes and brace expansion around the same parsing, and fsspec paths
and globs cover those here, so it is not needed (it is only a benchmark peer).

The default decoder (``decoder=True``, as in Ray Data) turns ``.jpg``/``.png``
(and the other image suffixes) into HWC ``uint8`` arrays with Pillow (extra
``dataflow[webdataset]``), ``.json`` into values, ``.txt`` into strings,
``.cls`` into ints and ``.npy`` into arrays; anything else stays bytes.
``write_webdataset`` encodes the same suffixes back (images as lossless PNG
when the suffix is ``png``), so a decoded round trip through PNG is exact.

>>> src = WebDatasetDatasource("shards/train-*.tar")   # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from dataflow.block import array_from_numpy, iter_rows
from dataflow.sources.file_based import FileBasedDatasource
from dataflow.sources.paths import FileSystems
from dataflow.sources.sinks import FileDatasink

KEY_COLUMN = "__key__"
URL_COLUMN = "__url__"
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "ppm", "pgm", "pbm", "pnm", "webp", "bmp", "tif", "tiff")
_PIL_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF"}
_SAMPLES_PER_BLOCK = 1024
_KEY_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")

Coder = bool | Callable[[dict[str, Any]], dict[str, Any]] | list | None

_log = logging.getLogger(__name__)


def split_key(name: str) -> tuple[str | None, str | None]:
    """``(key, suffix)`` of a member name: the key ends at the first dot of the
    file name, e.g. ``"a/0001.seg.png" -> ("a/0001", "seg.png")``.

    >>> split_key("a/0001.seg.png")
    ('a/0001', 'seg.png')
    """
    m = _KEY_RE.match(name)
    return (m.group(1), m.group(2)) if m else (None, None)


def _matches(suffix: str, patterns: Any) -> bool:
    """Ray Data's suffix selection: None accepts all, a callable decides, a
    list holds literal suffixes or ``*``/``?`` glob patterns."""
    import fnmatch

    if patterns is None:
        return True
    if callable(patterns):
        return bool(patterns(suffix))
    return any(
        fnmatch.fnmatch("." + suffix, p) if ("*" in p or "?" in p) else suffix in (p, p[1:])
        for p in patterns
    )


def iter_members(
    stream: Any, fileselect: Any = None, filerename: Any = None
) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of every regular member of a tar stream, in order."""
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for info in tar:
            if not info.isreg():
                continue
            f = tar.extractfile(info)
            data = f.read() if f is not None else b""
            name = info.name
            for fn in filerename if isinstance(filerename, list) else [filerename]:
                name = fn(name) if fn is not None else name
            if _matches(name, fileselect):
                yield name, data


def group_samples(
    members: Iterator[tuple[str, bytes]], url: str, suffixes: Any = None
) -> Iterator[dict[str, Any]]:
    """Samples of consecutive members sharing a key. A key that comes back after
    another one (non-contiguous members) or a duplicate suffix is an error."""
    current: dict[str, Any] | None = None
    seen: set[str] = set()
    for name, data in members:
        key, suffix = split_key(name)
        if key is None or suffix is None:
            continue
        if current is None or key != current[KEY_COLUMN]:
            if current is not None:
                seen.add(current[KEY_COLUMN])
                if len(current) > 2:
                    yield current
            if key in seen:
                raise ValueError(
                    f"the members of sample {key!r} are not contiguous in the tar; WebDataset "
                    "needs each sample's files together: re-create the shard sorted by name "
                    "(tar --sort=name)"
                )
            current = {KEY_COLUMN: key, URL_COLUMN: url}
        if suffix in current:
            raise ValueError(f"sample {key!r} holds two files with suffix {suffix!r}")
        if _matches(suffix, suffixes):
            current[suffix] = data
    if current is not None and len(current) > 2:
        yield current


def _decode_image(data: bytes) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(
            "read_webdataset decodes images with Pillow: pip install 'dataflow[webdataset]' "
            "(or pass decoder=False to keep the bytes)"
        ) from e

    with Image.open(io.BytesIO(data)) as img:
        if img.mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
        arr = np.asarray(img)
    return arr[:, :, None] if arr.ndim == 2 else arr  # always HWC


def decode_value(suffix: str, data: bytes) -> Any:
    """The default decoding of one member by the extension of its suffix."""
    ext = suffix.rsplit(".", 1)[-1].lower()
    if ext in ("txt", "text"):
        return data.decode("utf-8")
    if ext in ("cls", "cls2", "index"):
        return int(data.decode("utf-8").strip())
    if ext in ("json", "jsn"):
        return json.loads(data)
    if ext == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if ext in IMAGE_SUFFIXES:
        return _decode_image(data)
    return data


def default_decoder(sample: dict[str, Any]) -> dict[str, Any]:
    """Decode every member of a sample by suffix (``__``-prefixed fields kept)."""
    return {k: v if k.startswith("__") else decode_value(k, v) for k, v in sample.items()}


def encode_value(suffix: str, value: Any) -> bytes:
    """Bytes of one member: the inverse of ``decode_value``."""
    ext = suffix.rsplit(".", 1)[-1].lower()
    if isinstance(value, bytes):
        return value
    if ext in IMAGE_SUFFIXES and isinstance(value, np.ndarray):
        from PIL import Image

        arr = value[:, :, 0] if value.ndim == 3 and value.shape[2] == 1 else value
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=_PIL_FORMATS.get(ext, ext.upper()))
        return buf.getvalue()
    if ext == "npy" and isinstance(value, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return buf.getvalue()
    if ext in ("json", "jsn"):
        return json.dumps(value.tolist() if isinstance(value, np.ndarray) else value).encode()
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value)).encode()
    raise TypeError(
        f"write_webdataset: cannot encode a {type(value).__name__} as .{suffix}; give bytes, "
        "a str, an int (.cls), JSON values (.json) or an array (.npy and image suffixes)"
    )


def default_encoder(sample: dict[str, Any]) -> dict[str, Any]:
    """Encode every non-``__`` field of a row by its column name's suffix."""
    return {
        k: v if k.startswith("__") or v is None else encode_value(k, v) for k, v in sample.items()
    }


def _coders(spec: Coder, default: Callable, where: str, what: str) -> list[Callable]:
    if spec is None or spec is False:
        return []
    specs = spec if isinstance(spec, list) else [spec]
    out = []
    for s in specs:
        if s is True:
            out.append(default)
        elif callable(s):
            out.append(s)
        else:
            raise ValueError(
                f"{where}: {what} must be True, False/None, a callable sample -> sample or a "
                f"list of them, got {s!r}"
            )
    return out


def _check_shapes(rows: list[dict[str, Any]]) -> None:
    """Arrays of one column must share a shape to form a tensor column."""
    first: dict[str, tuple[str, tuple]] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, np.ndarray):
                seen = first.setdefault(k, (row[KEY_COLUMN], v.shape))
                if seen[1] != v.shape:
                    raise ValueError(
                        f"column {k!r} holds arrays of different shapes: sample {seen[0]!r} "
                        f"is {seen[1]}, sample {row[KEY_COLUMN]!r} is {v.shape}; resize them "
                        "in a decoder (decoder=[my_decode]) or keep bytes (decoder=False)"
                    )


def _tensor_column(name: str, values: list[Any]) -> pa.Array:
    """Arrays (one shape, checked before) as a tensor column; a sample without the
    member is a null cell."""
    present = [v for v in values if v is not None]
    if not all(isinstance(v, np.ndarray) for v in present):
        raise ValueError(f"column {name!r} mixes arrays and other values across samples")
    blank = np.zeros_like(present[0])
    arr = array_from_numpy(np.stack([blank if v is None else v for v in values]), name)
    if len(present) == len(values) or not isinstance(arr, pa.ExtensionArray):
        return arr
    mask = pa.array([v is None for v in values])
    storage = pa.FixedSizeListArray.from_arrays(
        arr.storage.values, type=arr.storage.type, mask=mask
    )
    return pa.ExtensionArray.from_storage(arr.type, storage)


def samples_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Samples as a block: a column per field (first-seen order), arrays as
    tensor columns, nulls where a sample lacks a field."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        if any(isinstance(v, np.ndarray) and v.ndim > 0 for v in values):
            columns[name] = _tensor_column(name, values)
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


class WebDatasetDatasource(FileBasedDatasource):
    """Samples of WebDataset tar shards, Ray Data's options: ``decoder``
    (True: the default decoder; False/None: raw bytes; a callable or a list of
    them, True standing for the default), ``fileselect`` and ``suffixes``
    (patterns or a callable choosing members / sample fields), ``filerename``
    (a callable or list renaming members) and ``expand_json`` (the ``.json``
    object's keys become columns).

    Projection pushdown drops unselected suffixes before the default decoder
    runs (no image decoded for a ``select_columns(["cls"])``); limit pushdown
    stops reading a shard once the task has its rows.
    """

    where = "read_webdataset"
    expansion = 4.0
    sequential = True
    supports_projection_pushdown = True
    supports_limit_pushdown = True

    def __init__(
        self,
        paths: Any,
        *,
        decoder: Coder = True,
        fileselect: Any = None,
        filerename: Any = None,
        suffixes: Any = None,
        expand_json: bool = False,
        verbose_open: bool = False,
        **file_kwargs: Any,
    ) -> None:
        self.decoders = _coders(decoder, default_decoder, "read_webdataset", "decoder")
        super().__init__(paths, **file_kwargs)
        self.fileselect = fileselect
        self.filerename = filerename
        self.suffixes = suffixes
        self.expand_json = expand_json
        self.verbose_open = verbose_open
        """Log each shard as it is opened (logger ``dataflow.sources.webdataset``)."""

    def explain_read(self, **pushdown: Any) -> str:
        text = super().explain_read(**pushdown)
        if pushdown.get("columns") is not None and self.decoders != [default_decoder]:
            text += " (after the custom decoder: it sees every suffix)"
        return text

    def _decode(self, sample: dict[str, Any]) -> dict[str, Any]:
        if self.columns is not None and self.decoders in ([], [default_decoder]):
            wanted = set(self.columns)
            sample = {k: v for k, v in sample.items() if k in wanted or k == KEY_COLUMN}
        for fn in self.decoders:
            sample = fn(sample)
            if not isinstance(sample, dict):
                raise TypeError(
                    f"read_webdataset: a decoder returned {type(sample).__name__}, not a dict"
                )
        if self.expand_json and "json" in sample:
            value = sample["json"]
            obj = json.loads(value) if isinstance(value, (bytes, str)) else value
            if not isinstance(obj, dict):
                raise ValueError("expand_json=True needs each .json to hold an object")
            sample.update({k: v for k, v in obj.items() if k not in sample})
        return sample

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        if self.verbose_open:
            _log.info("read_webdataset: opening %s", path)
        with self.open_stream(fs, path) as stream:
            members = iter_members(stream, self.fileselect, self.filerename)
            rows: list[dict[str, Any]] = []
            for sample in group_samples(members, path, self.suffixes):
                rows.append(self._decode(sample))
                if len(rows) >= _SAMPLES_PER_BLOCK:
                    yield self._table(rows)
                    rows = []
            if rows:
                yield self._table(rows)

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        _check_shapes(rows)
        return samples_to_table(rows)


class _TarFile:
    """An open output shard: the tar stream and its sample counter."""

    def __init__(self, stream: Any) -> None:
        self.tar = tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT)
        self.prefix = uuid.uuid4().hex[:12]
        self.samples = 0


class WebDatasetDatasink(FileDatasink):
    """Tar shards, one sample per row: column ``c`` of a row becomes the member
    ``<__key__>.c`` (``__``-prefixed columns and nulls are not written). The
    ``encoder`` (True: the default one, or callables as for ``decoder``) turns
    values into bytes; rows without ``__key__`` get a unique key."""

    where = "write_webdataset"
    extension = "tar"

    def __init__(self, path: Any, *, encoder: Coder = True, **kwargs: Any) -> None:
        self.encoders = _coders(encoder, default_encoder, "write_webdataset", "encoder")
        super().__init__(path, **kwargs)

    def open_file(self, stream: Any, schema: pa.Schema) -> _TarFile:
        return _TarFile(stream)

    def write_table(self, state: _TarFile, stream: Any, table: pa.Table) -> None:
        mtime = int(time.time())
        for row in iter_rows(table):
            for fn in self.encoders:
                row = fn(row)
            key = row.get(KEY_COLUMN)
            if key is None:
                key = f"{state.prefix}{state.samples:08d}"
            key = str(key)
            if "." in key.rsplit("/", 1)[-1]:
                raise ValueError(
                    f"write_webdataset: sample key {key!r} has a dot in its file name; readers "
                    "split the key from the suffix at the first dot"
                )
            for name, value in row.items():
                if name.startswith("__") or value is None:
                    continue
                if isinstance(value, str):
                    value = value.encode("utf-8")
                if not isinstance(value, bytes):
                    raise TypeError(
                        f"write_webdataset: column {name!r} of sample {key!r} is a "
                        f"{type(value).__name__} after encoding; encoders must give bytes"
                    )
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size, info.mtime, info.mode = len(value), mtime, 0o644
                state.tar.addfile(info, io.BytesIO(value))
            state.samples += 1

    def close_file(self, state: _TarFile, stream: Any) -> None:
        state.tar.close()
