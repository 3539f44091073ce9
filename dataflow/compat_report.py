"""Ray Data parity, measured: compares ``inspect.signature`` of every public Ray
Data function and ``Dataset`` / ``GroupedData`` / ``DataIterator`` method in
scope with dataflow's, and writes ``docs/ray_compat.md``.

Every difference must have a reason in ``REASONS`` (or the whole function one
in ``OUT_OF_SCOPE``); ``tests/dataflow/test_ray_compat.py`` fails on one that
has none, on a reason for a difference that no longer exists, and on a stale
``docs/ray_compat.md``. Regenerate it with::

    python -m dataflow.compat_report          # writes docs/ray_compat.md

Needs ``ray[data]`` (the ``bench`` extra); only imports ``ray.data`` and
inspects signatures, it never starts Ray.

>>> diffs = compare()  # doctest: +SKIP
>>> diffs[0]  # doctest: +SKIP
Difference(api='read_parquet', key='read_parquet(partitioning)', what='default ...')
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataflow.compat_reasons import OUT_OF_SCOPE, REASONS

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "ray_compat.md"

_EMPTY = inspect.Parameter.empty
_KIND = {
    inspect.Parameter.POSITIONAL_ONLY: "positional-only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
    inspect.Parameter.VAR_POSITIONAL: "*args",
    inspect.Parameter.KEYWORD_ONLY: "keyword-only",
    inspect.Parameter.VAR_KEYWORD: "**kwargs",
}


@dataclass(frozen=True)
class Difference:
    """One way dataflow's API differs from Ray Data's. ``key`` is what
    ``REASONS`` is indexed by: ``"api"`` (missing) or ``"api(param)"``."""

    api: str
    key: str
    what: str


@dataclass(frozen=True)
class Entry:
    """One Ray API in scope: its name here, Ray's and dataflow's signatures
    (None where missing) and the differences found."""

    api: str
    ray_sig: str
    ours_sig: str | None
    diffs: tuple[Difference, ...]
    extras: tuple[str, ...]


def ray_apis() -> dict[str, Any]:
    """``{"read_parquet": fn, "Dataset.map": fn, ...}``: Ray Data's public API."""
    import ray.data as rd

    out: dict[str, Any] = {}
    for name in sorted(rd.__all__):
        obj = getattr(rd, name, None)
        if inspect.isfunction(obj):
            out[name] = obj
    for cls_name, cls in (
        ("Dataset", rd.Dataset),
        ("GroupedData", importlib.import_module("ray.data.grouped_data").GroupedData),
        ("DataIterator", rd.DataIterator),
    ):
        for name in sorted(dir(cls)):
            if name.startswith("_"):
                continue
            attr = inspect.getattr_static(cls, name)
            if isinstance(attr, (staticmethod, classmethod)):
                attr = attr.__func__
            if inspect.isfunction(attr):
                out[f"{cls_name}.{name}"] = attr
    return out


def our_api(api: str) -> Any:
    """dataflow's counterpart of Ray's ``api`` (None when missing)."""
    import dataflow
    from dataflow.grouped_data import GroupedData

    owners = {"Dataset": dataflow.Dataset, "GroupedData": GroupedData}
    owners["DataIterator"] = dataflow.DataIterator
    if "." in api:
        cls_name, name = api.split(".", 1)
        attr = inspect.getattr_static(owners[cls_name], name, None)
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        return attr if callable(attr) else None
    return getattr(dataflow, api, None)


def _default(value: Any) -> str:
    if value is _EMPTY:
        return "(required)"
    name = getattr(type(value), "__name__", "")
    if name in ("SaveMode",):  # an Enum: compare by value
        return repr(value.value)
    return repr(value)


def _params(fn: Any) -> list[inspect.Parameter]:
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name in ("self", "ds", "cls"):
        params = params[1:]
    return params


def compare_one(api: str, ray_fn: Any, ours: Any) -> Entry:
    """The differences between Ray's ``ray_fn`` and dataflow's ``ours``."""
    ray_sig = _render(_params(ray_fn))
    if ours is None:
        return Entry(api, ray_sig, None, (Difference(api, api, "missing in dataflow"),), ())
    theirs, mine = _params(ray_fn), _params(ours)
    by_name = {p.name: p for p in mine}
    diffs: list[Difference] = []

    def differ(param: str, what: str) -> None:
        diffs.append(Difference(api, f"{api}({param})", what))

    var_kw = next((p for p in mine if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    ray_positional = [p.name for p in theirs if p.kind in (0, 1)]
    my_positional = [p.name for p in mine if p.kind in (0, 1)]
    for i, name in enumerate(ray_positional):
        if name in by_name and (i >= len(my_positional) or my_positional[i] != name):
            differ(name, f"position {i} in Ray Data, not here")
    for p in theirs:
        q = by_name.get(p.name)
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            if var_kw is None:
                differ(f"**{p.name}", "Ray Data takes **" + p.name + "; dataflow does not")
            elif var_kw.name != p.name:
                differ(f"**{p.name}", f"named **{var_kw.name} here")
            continue
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            if q is None or q.kind is not p.kind:
                differ(f"*{p.name}", "Ray Data takes *" + p.name + "; dataflow does not")
            continue
        if q is None:
            differ(p.name, "missing in dataflow")
            continue
        if _KIND[p.kind] != _KIND[q.kind] and not (
            p.kind is inspect.Parameter.KEYWORD_ONLY and q.kind == 1 and q.default is not _EMPTY
        ):
            differ(p.name, f"{_KIND[p.kind]} in Ray Data, {_KIND[q.kind]} here")
        if _default(p.default) != _default(q.default):
            differ(p.name, f"default {_default(p.default)} in Ray Data, {_default(q.default)} here")
    ray_names = {p.name for p in theirs}
    extras = []
    for q in mine:
        if q.name in ray_names or q.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if q.default is _EMPTY and q.kind is not inspect.Parameter.VAR_POSITIONAL:
            differ(q.name, "required here, not a Ray Data parameter")
        elif q.kind in (0, 1) and any(r.kind in (0, 1) for r in theirs[len(ray_positional) :]):
            differ(q.name, "an extra positional parameter here")
        else:
            extras.append(q.name)
    return Entry(api, ray_sig, _render(mine), tuple(diffs), tuple(extras))


def compare() -> list[Entry]:
    """Every Ray API in scope, compared (out-of-scope ones are left out)."""
    return [
        compare_one(api, fn, our_api(api))
        for api, fn in ray_apis().items()
        if api not in OUT_OF_SCOPE
    ]


def unexplained(entries: list[Entry]) -> list[Difference]:
    """Differences with no reason in ``REASONS``."""
    return [d for e in entries for d in e.diffs if d.key not in REASONS and d.api not in REASONS]


def stale_reasons(entries: list[Entry]) -> list[str]:
    """Reasons given for differences that no longer exist (or out-of-scope
    entries Ray no longer has)."""
    keys = {d.key for e in entries for d in e.diffs} | {d.api for e in entries for d in e.diffs}
    ray = set(ray_apis())
    return sorted([k for k in REASONS if k not in keys] + [k for k in OUT_OF_SCOPE if k not in ray])


def _render(params: list[inspect.Parameter]) -> str:
    out: list[str] = []
    star = False
    for p in params:
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            star = True
            out.append(f"*{p.name}")
        elif p.kind is inspect.Parameter.VAR_KEYWORD:
            out.append(f"**{p.name}")
        elif p.default is _EMPTY:
            out.append(p.name)
        else:
            out.append(f"{p.name}={_default(p.default)}")
    return ", ".join(out)


def render(entries: list[Entry]) -> str:
    """``docs/ray_compat.md``: a summary, then one section per API."""
    import ray

    total = len(entries)
    exact = sum(1 for e in entries if not e.diffs)
    missing = [e.api for e in entries if e.ours_sig is None]
    lines = [
        "# Ray Data compatibility",
        "",
        f"Generated by `python -m dataflow.compat_report` from `inspect.signature` of Ray Data "
        f"{ray.__version__} and dataflow; `tests/dataflow/test_ray_compat.py` fails on any "
        "difference below without a reason, so this table is the whole list.",
        "",
        "A Ray Data script runs after changing `import ray` to "
        "`from dataflow.compat import ray` (or `ray.data` to `dataflow`). Ray-only "
        "parameters that cannot mean anything here are accepted by name and refused "
        "with a `PlanError` that says why; none is silently ignored.",
        "",
        f"- {total} Ray Data APIs in scope: {exact} match exactly (names, order, kinds, "
        f"defaults), {total - exact - len(missing)} differ in the parameters listed, "
        f"{len(missing)} are not in dataflow.",
        f"- {len(OUT_OF_SCOPE)} Ray Data APIs are out of scope (listed at the end, with why).",
        "- *Extra* parameters are dataflow's own keyword parameters with defaults: a Ray "
        "Data call never passes them.",
        "",
        "| API | status |",
        "|---|---|",
    ]
    for e in entries:
        if e.ours_sig is None:
            status = "missing"
        elif e.diffs:
            status = f"differs ({len(e.diffs)})"
        else:
            status = "matches"
        lines.append(f"| [`{e.api}`](#{_anchor(e.api)}) | {status} |")
    lines.append("")
    for e in entries:
        lines += ["", f"## {e.api}", "", f"Ray Data: `{e.api.split('.')[-1]}({e.ray_sig})`", ""]
        if e.ours_sig is None:
            lines += [f"**Not in dataflow.** {_reason(e.diffs[0])}"]
            continue
        if not e.diffs:
            lines.append("Matches.")
        for d in e.diffs:
            lines.append(f"- `{d.key}`: {d.what}. {_reason(d)}")
        if e.extras:
            lines += ["", f"Extra here: {', '.join(f'`{x}`' for x in e.extras)}."]
    lines += ["", "", "## Out of scope", "", "| API | why |", "|---|---|"]
    for api, why in sorted(OUT_OF_SCOPE.items()):
        lines.append(f"| `{api}` | {why} |")
    return "\n".join(lines) + "\n"


def _reason(d: Difference) -> str:
    return REASONS.get(d.key) or REASONS.get(d.api) or "**No reason given.**"


def _anchor(api: str) -> str:
    return api.lower().replace(".", "")


def main(argv: list[str] | None = None) -> int:
    """Write ``docs/ray_compat.md``; with ``--check``, exit 1 when it is stale
    or a difference has no reason."""
    argv = sys.argv[1:] if argv is None else argv
    entries = compare()
    text = render(entries)
    missing = unexplained(entries)
    for d in missing:
        print(f"no reason for {d.key}: {d.what}", file=sys.stderr)
    if "--check" in argv:
        stale = not DOC_PATH.exists() or DOC_PATH.read_text() != text
        if stale:
            print(f"{DOC_PATH} is stale: run python -m dataflow.compat_report", file=sys.stderr)
        return 1 if (stale or missing) else 0
    DOC_PATH.parent.mkdir(exist_ok=True)
    DOC_PATH.write_text(text)
    print(
        f"wrote {DOC_PATH}: {len(entries)} APIs, {sum(len(e.diffs) for e in entries)} differences"
    )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
