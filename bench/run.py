"""Run every benchmark in bench/ and print one table; also write JSON.

Usage:  python bench/run.py [--quick] [--only NAME ...] [--json PATH]

Each ``bench/bench_*.py`` exposes ``run(quick: bool) -> list[Row]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import platform
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def print_table(rows) -> None:
    head = ["group", "figure", "value", "unit", "vs (same run)", "baseline", "ratio", "target"]
    table = [head]
    for r in rows:
        met = {True: " ok", False: " MISS", None: ""}[r.met]
        table.append([
            r.group, r.name, fmt(r.value), r.unit, r.baseline_name,
            fmt(r.baseline_value) if r.baseline_name else "",
            (fmt(r.ratio) + "x") if r.ratio is not None else "", r.target + met,
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark names (e.g. pack crc)")
    ap.add_argument("--json", default=str(HERE / "results" / "latest.json"))
    args = ap.parse_args(argv)

    sys.path.insert(0, str(HERE))
    names = discover()
    if args.only:
        names = [n for n in names if n.removeprefix("bench_") in args.only or n in args.only]
    rows = []
    for name in names:
        mod = importlib.import_module(name)
        t0 = time.perf_counter()
        got = mod.run(quick=args.quick)
        print(f"# {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        rows.extend(got)
    print_table(rows)
    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": platform.platform(),
        "python": sys.version.split()[0],
        "quick": args.quick,
        "rows": [r.as_dict() for r in rows],
    }, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
