"""Arrow and numpy batches -> torch tensors (what ``iter_torch_batches`` and
``to_torch_dataset`` hand out).

Conversion is zero-copy where the dtype and layout allow: a null-free numeric
Arrow column is viewed as numpy (``dataflow.block.column_to_numpy``) and handed
to torch through DLPack, so the tensor shares the block's buffer. DLPack and not
``torch.from_numpy`` because Arrow buffers are read-only and ``from_numpy``
warns on those. Tensor columns (fixed-shape tensors) become N-d tensors.

>>> batch = {"x": np.arange(4.0), "emb": np.zeros((4, 2, 3), np.float32)}
>>> {k: tuple(v.shape) for k, v in numpy_batch_to_torch(batch).items()}
{'x': (4,), 'emb': (4, 2, 3)}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from dataflow.block import to_batch
from dataflow.frameworks import check_dtypes_cover

if TYPE_CHECKING:
    import torch


def numpy_batch_to_torch(
    batch: Mapping[str, np.ndarray],
    *,
    dtypes: torch.dtype | Mapping[str, torch.dtype] | None = None,
    device: str | torch.device | None = None,
    pin_memory: bool = False,
) -> dict[str, torch.Tensor]:
    """Convert a numpy batch (column -> array) to a dict of tensors.

    ``dtypes`` is one dtype for every column or a dict per column (columns not
    in it keep theirs). ``device="cuda"`` copies with ``non_blocking=True``;
    ``pin_memory`` pins the host tensor first (only meaningful with CUDA).

    >>> numpy_batch_to_torch({"a": np.arange(3)}, dtypes=torch.float32)["a"]  # doctest: +SKIP
    tensor([0., 1., 2.])
    """
    import torch

    check_dtypes_cover("iter_torch_batches", dtypes, list(batch))
    target = torch.device(device) if device is not None else None
    out: dict[str, torch.Tensor] = {}
    for name, arr in batch.items():
        tensor = array_to_tensor(arr, name)
        dtype = dtypes.get(name) if isinstance(dtypes, Mapping) else dtypes
        if dtype is not None and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        if pin_memory and torch.cuda.is_available():
            tensor = tensor.pin_memory()
        if target is not None and target.type != "cpu":
            tensor = tensor.to(target, non_blocking=True)
        out[name] = tensor
    return out


def array_to_tensor(arr: Any, name: str = "") -> torch.Tensor:
    """One numpy array as a tensor, sharing memory when torch supports the dtype.

    Strings, objects and other non-numeric arrays raise a ``TypeError`` naming
    the column (select or drop it, or pass a ``collate_fn``).
    """
    import torch

    if isinstance(arr, torch.Tensor):
        return arr
    a = np.asarray(arr)
    if a.dtype.kind not in "biufc":
        raise TypeError(
            f"iter_torch_batches: column {name!r} has dtype {a.dtype}, which torch cannot "
            "hold; drop it (drop_columns), encode it as numbers, or pass collate_fn= to "
            "build tensors yourself"
        )
    if a.dtype.byteorder == ">" or any(s % a.itemsize for s in a.strides):
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
    return torch.from_dlpack(a)


def table_to_torch(
    table: pa.Table,
    *,
    dtypes: torch.dtype | Mapping[str, torch.dtype] | None = None,
    device: str | torch.device | None = None,
    pin_memory: bool = False,
    collate_fn: Callable[[dict[str, np.ndarray]], Any] | None = None,
) -> Any:
    """A block as tensors: ``collate_fn(numpy_batch)`` when given, else a dict of tensors.

    >>> table_to_torch(pa.table({"x": [1.0, 2.0]}))["x"]  # doctest: +SKIP
    tensor([1., 2.], dtype=torch.float64)
    """
    batch = to_batch(table, "numpy")
    if collate_fn is not None:
        return collate_fn(batch)
    return numpy_batch_to_torch(batch, dtypes=dtypes, device=device, pin_memory=pin_memory)


def check_torch_args(
    dtypes: Any, device: Any, collate_fn: Any, where: str = "iter_torch_batches"
) -> None:
    """Validate torch arguments up front so a bad one fails before execution starts."""
    import torch

    if dtypes is not None and not isinstance(dtypes, (torch.dtype, Mapping)):
        raise TypeError(
            f"{where}: dtypes must be a torch.dtype or a dict of column -> torch.dtype, "
            f"got {type(dtypes).__name__}"
        )
    if isinstance(dtypes, Mapping):
        bad = {k: v for k, v in dtypes.items() if not isinstance(v, torch.dtype)}
        if bad:
            raise TypeError(f"{where}: dtypes values must be torch.dtype, got {bad}")
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"{where}: bad device {device!r}: {e}") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"{where}: device={device!r} but CUDA is not available on this machine; "
                "use device='cpu' or None"
            )
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(f"{where}: collate_fn must be callable, got {type(collate_fn).__name__}")
