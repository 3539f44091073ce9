"""The local disk with fsspec's calls, without importing fsspec.

``import fsspec`` costs 0.12–0.16 s (it pulls in asyncio and
importlib.metadata), a tenth of a cold run's start. Plain local paths are what
most scripts read and write, so ``resolve_filesystem`` gives them this
stand-in: the calls dataflow's sources and sinks make (``info``, ``find``,
``ls``, ``exists``, ``makedirs``, ``mv``, ``open``, ``rm``, ``size``) on
``os``, with fsspec's ``LocalFileSystem`` results; any other attribute (a
glob, say) is fsspec's own, imported on first use.

>>> fs = LocalFiles()
>>> fs.exists("/")
True
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import IO, Any


class LocalFiles:
    """fsspec's ``LocalFileSystem`` calls on plain local paths, on ``os``."""

    protocol = ("file", "local")

    @staticmethod
    def _strip_protocol(path: str) -> str:
        for prefix in ("file://", "local://"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
        path = os.path.abspath(path) if not os.path.isabs(path) else path
        return path.rstrip("/") or "/"

    @staticmethod
    def info(path: str) -> dict[str, Any]:
        """``{"name", "size", "type"}`` of ``path`` (links followed); FileNotFoundError
        when it does not exist."""
        st = os.stat(path)
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
        return {"name": path, "size": st.st_size, "type": kind, "mtime": st.st_mtime}

    def find(
        self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False
    ) -> Any:
        """Every file under ``path`` (and directory, ``withdirs``), sorted by path.
        Linked directories are not entered (fsspec's walk does not enter them
        either, and a link cycle cannot loop)."""
        if maxdepth is not None:
            return self._fsspec().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail)
        path = self._strip_protocol(path)
        found: dict[str, dict[str, Any]] = {}
        try:
            top = self.info(path)
        except FileNotFoundError:
            return found if detail else []
        if top["type"] != "directory":
            found[path] = top
        else:
            if withdirs:
                found[path] = top
            for root, dirs, files in os.walk(path):
                for name in (*dirs, *files) if withdirs else files:
                    full = f"{root}/{name}"
                    try:
                        found[full] = self.info(full)
                    except FileNotFoundError:  # a dangling link, or removed meanwhile
                        continue
        found = dict(sorted(found.items()))
        return found if detail else list(found)

    def ls(self, path: str, detail: bool = False) -> list[Any]:
        path = self._strip_protocol(path)
        if not os.path.isdir(path):
            return [self.info(path) if detail else path]
        names = sorted(f"{path.rstrip('/')}/{n}" for n in os.listdir(path))
        return [self.info(n) for n in names] if detail else names

    @staticmethod
    def exists(path: str) -> bool:
        return os.path.exists(path)

    @staticmethod
    def isdir(path: str) -> bool:
        return os.path.isdir(path)

    @staticmethod
    def isfile(path: str) -> bool:
        return os.path.isfile(path)

    @staticmethod
    def size(path: str) -> int:
        return os.stat(path).st_size

    @staticmethod
    def makedirs(path: str, exist_ok: bool = False) -> None:
        os.makedirs(path, exist_ok=exist_ok)

    @staticmethod
    def mv(path1: str, path2: str, **_: Any) -> None:
        shutil.move(path1, path2)

    @staticmethod
    def rm(path: str, recursive: bool = False, **_: Any) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            if not recursive:
                raise IsADirectoryError(f"{path} is a directory; pass recursive=True")
            shutil.rmtree(path)
        else:
            os.remove(path)

    @staticmethod
    def open(path: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        return open(path, mode, **kwargs)  # noqa: SIM115 - the caller closes it

    @staticmethod
    def _fsspec() -> Any:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem()

    def __getattr__(self, name: str) -> Any:
        # Only reached for what is not defined above (glob, cat, walk...).
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._fsspec(), name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalFiles)

    def __hash__(self) -> int:
        return hash(LocalFiles)
