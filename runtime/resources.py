"""Resources as value objects: CPUs, GPUs, memory and custom resources.

``Resources`` is frozen and supports ``+``, ``-`` and ``fits_in`` so that pools
and the executor account for slots with plain arithmetic.

>>> Resources(cpu=1) + Resources(cpu=0.5, gpu=1)
Resources(cpu=1.5, gpu=1)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from runtime.errors import ResourceError

_EPS = 1e-9


@dataclass(frozen=True)
class Resources:
    """An amount of CPUs, GPUs, bytes of memory and named custom resources."""

    cpu: float = 0.0
    gpu: float = 0.0
    memory: float = 0.0
    custom: tuple[tuple[str, float], ...] = field(default=())

    @staticmethod
    def of(
        cpu: float = 0.0,
        gpu: float = 0.0,
        memory: float = 0.0,
        custom: Mapping[str, float] | None = None,
    ) -> Resources:
        """Build a Resources from keyword amounts and a custom mapping."""
        items = tuple(sorted((k, float(v)) for k, v in (custom or {}).items() if v))
        return Resources(float(cpu), float(gpu), float(memory), items)

    @property
    def custom_dict(self) -> dict[str, float]:
        return dict(self.custom)

    def _combine(self, other: Resources, sign: float) -> Resources:
        merged = self.custom_dict
        for k, v in other.custom:
            merged[k] = merged.get(k, 0.0) + sign * v
        return Resources.of(
            self.cpu + sign * other.cpu,
            self.gpu + sign * other.gpu,
            self.memory + sign * other.memory,
            {k: v for k, v in merged.items() if abs(v) > _EPS},
        )

    def __add__(self, other: Resources) -> Resources:
        return self._combine(other, 1.0)

    def __sub__(self, other: Resources) -> Resources:
        return self._combine(other, -1.0)

    def scale(self, factor: float) -> Resources:
        return Resources.of(
            self.cpu * factor,
            self.gpu * factor,
            self.memory * factor,
            {k: v * factor for k, v in self.custom},
        )

    def fits_in(self, other: Resources) -> bool:
        """True when every amount of ``self`` is available in ``other``."""
        if self.cpu > other.cpu + _EPS or self.gpu > other.gpu + _EPS:
            return False
        if self.memory > other.memory + _EPS:
            return False
        have = other.custom_dict
        return all(v <= have.get(k, 0.0) + _EPS for k, v in self.custom)

    def __repr__(self) -> str:
        parts = [f"cpu={self.cpu:g}"]
        if self.gpu:
            parts.append(f"gpu={self.gpu:g}")
        if self.memory:
            parts.append(f"memory={self.memory:g}")
        parts += [f"{k}={v:g}" for k, v in self.custom]
        return f"Resources({', '.join(parts)})"


def detect_num_gpus() -> int:
    """GPUs visible to this process: CUDA_VISIBLE_DEVICES if set, else nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def detect_num_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def check_fits(resources: Resources, total: Resources, what: str) -> None:
    """Raise ResourceError for a request that ``total`` can never satisfy."""
    if resources.gpu > 1 and abs(resources.gpu - round(resources.gpu)) > _EPS:
        raise ResourceError(
            f"{what} asks for {resources.gpu:g} GPUs: requests above one GPU must be "
            "whole numbers (a fraction below 1 shares a device)"
        )
    if resources.fits_in(total):
        return
    short = [
        f"{need:g} {unit}, this backend has {have:g}"
        for unit, need, have in (
            ("CPUs", resources.cpu, total.cpu),
            ("GPUs", resources.gpu, total.gpu),
            ("bytes of memory", resources.memory, total.memory),
        )
        if need > have + _EPS
    ]
    have = total.custom_dict
    short += [
        f"{need:g} {key!r}, this backend has {have.get(key, 0.0):g}"
        for key, need in resources.custom
        if need > have.get(key, 0.0) + _EPS
    ]
    raise ResourceError(
        f"{what} needs {'; '.join(short)}: lower the request or declare more "
        "(e.g. num_gpus=... / resources={...} when starting the backend)"
    )
