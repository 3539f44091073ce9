"""The ``dataflow`` console script.

    dataflow --version
    dataflow info [--json]     backend, CPUs/GPUs detected, object store capacity and location
    dataflow demo [--rows N]   the main job: read_parquet -> map_batches -> filter -> torch
                               loop and write_parquet on a generated sample, with stats
    dataflow serve SPEC --address HOST:PORT [--token T] [--epochs N]
                   [--certfile PEM --keyfile PEM | --insecure]
                               run the Dataset that SPEC (file.py:function or
                               module:function) returns and serve its batches to
                               dataflow.connect() consumers (off loopback: over TLS,
                               or in plaintext with --insecure)
    dataflow top [--address HOST:PORT] [--interval S] [--once]
                               live per-operator table of a pipeline whose driver
                               serves metrics (DataContext.metrics_port)

``info`` reports what a new session would use; it starts no worker and creates
no store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

MiB = 1024 * 1024


def runtime_info() -> dict[str, Any]:
    """What ``dataflow.init()`` would start here, without starting it.

    >>> sorted(runtime_info())
    ['backend', 'cpus', 'gpus', 'store_capacity_bytes', 'store_location', 'version']
    """
    import dataflow
    from dataflow.context import DataContext
    from runtime.resources import detect_num_cpus, detect_num_gpus
    from runtime.store import default_capacity, default_shm_root

    root = default_shm_root()
    capacity = DataContext.get_current().object_store_memory or default_capacity(root)
    return {
        "version": dataflow.__version__,
        "backend": os.environ.get("DATAFLOW_BACKEND", "local"),
        "cpus": detect_num_cpus(),
        "gpus": detect_num_gpus(),
        "store_capacity_bytes": capacity,
        "store_location": str(root),
    }


def _print_info(as_json: bool) -> None:
    info = runtime_info()
    if as_json:
        print(json.dumps(info))
        return
    print(f"dataflow {info['version']}")
    print(
        f"backend:        {info['backend']}  (set DATAFLOW_BACKEND or dataflow.init(backend=...))"
    )
    print(f"CPUs:           {info['cpus']}")
    print(f"GPUs:           {info['gpus']}")
    print(f"store capacity: {info['store_capacity_bytes'] / MiB:,.0f} MiB")
    print(f"store location: {info['store_location']}")


def _run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dataflow.demo import DEFAULT_ROWS, run_demo

    rows = DEFAULT_ROWS if args.rows is None else args.rows
    if rows < 1000:
        print(f"dataflow demo: --rows must be at least 1000, got {rows}", file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
    except ImportError:
        print(
            "dataflow demo trains with PyTorch: pip install torch (or 'dataflow[torch]')",
            file=sys.stderr,
        )
        return 1
    run_demo(
        rows,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        output_dir=Path(args.output) if args.output else None,
    )
    return 0


def load_dataset(spec: str) -> Any:
    """The Dataset that ``spec`` returns: ``path/to/file.py:function`` or
    ``package.module:function`` (called with no arguments).

    >>> load_dataset("no_colon")
    Traceback (most recent call last):
    ...
    ValueError: dataflow serve: SPEC must be 'file.py:function' or 'module:function', got 'no_colon'
    """
    import importlib
    import importlib.util

    from dataflow.dataset import Dataset

    where, _, name = spec.rpartition(":")
    if not where or not name.isidentifier():
        raise ValueError(
            f"dataflow serve: SPEC must be 'file.py:function' or 'module:function', got {spec!r}"
        )
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise ValueError(f"dataflow serve: no such file {where!r}")
        loader = importlib.util.spec_from_file_location("_dataflow_served", where)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"dataflow serve: {where!r} has no function {name!r}")
    ds = fn()
    if not isinstance(ds, Dataset):
        raise ValueError(
            f"dataflow serve: {spec} returned {type(ds).__name__}, not a dataflow.Dataset"
        )
    return ds


def _run_serve(args: argparse.Namespace) -> int:
    import signal

    try:
        ds = load_dataset(args.spec)
        server = ds.serve(
            args.address,
            token=args.token,
            epochs=args.epochs,
            certfile=args.certfile,
            keyfile=args.keyfile,
            insecure=args.insecure,
        )
    except (ValueError, OSError) as e:
        print(e, file=sys.stderr)
        return 2
    # SIGTERM stops the server like Ctrl-C: the pipeline's workers and objects are freed.
    signal.signal(signal.SIGTERM, lambda *_: server.dispenser.close())
    print(f"dataflow serve: serving {args.spec} at {server.address}", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _run_top(args: argparse.Namespace) -> int:
    from dataflow.top import run_top

    host, _, port = args.address.rpartition(":")
    if not host or not port.isdigit():
        print(
            f"dataflow top: --address must be HOST:PORT, got {args.address!r} "
            "(or set DATAFLOW_METRICS_PORT)",
            file=sys.stderr,
        )
        return 2
    if args.interval <= 0:
        print(f"dataflow top: --interval must be positive, got {args.interval}", file=sys.stderr)
        return 2
    return run_top(args.address, args.interval, once=args.once)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dataflow`` console script; returns the exit code."""
    from dataflow import __version__

    parser = argparse.ArgumentParser(
        prog="dataflow", description="dataflow: a streaming dataset engine"
    )
    parser.add_argument("--version", action="version", version=f"dataflow {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser(
        "info", help="backend, CPUs/GPUs, object store capacity and location"
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    demo = commands.add_parser(
        "demo", help="run the main job on a generated sample dataset, with progress and stats"
    )
    demo.add_argument("--rows", type=int, default=None, help="sample size (default 1,000,000)")
    demo.add_argument("--cache-dir", default=None, help="where the sample is cached")
    demo.add_argument("--output", default=None, help="where write_parquet writes")
    serve = commands.add_parser(
        "serve", help="serve the batches of a Dataset to dataflow.connect() consumers"
    )
    serve.add_argument("spec", help="file.py:function or module:function returning a Dataset")
    serve.add_argument("--address", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    serve.add_argument(
        "--token",
        default=None,
        help="required off loopback (default: $DATAFLOW_SERVICE_TOKEN)",
    )
    serve.add_argument("--epochs", type=int, default=1, help="passes over the dataset")
    serve.add_argument("--certfile", help="TLS certificate chain, PEM ($DATAFLOW_SERVICE_CERT)")
    serve.add_argument("--keyfile", help="TLS private key, PEM ($DATAFLOW_SERVICE_KEY)")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="serve in plaintext off loopback (a network you trust)",
    )
    top = commands.add_parser(
        "top", help="live per-operator view of a pipeline serving metrics (metrics_port)"
    )
    top.add_argument(
        "--address",
        default=f"127.0.0.1:{os.environ.get('DATAFLOW_METRICS_PORT', '')}",
        help="HOST:PORT of the driver's metrics (default 127.0.0.1:$DATAFLOW_METRICS_PORT)",
    )
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument(
        "--once", action="store_true", help="print one table (no screen codes) and exit"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            _print_info(args.json)
            return 0
        if args.command == "demo":
            return _run_demo(args)
        if args.command == "serve":
            return _run_serve(args)
        if args.command == "top":
            return _run_top(args)
    except BrokenPipeError:
        # The reader went away (`dataflow info | head`): stop quietly, and keep
        # the interpreter's final flush from raising again (Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
