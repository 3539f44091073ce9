"""Pickling task functions for workers so that their tracebacks name user code.

cloudpickle (>= 3.1) pickles a function defined in ``__main__``, a notebook, a
lambda or a nested function *by value* and sets the ``co_filename`` of every
such code object to ``"<dynamic-code>"``: a UDF failing in a worker then shows
``File "<dynamic-code>", line 4, in normalize`` and no source line. Functions
of importable modules are pickled by reference and are not affected.

``dumps_function`` keeps the real file names (a code reducer that differs from
cloudpickle's only in ``co_filename``, so every code object cloudpickle reaches
is covered: closures, nested functions, comprehensions, methods of classes,
functions inside partials or dataclasses) and ships the driver's source lines
of those files (its ``linecache``, which also knows notebook cells and
``exec``'d code that no worker could read from disk). ``loads_function``
installs those lines in the worker's ``linecache`` before anything runs, so a
worker formats a traceback exactly as the driver would for a local call: file,
line, function and source line.

Fixing the names while pickling costs nothing per object beyond cloudpickle's
own reducer; the alternatives (walking the unpickled function for code objects
in the worker, or rewriting frames in the driver) have to find every place a
function can hide or match frames by name and line number.

>>> fn = loads_function(dumps_function(lambda x: x + 1))  # in a worker
>>> fn(1), fn.__code__.co_filename != "<dynamic-code>"
(2, True)
"""

from __future__ import annotations

import io
import linecache
import pickle
import types
from collections.abc import Callable
from typing import Any

import cloudpickle

MAX_SOURCE_BYTES = 1 << 20
"""Files bigger than this are not shipped; a worker then reads its own copy."""

_DYNAMIC = "<dynamic-code>"
_code_reduce = cloudpickle.Pickler.dispatch_table.get(types.CodeType)


class _FunctionPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, except that code objects keep their file name;
    records the files of the code objects it pickles by value."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.filenames: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType and _code_reduce is not None:
            make, args = _code_reduce(obj)
            filename = obj.co_filename
            self.filenames.add(filename)
            return make, tuple(filename if a == _DYNAMIC else a for a in args)
        return _base_override(self, obj)


_base_override = cloudpickle.Pickler.reducer_override


def dumps_function(fn: Any) -> bytes:
    """``fn`` (any picklable object) as bytes for ``loads_function`` in another
    process: real file names in its code, and the source lines of those files."""
    buf = io.BytesIO()
    pickler = _FunctionPickler(buf)
    pickler.dump(fn)
    return pickle.dumps((_sources(pickler.filenames), buf.getvalue()), pickle.HIGHEST_PROTOCOL)


def loads_function(payload: bytes) -> Callable[..., Any]:
    """The object ``dumps_function`` pickled; its files' source lines join this
    process's ``linecache`` first (the driver's copy wins: it is what ran)."""
    sources, pickled = pickle.loads(payload)
    for filename, lines in sources.items():
        # mtime None: linecache.checkcache keeps the entry instead of stat-ing a
        # file that may not exist here (a notebook cell, another host).
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return pickle.loads(pickled)


def _sources(filenames: set[str]) -> dict[str, list[str]]:
    sources = {}
    for filename in filenames:
        linecache.checkcache(filename)  # what a local traceback would read now
        lines = linecache.getlines(filename)
        if lines and sum(map(len, lines)) <= MAX_SOURCE_BYTES:
            sources[filename] = lines
    return sources
