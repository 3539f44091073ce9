"""``python -m benchmarks {list,data,run}``: the benchmark harness's command line.

    python -m benchmarks list
    python -m benchmarks data                      # 8M rows / 16 files + 2,000 small files
    python -m benchmarks run etl feed --engines dataflow,daft,ray,pyarrow,pyarrow-mp \\
        --repeat 3 --json-out results.json
    DATAFLOW_BENCH_ROWS=40000 python -m benchmarks run etl   # a tiny, separately cached size
    python -m benchmarks scaling etl feed --sizes 8000000,32000000 --cores 1,2 \
        --engines dataflow,daft --png scaling.png   # rows/s against size and cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks import engines, workloads
from benchmarks.data import DataSpec, default_cache_dir, ensure

ROWS_ENV = "DATAFLOW_BENCH_ROWS"


def _spec(args: argparse.Namespace) -> DataSpec:
    return DataSpec(
        rows=args.rows,
        files=args.files,
        row_group_rows=args.row_group_rows,
        small_files=args.small_files,
        small_file_rows=args.small_file_rows,
    )


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    d = DataSpec()
    rows = int(os.environ.get(ROWS_ENV) or d.rows)
    parser.add_argument("--rows", type=int, default=rows, help=f"main dataset rows (${ROWS_ENV})")
    parser.add_argument("--files", type=int, default=d.files)
    parser.add_argument("--row-group-rows", type=int, default=d.row_group_rows)
    parser.add_argument("--small-files", type=int, default=d.small_files)
    parser.add_argument("--small-file-rows", type=int, default=d.small_file_rows)
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"default: {default_cache_dir()}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the workloads, one line each")
    data = sub.add_parser("data", help="generate the seeded datasets (cached)")
    _add_data_args(data)
    run = sub.add_parser("run", help="run workloads on engines, each run in a fresh process")
    run.add_argument("workloads", nargs="+", metavar="WORKLOAD")
    run.add_argument(
        "--engines",
        default=",".join(engines.names()),
        help="comma-separated (default: %(default)s)",
    )
    run.add_argument("--repeat", type=int, default=3)
    run.add_argument("--timeout", type=float, default=900.0, help="seconds per run (default 900)")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=INT",
        help="a workload size knob, e.g. overhead_blocks=20 (repeatable)",
    )
    run.add_argument(
        "--cold",
        action="store_true",
        help="time each whole process (imports, engine start, run, shutdown), as "
        "`time python script.py` would; default: the run alone, engines started untimed",
    )
    run.add_argument(
        "--max-rss-gib",
        type=float,
        default=None,
        help="kill a run whose process tree's RSS passes this many GiB (recorded as its "
        "error): keeps a peer from taking a shared machine's memory",
    )
    run.add_argument("--json-out", type=Path, default=None, help="keep records and summary here")
    run.add_argument(
        "--cpus", default=None, help="pin each run to these CPUs (taskset -c syntax, e.g. 0)"
    )
    _add_data_args(run)
    scaling = sub.add_parser("scaling", help="rows/s at several sizes and core counts (+ PNG)")
    scaling.add_argument("workloads", nargs="+", metavar="WORKLOAD")
    scaling.add_argument("--engines", default="dataflow,daft,pyarrow")
    scaling.add_argument(
        "--sizes", default="8000000,32000000,64000000", help="rows, comma-separated"
    )
    scaling.add_argument("--cores", default="1,2", help="core counts, comma-separated")
    scaling.add_argument("--repeat", type=int, default=1)
    scaling.add_argument("--timeout", type=float, default=900.0)
    scaling.add_argument("--json-out", type=Path, default=None)
    scaling.add_argument("--png", type=Path, default=None, help="write the plot here")
    _add_data_args(scaling)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (1 when a run failed or checksums differ)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in workloads.names():
            w = workloads.get(name)
            print(f"{name:<18} {w.description}  [{', '.join(w.runs)}]")
        return 0
    if args.command == "scaling":
        return _scaling(parser, args)
    try:
        spec = _spec(args)
        if args.command == "run":
            names = list(dict.fromkeys(args.workloads))
            for name in names:
                workloads.get(name)
            engine_names = [e.strip() for e in args.engines.split(",") if e.strip()]
            for name in engine_names:
                engines.get(name)
            params = _params(args.param)
            if args.repeat < 1:
                raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    except (KeyError, ValueError) as exc:
        parser.error(str(exc.args[0]) if exc.args else str(exc))
    paths = ensure(spec, args.cache_dir)
    if args.command == "data":
        print(
            f"{paths.root}: {len(paths.main_files)} files / {paths.rows} rows, "
            f"{len(paths.small_files)} small files / {paths.small_rows} rows"
        )
        return 0
    out = run_and_report(names, engine_names, paths.root, args, params)
    failed = any("error" in r for r in out["records"]) or not all(
        s["checksums_agree"] for s in out["summary"]
    )
    return 1 if failed else 0


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} expects comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} expects positive integers, got {text!r}")
    return values


def _scaling(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from benchmarks import scaling

    try:
        for name in args.workloads:
            workloads.get(name)
        engine_names = [e.strip() for e in args.engines.split(",") if e.strip()]
        for name in engine_names:
            engines.get(name)
        sizes, cores = _ints(args.sizes, "--sizes"), _ints(args.cores, "--cores")
        for n in cores:
            scaling.cpu_list(n)
    except (KeyError, ValueError) as exc:
        parser.error(str(exc.args[0]) if exc.args else str(exc))
    result = scaling.run_scaling(
        list(dict.fromkeys(args.workloads)),
        engine_names,
        sizes,
        cores,
        _spec(args),
        repeat=args.repeat,
        timeout_s=args.timeout,
        cache_dir=args.cache_dir,
        emit=lambda line: print(line, flush=True),
    )
    print(scaling.table(result))
    scaling.save(result, args.json_out, args.png)
    return 0 if all(p["checksums_agree"] and not p["errors"] for p in result["points"]) else 1


def _params(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.lstrip("-").isdigit():
            raise ValueError(f"--param expects NAME=INT (e.g. overhead_blocks=20), got {item!r}")
        out[name] = int(value)
    return out


def run_and_report(
    names: list[str], engine_names: list[str], data_root: Path, args, params: dict[str, int]
) -> dict:
    """Run, print, and keep the results in ``--json-out`` when given."""
    from benchmarks.runner import execute

    out = execute(
        names,
        engine_names,
        data_root,
        repeat=args.repeat,
        timeout_s=args.timeout,
        params=params,
        emit=lambda line: print(line, flush=True),
        cold=args.cold,
        cpus=args.cpus,
        max_rss_bytes=None if args.max_rss_gib is None else args.max_rss_gib * 1024**3,
    )
    out["data"] = {"root": str(data_root), "spec": vars(_spec(args)), "params": params}
    out["cold"] = args.cold
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    sys.exit(main())
