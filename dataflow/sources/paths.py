"""Resolving user paths into files: filesystems, globs, directories, hive partitions.

Every file source and sink goes through ``resolve_filesystem`` and
``expand_paths``: a path may be a file, a directory (listed recursively,
skipping hidden and ``_``-prefixed entries as Spark and Arrow do), a glob, a
list of those, or any fsspec URL; ``filesystem=`` takes an fsspec or a pyarrow
filesystem.

>>> fs, paths = resolve_filesystem("/data/events", None, "read_parquet")
>>> files = expand_paths(fs, paths, "read_parquet")   # [FileEntry(path, size, partitions)]
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from dataflow.errors import SourceError
from dataflow.sources.localfs import LocalFiles

_GLOB_CHARS = re.compile(r"[*?\[]")
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class FileSystems:
    """One filesystem seen two ways: fsspec for listing and small files, pyarrow
    for the native readers and writers (Parquet, CSV). Picklable."""

    fsspec: Any
    arrow: pafs.FileSystem

    @property
    def is_local(self) -> bool:
        return isinstance(self.arrow, pafs.LocalFileSystem)


@dataclass(frozen=True)
class FileEntry:
    """A file to read: its path on the filesystem, size and partition values
    (strings parsed from hive paths, or typed values from a table's log)."""

    path: str
    size: int
    partitions: tuple[tuple[str, Any], ...] = field(default=())


def resolve_filesystem(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    filesystem: Any,
    where: str,
) -> tuple[FileSystems, list[str]]:
    """The filesystem of ``paths`` (or ``filesystem``) and the paths stripped of
    their protocol, as that filesystem names them."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError(f"{where}: no paths given; pass a file, directory, glob or list of them")
    for p in paths:
        if not isinstance(p, str):
            raise TypeError(f"{where}: paths must be strings, got {type(p).__name__}")
    if filesystem is None and "://" not in paths[0]:
        fs = LocalFiles()  # plain local paths: no fsspec import (see localfs)
    elif filesystem is None:
        import fsspec

        try:
            fs, _ = fsspec.core.url_to_fs(paths[0])
        except (ImportError, ValueError, OSError) as e:  # OSError: a remote refused us
            raise SourceError(
                f"{where}: cannot open filesystem for {paths[0]!r}: {e}", path=paths[0]
            ) from e
    elif isinstance(filesystem, pafs.FileSystem):
        from fsspec.implementations.arrow import ArrowFSWrapper

        fs = ArrowFSWrapper(filesystem)
    elif _is_fsspec(filesystem):
        fs = filesystem
    else:
        raise TypeError(
            f"{where}: filesystem= must be an fsspec or pyarrow filesystem, "
            f"got {type(filesystem).__name__}"
        )
    protocols = {urllib.parse.urlsplit(p).scheme for p in paths if "://" in p}
    if len(protocols) > 1:
        raise ValueError(
            f"{where}: paths mix filesystems {sorted(protocols)}; read them separately"
        )
    stripped = [fs._strip_protocol(p) for p in paths]
    if isinstance(filesystem, pafs.FileSystem):
        arrow = filesystem
    elif type(fs) is LocalFiles or _is_plain_local(fs):
        arrow = pafs.LocalFileSystem()
        stripped = [os.path.abspath(p) for p in stripped]
    else:
        arrow = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    return FileSystems(fs, arrow), stripped


def _is_fsspec(filesystem: Any) -> bool:
    import fsspec  # already imported by whoever made ``filesystem``, if it is one

    return isinstance(filesystem, fsspec.AbstractFileSystem)


def _is_plain_local(fs: Any) -> bool:
    """fsspec's own local filesystem (a subclass may change behaviour: keep it)."""
    from fsspec.implementations.local import LocalFileSystem

    return type(fs) is LocalFileSystem


def _is_hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _list_dir(fs: Any, base: str) -> list[tuple[str, int]]:
    found = fs.find(base, detail=True, withdirs=False)
    out = []
    for path, info in found.items():
        rel = path[len(base) :].lstrip("/") if path.startswith(base) else path
        if info.get("type") == "directory" or _is_hidden(rel):
            continue
        out.append((path, int(info.get("size") or 0)))
    return out


def _hive_partitions(path: str, base: str) -> tuple[tuple[str, str | None], ...]:
    rel = path[len(base) :].lstrip("/") if path.startswith(base) else ""
    out = []
    for part in rel.split("/")[:-1]:
        if "=" in part:
            key, _, value = part.partition("=")
            value = urllib.parse.unquote(value)
            out.append((key, None if value == _HIVE_NULL else value))
    return tuple(out)


@dataclass(frozen=True)
class FileShuffleConfig:
    """Ray Data's ``shuffle=FileShuffleConfig(seed=...)``: read the files in a
    random order, the same one for the same seed (``shuffle="files"``: a
    random seed).

    >>> FileShuffleConfig(seed=0)
    FileShuffleConfig(seed=0)
    """

    seed: int | None = None


@dataclass(frozen=True)
class ListingOptions:
    """How a file reader lists its paths (Ray Data's reader parameters):
    ``file_extensions`` to keep (None: all), ``partitioning`` ("hive" or None),
    ``ignore_missing_paths``, ``partition_filter`` (a function of a file's
    hive partition values ``{name: str}`` -> keep it?), ``shuffle``
    (None, "files" or a ``FileShuffleConfig``) and ``skip_paths`` (files not
    to read)."""

    file_extensions: tuple[str, ...] | None = None
    partitioning: str | None = "hive"
    ignore_missing_paths: bool = False
    partition_filter: Any = None
    shuffle: Any = None
    skip_paths: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        where: str,
        *,
        file_extensions: Sequence[str] | None = None,
        partitioning: Any = "hive",
        ignore_missing_paths: bool = False,
        partition_filter: Any = None,
        shuffle: Any = None,
        skip_paths: Sequence[str] | None = None,
    ) -> ListingOptions:
        """Checked options; Ray's ``Partitioning("hive")`` object is accepted."""
        style = getattr(partitioning, "style", partitioning)
        if style not in ("hive", None):
            raise ValueError(
                f"{where}: partitioning must be 'hive' (or Ray's Partitioning('hive')) or "
                f"None, got {partitioning!r}"
            )
        if getattr(partitioning, "field_names", None) or getattr(partitioning, "base_dir", ""):
            raise ValueError(
                f"{where}: Partitioning base_dir / field_names are not supported; dataflow "
                "reads hive partitions relative to each given path"
            )
        if isinstance(file_extensions, str):
            file_extensions = [file_extensions]
        if partition_filter is not None and not callable(partition_filter):
            raise TypeError(f"{where}: partition_filter must be callable, got {partition_filter!r}")
        if isinstance(shuffle, str) and shuffle == "files":
            shuffle = FileShuffleConfig()
        elif shuffle is not None and not hasattr(shuffle, "seed"):
            raise ValueError(
                f"{where}: shuffle must be None, 'files' or FileShuffleConfig(seed=...), "
                f"got {shuffle!r}"
            )
        if shuffle is not None:
            seed = shuffle.seed
            if seed is None:
                seed = int.from_bytes(os.urandom(4), "little")
            shuffle = FileShuffleConfig(seed)
        return cls(
            tuple(file_extensions) if file_extensions else None,
            style,
            bool(ignore_missing_paths),
            partition_filter,
            shuffle,
            frozenset(os.path.abspath(p) if "://" not in p else p for p in skip_paths or ()),
        )


def expand_paths(
    fs: FileSystems,
    paths: Sequence[str],
    where: str,
    *,
    file_extensions: Sequence[str] | None = None,
    partitioning: str | None = "hive",
    options: ListingOptions | None = None,
) -> list[FileEntry]:
    """Every file under ``paths`` (directories recursive, globs expanded), sorted
    within each path, with hive partition values parsed relative to the
    directory or glob root it was found under. ``options`` (they override
    ``file_extensions`` and ``partitioning``) add Ray Data's listing
    parameters: missing paths skipped, a partition filter, a file shuffle."""
    if options is not None:
        file_extensions, partitioning = options.file_extensions, options.partitioning
    skip_missing = options is not None and options.ignore_missing_paths
    exts = tuple(f".{e.lower().lstrip('.')}" for e in file_extensions) if file_extensions else None
    entries: list[FileEntry] = []
    for path in paths:
        if _GLOB_CHARS.search(path):
            base = _GLOB_CHARS.split(path, 1)[0].rsplit("/", 1)[0]
            matched = fs.fsspec.glob(path, detail=True)
            listed: list[tuple[str, int]] = []
            for p, info in sorted(matched.items()):
                if info.get("type") == "directory":
                    listed.extend(_list_dir(fs.fsspec, p))
                elif not _is_hidden(p[len(base) :]):
                    listed.append((p, int(info.get("size") or 0)))
            if not listed:
                if skip_missing:
                    continue
                raise SourceError(f"{where}: the glob {path!r} matches no file", path=path)
        else:
            try:
                info = fs.fsspec.info(path)
            except FileNotFoundError as e:
                if skip_missing:
                    continue
                raise SourceError(
                    f"{where}: no such file or directory: {path!r} (ignore_missing_paths=True "
                    "skips it)",
                    path=path,
                ) from e
            except OSError as e:
                raise SourceError(f"{where}: cannot access {path!r}: {e}", path=path) from e
            if info.get("type") == "directory":
                base = path.rstrip("/")
                listed = sorted(_list_dir(fs.fsspec, base))
            else:
                base = path.rsplit("/", 1)[0]
                listed = [(path, int(info.get("size") or 0))]
        for p, size in listed:
            if exts and not p.lower().endswith(exts):
                continue
            if options is not None and options.skip_paths and p in options.skip_paths:
                continue
            parts = _hive_partitions(p, base) if partitioning == "hive" else ()
            if options is not None and options.partition_filter is not None:
                if not _keep_partition(options.partition_filter, p, parts):
                    continue
            entries.append(FileEntry(p, size, parts))
    if options is not None and options.shuffle is not None:
        import random

        random.Random(options.shuffle.seed).shuffle(entries)
    if not entries:
        suffix = f" with extension {', '.join(exts)}" if exts else ""
        raise SourceError(
            f"{where}: no files{suffix} found under {list(paths)}", path=str(paths[0])
        )
    return entries


def _keep_partition(keep: Any, path: str, parts: tuple[tuple[str, Any], ...]) -> bool:
    """A partition filter's verdict on one file: a function of the partition
    values ``{name: str}``, or Ray's ``PathPartitionFilter`` (list of paths in,
    kept paths out)."""
    if type(keep).__name__ == "PathPartitionFilter":
        return bool(keep([path]))
    return bool(keep({k: v for k, v in parts}))


def partition_schema(entries: Sequence[FileEntry]) -> pa.Schema:
    """Types of the hive partition columns: int64 when every value is an integer,
    else string (nulls allowed), in first-seen order."""
    values: dict[str, list[str]] = {}
    for e in entries:
        for k, v in e.partitions:
            values.setdefault(k, [])
            if v is not None:
                values[k].append(v)
    fields = []
    for k, vs in values.items():
        is_int = bool(vs) and all(re.fullmatch(r"-?\d{1,18}", v) for v in vs)
        fields.append(pa.field(k, pa.int64() if is_int else pa.string()))
    return pa.schema(fields)


def partition_values(entry: FileEntry, schema: pa.Schema) -> dict[str, Any]:
    """The partition values of one file typed by ``partition_schema``."""
    raw = dict(entry.partitions)
    out = {}
    for f in schema:
        v = raw.get(f.name)
        out[f.name] = int(v) if isinstance(v, str) and pa.types.is_integer(f.type) else v
    return out


def add_constant_columns(table: pa.Table, values: dict[str, Any], schema: pa.Schema) -> pa.Table:
    """Append one constant column per ``values`` entry (typed by ``schema``)."""
    for f in schema:
        if f.name in values and f.name not in table.column_names:
            arr = (
                pa.nulls(table.num_rows, f.type)
                if values[f.name] is None
                else (pa.repeat(pa.scalar(values[f.name], f.type), table.num_rows))
            )
            table = table.append_column(f, arr)
    return table
