"""Image files through Pillow (optional extra ``dataflow[images]``, imported when a
file is read): column ``image``, an HWC ``uint8`` tensor per row.

>>> ImageDatasource("imgs/", size=(64, 64), mode="RGB")   # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from dataflow.block import array_from_numpy
from dataflow.sources.file_based import FileBasedDatasource
from dataflow.sources.paths import FileSystems

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif", "webp")


def _pil_image() -> Any:
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(
            "read_images needs Pillow: pip install 'dataflow[images]' (or pip install Pillow)"
        ) from e
    return Image


class ImageDatasource(FileBasedDatasource):
    """Decodes images; ``size=(height, width)`` resizes and ``mode`` ("RGB",
    "L", ...) converts, so that every row has one shape. Without ``size``,
    images of different shapes cannot share a block and the read fails naming
    the two files."""

    where = "read_images"
    default_extensions = IMAGE_EXTENSIONS
    expansion = 6.0

    def __init__(
        self,
        paths: Any,
        *,
        size: tuple[int, int] | None = None,
        mode: str | None = None,
        **file_kwargs: Any,
    ) -> None:
        if size is not None and (len(size) != 2 or min(size) <= 0):
            raise ValueError(f"read_images: size must be (height, width) > 0, got {size!r}")
        _pil_image()  # fail at construction, not in a worker, when Pillow is missing
        super().__init__(paths, **file_kwargs)
        self.size = tuple(size) if size is not None else None
        self.mode = mode

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        image_cls = _pil_image()
        with self.open_stream(fs, path) as f:
            data = f.read()
        with image_cls.open(io.BytesIO(data)) as img:
            if self.mode is not None and img.mode != self.mode:
                img = img.convert(self.mode)
            if self.size is not None:
                img = img.resize((self.size[1], self.size[0]))
            arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        arr = np.ascontiguousarray(arr).reshape((1, *arr.shape))  # a row axis with real strides
        yield pa.table({"image": array_from_numpy(arr, "image")})
