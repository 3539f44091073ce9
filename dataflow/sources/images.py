"""Image files through Pillow (optional extra ``dataflow[images]``, imported when a
file is read or written): column ``image``, an HWC ``uint8`` tensor per row;
``ImageDatasink`` writes one image file per row (``write_images``).

>>> ImageDatasource("imgs/", size=(64, 64), mode="RGB")   # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from dataflow.block import array_from_numpy
from dataflow.sources.datasource import WriteResult
from dataflow.sources.file_based import FileBasedDatasource
from dataflow.sources.paths import FileSystems
from dataflow.sources.sinks import FileDatasink, provided_name

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


class ImageDatasink(FileDatasink):
    """``write_images``: one image file per row, encoded by Pillow from the
    array in ``column`` (HxW or HxWxC, uint8). Files are named
    ``part-TTTTT-BBBBBB-RRRRRR.<format>`` (task, block within the task, row
    within the block), or ``{stem}_{block:06}_{row:06}.<format>`` after a
    ``filename_provider``'s task name, as Ray Data names row files."""

    where = "write_images"

    def __init__(self, path: Any, *, column: str, file_format: str = "png", **kwargs: Any) -> None:
        if kwargs.get("partition_cols"):
            raise ValueError("write_images: partition_cols is not supported (one file per row)")
        if not isinstance(file_format, str) or not file_format:
            raise ValueError(
                f"write_images: file_format must be a name such as 'png', got {file_format!r}"
            )
        image_cls = _pil_image()  # fail here, not in a worker, when Pillow is missing
        image_cls.init()
        self.pil_format = image_cls.registered_extensions().get(f".{file_format.lower()}")
        if self.pil_format is None or self.pil_format not in image_cls.SAVE:
            raise ValueError(
                f"write_images: Pillow cannot write file_format={file_format!r}; "
                "use 'png', 'jpeg', 'webp', 'bmp', 'tiff'..."
            )
        super().__init__(path, **kwargs)
        self.column = column
        self.extension = file_format

    def write(self, blocks: Iterable[pa.Table], task_index: int) -> WriteResult:
        if not self.write_id:
            raise RuntimeError(f"{self.where}: write() called before on_write_start()")
        image_cls = _pil_image()
        done: list[dict] = []
        stem = self._row_stem(task_index)
        for b, block in enumerate(blocks):
            if self.column not in block.column_names:
                raise KeyError(
                    f"{self.where}: column {self.column!r} is not in {block.column_names}"
                )
            for r, value in enumerate(_images(block.column(self.column))):
                rel = f"{stem}{b:06d}{self.sep}{r:06d}.{self.extension}"
                buf = io.BytesIO()
                try:
                    image_cls.fromarray(value).save(buf, format=self.pil_format)
                except (TypeError, ValueError, OSError) as e:
                    raise ValueError(
                        f"{self.where}: row {r} of block {b} (shape {value.shape}, "
                        f"{value.dtype}) is not an image Pillow can save as "
                        f"{self.extension}: {e}"
                    ) from e
                with self.fs.arrow.open_output_stream(
                    f"{self.staging}/{rel}", **self.open_stream_args
                ) as out:
                    out.write(buf.getbuffer())
                done.append({"path": rel, "num_rows": 1, "num_bytes": buf.tell()})
        return WriteResult(
            files=tuple(f"{self.path}/{f['path']}" for f in done),
            num_rows=len(done),
            num_bytes=sum(f["num_bytes"] for f in done),
            extra={"manifest": done},
        )

    @property
    def sep(self) -> str:
        return "_" if self.filename_provider is not None else "-"

    def _row_stem(self, task_index: int) -> str:
        """The name before ``{block}{sep}{row}.{ext}``."""
        if self.filename_provider is None:
            return f"{self.file_prefix()}-{task_index:05d}-"
        name = provided_name(self.filename_provider, self.write_id, task_index, 0)
        stem, dot, _ = name.rpartition(".")
        return f"{stem if dot else name}_"


def _images(column: pa.ChunkedArray) -> Iterator[np.ndarray]:
    """The arrays of an image column, one per row (tensor or list cells)."""
    if isinstance(column.type, pa.FixedShapeTensorType):
        for chunk in column.chunks:
            yield from chunk.to_numpy_ndarray()
        return
    for value in column.to_pylist():
        if value is None:
            raise ValueError("write_images: a row's image is null")
        yield np.asarray(value, dtype=np.uint8) if not isinstance(value, np.ndarray) else value
