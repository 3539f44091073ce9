"""examples/: the KubeRay ``RayJob`` manifest has the structure KubeRay's
``ray.io/v1`` CRD expects and runs examples/ray_pipeline.py, and that script
gives exact results on every backend without naming one.

The manifest is parsed with PyYAML, which Ray itself requires (``dataflow[ray]``
brings it; dataflow does not depend on it). No Kubernetes runs here.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MANIFEST = EXAMPLES / "ray-job.yaml"

# RayJob spec fields of KubeRay's ray.io/v1 CRD (a typo in a key is silently ignored
# by `kubectl apply` without strict validation: catch it here).
_RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "clusterSelector",
    "deletionStrategy",
    "entrypoint",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "entrypointResources",
    "jobId",
    "managedBy",
    "metadata",
    "rayClusterSpec",
    "runtimeEnvYAML",
    "shutdownAfterJobFinishes",
    "submissionMode",
    "submitterConfig",
    "submitterPodTemplate",
    "suspend",
    "ttlSecondsAfterFinished",
}
_GROUP_FIELDS = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams",
                 "template", "numOfHosts", "suspend", "idleTimeoutSeconds", "scaleStrategy"}  # fmt: skip
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def _bytes(quantity: str) -> int:
    """A Kubernetes quantity ("8Gi", "2000000000") in bytes."""
    match = re.fullmatch(r"(\d+)([KMGT]i|[kMG])?", str(quantity))
    assert match, f"not a byte quantity: {quantity!r}"
    return int(match[1]) * _UNITS.get(match[2] or "", 1)


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    assert len(documents) == 1, "one RayJob document"
    return documents[0]


def _check_pod(group: dict[str, Any], where: str) -> dict[str, Any]:
    """The group's Ray container, after checking what every Ray pod needs."""
    params = group["rayStartParams"]
    # KubeRay passes rayStartParams to `ray start` as strings; numbers are rejected.
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), where
    spec = group["template"]["spec"]
    containers = spec["containers"]
    assert containers and len({c["name"] for c in containers}) == len(containers), where
    ray_container = containers[0]  # KubeRay runs `ray start` in the first container
    assert ray_container["image"] and ray_container["name"], where
    limits, requests = ray_container["resources"]["limits"], ray_container["resources"]["requests"]
    assert limits["memory"] == requests["memory"] and limits["cpu"] == requests["cpu"], where
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in ray_container.get("volumeMounts", [])}
    assert set(mounts.values()) <= set(volumes), f"{where}: a mount names no volume"
    # The object store lives in a RAM-backed /dev/shm big enough for it (a pod's
    # default /dev/shm is 64 MiB), inside the container's memory limit...
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory", where
    store = int(params["object-store-memory"])
    assert store <= _bytes(shm["sizeLimit"]) <= _bytes(limits["memory"]), where
    # ...and spills to a disk-backed volume (not RAM) mounted where Ray spills.
    spill = volumes[mounts[params["object-spilling-directory"]]]["emptyDir"]
    assert "medium" not in spill and _bytes(spill["sizeLimit"]) >= 2 * store, where
    return ray_container


def test_manifest_is_a_rayjob_with_the_fields_kuberay_expects(job: dict[str, Any]) -> None:
    yaml = pytest.importorskip("yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    spec = job["spec"]
    assert set(spec) <= _RAYJOB_SPEC_FIELDS, set(spec) - _RAYJOB_SPEC_FIELDS
    assert spec["submissionMode"] in {"K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode"}
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int)
    # The backend is chosen by the environment alone: the script has no init call.
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"] == {"DATAFLOW_BACKEND": "ray"}
    cluster = spec["rayClusterSpec"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", cluster["rayVersion"])
    head = cluster["headGroupSpec"]
    assert set(head) <= {"rayStartParams", "template", "serviceType", "enableIngress"}
    head_container = _check_pod(head, "headGroupSpec")
    assert {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265, 10001}
    assert head["rayStartParams"]["num-cpus"] == "0"  # the driver's node runs no tasks
    groups = cluster["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    for group in groups:
        assert set(group) <= _GROUP_FIELDS, set(group) - _GROUP_FIELDS
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        _check_pod(group, group["groupName"])
        assert group["template"]["spec"]["containers"][0]["image"] == head_container["image"]


def test_manifest_runs_the_example_pipeline_from_its_configmap(job: dict[str, Any]) -> None:
    """The entrypoint's script is examples/ray_pipeline.py, mounted on the head
    (where the driver runs) from the ConfigMap the header's kubectl line makes."""
    entry = job["spec"]["entrypoint"].split()
    assert entry[0] == "python" and entry[2:4] == ["--input", entry[3]] and "--output" in entry
    script = Path(entry[1])
    assert (EXAMPLES / script.name).is_file()
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in head["volumes"]}
    name = next(n for n, path in mounts.items() if path == str(script.parent))
    configmap = volumes[name]["configMap"]["name"]
    assert f"kubectl create configmap {configmap} --from-file=examples/{script.name}" in (
        MANIFEST.read_text()
    )


def test_example_pipeline_is_exact_on_every_backend(backend, tmp_path: Path) -> None:
    """The same script, no backend named in it: exact on inline, local and ray."""
    rng = np.random.default_rng(0)
    n = 3000
    price = rng.uniform(-5, 20, n).round(2)
    quantity = rng.integers(0, 4, n).astype(np.int64)
    src = tmp_path / "orders"
    src.mkdir()
    for i in range(3):
        part = slice(i * n // 3, (i + 1) * n // 3)
        pq.write_table(
            pa.table({"order_id": np.arange(n)[part], "price": price[part],
                      "quantity": quantity[part], "note": ["x"] * (n // 3)}),
            src / f"part-{i}.parquet",
        )  # fmt: skip
    main = runpy.run_path(str(EXAMPLES / "ray_pipeline.py"), run_name="ray_pipeline")["main"]
    written = main(["--input", str(src), "--output", str(tmp_path / "out")])
    got = pq.read_table(tmp_path / "out").sort_by("order_id")
    total = price * quantity
    keep = total > 0
    assert written == got.num_rows == int(keep.sum())
    assert got.column_names == ["order_id", "price", "quantity", "total"]
    assert got["order_id"].to_pylist() == np.arange(n)[keep].tolist()
    assert got["total"].to_pylist() == total[keep].tolist()
