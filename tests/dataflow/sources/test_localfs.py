"""LocalFiles answers as fsspec's LocalFileSystem does, for the calls dataflow makes."""

from __future__ import annotations

import os

import pytest
from fsspec.implementations.local import LocalFileSystem

from dataflow.sources.localfs import LocalFiles
from dataflow.sources.paths import expand_paths, resolve_filesystem


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.parquet").write_bytes(b"12345")
    (tmp_path / "a" / "b" / "y.parquet").write_bytes(b"1")
    (tmp_path / "a" / "_hidden").write_bytes(b"12")
    (tmp_path / "z.txt").write_bytes(b"")
    os.symlink(tmp_path / "a" / "b", tmp_path / "link")
    return tmp_path


def _shape(found: dict) -> dict:
    """Paths, types and file sizes; not the linked directory, which fsspec lists
    as a file of type "other" (and a read would then fail on it)."""
    return {
        p: (i["type"], i["size"] if i["type"] == "file" else None)
        for p, i in found.items()
        if not p.endswith("/link")
    }


def test_find_ls_info_match_fsspec(tree):
    ours, theirs = LocalFiles(), LocalFileSystem()
    for withdirs in (False, True):
        got = ours.find(str(tree), withdirs=withdirs, detail=True)
        want = theirs.find(str(tree), withdirs=withdirs, detail=True)
        assert _shape(got) == _shape(want)
        assert list(got) == sorted(p for p in want if withdirs or not p.endswith("/link"))
    assert ours.find(str(tree / "a" / "x.parquet")) == [str(tree / "a" / "x.parquet")]
    assert ours.find(str(tree / "missing")) == []
    assert ours.ls(str(tree)) == sorted(theirs.ls(str(tree), detail=False))
    assert ours.info(str(tree / "a" / "x.parquet"))["size"] == 5
    assert ours.info(str(tree / "link"))["type"] == "directory"
    with pytest.raises(FileNotFoundError):
        ours.info(str(tree / "missing"))
    assert ours._strip_protocol(f"file://{tree}/a/") == str(tree / "a")
    assert ours._strip_protocol("rel") == os.path.abspath("rel")


def test_changes_move_remove_and_write(tree):
    fs = LocalFiles()
    fs.makedirs(str(tree / "n" / "m"), exist_ok=True)
    with fs.open(str(tree / "n" / "m" / "f"), "wb") as f:
        f.write(b"abc")
    assert fs.size(str(tree / "n" / "m" / "f")) == 3
    fs.mv(str(tree / "n" / "m" / "f"), str(tree / "n" / "g"))
    assert (fs.exists(str(tree / "n" / "m" / "f")), fs.isfile(str(tree / "n" / "g"))) == (
        False,
        True,
    )
    with pytest.raises(IsADirectoryError):
        fs.rm(str(tree / "n"))
    fs.rm(str(tree / "n"), recursive=True)
    assert not fs.isdir(str(tree / "n"))
    # Anything not defined here is fsspec's own, imported on first use.
    assert sorted(fs.glob(str(tree / "a" / "*.parquet"))) == [str(tree / "a" / "x.parquet")]


def test_plain_paths_resolve_to_local_files_and_list_as_before(tree):
    fs, paths = resolve_filesystem(str(tree / "a"), None, "read_parquet")
    assert type(fs.fsspec) is LocalFiles and fs.is_local and paths == [str(tree / "a")]
    entries = expand_paths(fs, paths, "read_parquet", file_extensions=["parquet"])
    assert [(e.path, e.size) for e in entries] == [
        (str(tree / "a" / "b" / "y.parquet"), 1),
        (str(tree / "a" / "x.parquet"), 5),
    ]
    # A URL still goes through fsspec, and lists the same files.
    fs2, paths2 = resolve_filesystem(f"file://{tree}/a", None, "read_parquet")
    assert type(fs2.fsspec) is LocalFileSystem
    assert expand_paths(fs2, paths2, "read_parquet", file_extensions=["parquet"]) == entries
