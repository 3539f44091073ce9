"""Backends: where tasks run and objects live. ``get_backend_class(name)`` resolves one lazily."""

from __future__ import annotations

import importlib
from types import MappingProxyType

# name -> "module:Class"; imported only when chosen, so `ray` is never imported
# unless the ray backend is asked for.
_REGISTRY: dict[str, str] = {
    "local": "runtime.backends.local:LocalBackend",
    "inline": "runtime.backends.inline:InlineBackend",
    "ray": "runtime.backends.ray:RayBackend",
}
BACKENDS = MappingProxyType(_REGISTRY)


def get_backend_class(name: str) -> type:
    """Return the backend class registered as ``name``.

    >>> get_backend_class("inline").__name__
    'InlineBackend'
    """
    try:
        target = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown backend {name!r}; known backends: {known}") from None
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)
