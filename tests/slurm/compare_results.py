#!/usr/bin/env python3
"""Compare the results/ trees of two workflow runs (e.g. SLURM vs. local).

    python tests/slurm/compare_results.py DIR_A DIR_B [--rtol 1e-5] [--atol 1e-6]
                                          [--ignore-key NAME ...] [--subdir results]

Both DIR_A/results and DIR_B/results must contain the same files. Every .h5/.hdf5,
.csv/.tsv and .json file is compared by content:

* HDF5: the same groups and datasets; per dataset the same shape, numeric values
  within numpy.allclose(rtol, atol, equal_nan=True), anything else exactly; the same
  attributes (numeric ones with the same tolerance).
* CSV/TSV: the same rows and columns; cells that parse as numbers on both sides are
  compared with the tolerance, all other cells exactly.
* JSON: the same structure; numbers with the tolerance, everything else exactly.

Keys (JSON object keys, HDF5 attribute names, CSV column names) matching an
--ignore-key glob are skipped; the defaults cover wall-clock/host bookkeeping.
Other files only have to exist on both sides. Exit status 0 when everything
matches, 1 on any difference, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import sys
from pathlib import Path

import numpy as np

COMPARED = {".h5": "hdf5", ".hdf5": "hdf5", ".csv": "csv", ".tsv": "csv", ".json": "json"}
DEFAULT_IGNORE = [
    "wall_time*",
    "elapsed*",
    "duration*",
    "timestamp*",
    "created*",
    "hostname",
    "host",
    "slurm_job_id",
    "pid",
]


class Comparator:
    def __init__(self, rtol: float, atol: float, ignore: list[str], max_report: int = 20):
        self.rtol, self.atol, self.ignore = rtol, atol, ignore
        self.max_report = max_report
        self.diffs: list[str] = []

    # ------------------------------------------------------------------ helpers
    def diff(self, where: str, msg: str) -> None:
        self.diffs.append(f"{where}: {msg}")

    def ignored(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(str(key), pat) for pat in self.ignore)

    def close(self, a: float, b: float) -> bool:
        if a == b or (math.isnan(a) and math.isnan(b)):
            return True
        return abs(a - b) <= self.atol + self.rtol * abs(b)  # numpy.allclose semantics

    # ------------------------------------------------------------------ arrays
    def arrays(self, where: str, a, b) -> None:
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            self.diff(where, f"shape {a.shape} != {b.shape}")
            return
        if a.dtype.fields or b.dtype.fields:
            if a.dtype.names != b.dtype.names:
                self.diff(where, f"fields {a.dtype.names} != {b.dtype.names}")
                return
            for name in a.dtype.names:
                self.arrays(f"{where}[{name}]", a[name], b[name])
            return
        numeric_a = np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_
        numeric_b = np.issubdtype(b.dtype, np.number) or b.dtype == np.bool_
        if numeric_a and numeric_b:
            if a.dtype == np.bool_ or b.dtype == np.bool_:
                ok = np.array_equal(a, b)
            else:
                ok = np.allclose(a, b, rtol=self.rtol, atol=self.atol, equal_nan=True)
            if not ok:
                with np.errstate(all="ignore"):
                    err = (
                        np.nanmax(np.abs(a.astype(np.complex128) - b.astype(np.complex128)))
                        if a.size
                        else 0
                    )
                self.diff(
                    where, f"values differ (max abs diff {err:.3g}, dtype {a.dtype}/{b.dtype})"
                )
        elif numeric_a != numeric_b:
            self.diff(where, f"dtype {a.dtype} != {b.dtype}")
        elif a.tolist() != b.tolist():
            self.diff(where, "non-numeric values differ")

    # ------------------------------------------------------------------ HDF5
    def hdf5(self, where: str, pa: Path, pb: Path) -> None:
        import h5py

        def entries(f):
            out = {}
            f.visititems(lambda name, obj: out.__setitem__(name, obj))
            return out

        with h5py.File(pa, "r") as fa, h5py.File(pb, "r") as fb:
            self.attrs(f"{where}:/", fa.attrs, fb.attrs)
            ea, eb = entries(fa), entries(fb)
            for name in sorted(set(ea) ^ set(eb)):
                self.diff(f"{where}:/{name}", "only in " + ("A" if name in ea else "B"))
            for name in sorted(set(ea) & set(eb)):
                oa, ob = ea[name], eb[name]
                loc = f"{where}:/{name}"
                if isinstance(oa, h5py.Dataset) != isinstance(ob, h5py.Dataset):
                    self.diff(loc, "dataset vs group")
                    continue
                self.attrs(loc, oa.attrs, ob.attrs)
                if isinstance(oa, h5py.Dataset):
                    if oa.shape is None or ob.shape is None:  # h5py.Empty
                        if (oa.shape is None) != (ob.shape is None):
                            self.diff(loc, "empty vs non-empty dataset")
                        continue
                    self.arrays(loc, oa[()], ob[()])

    def attrs(self, where: str, aa, ab) -> None:
        ka = {k for k in aa.keys() if not self.ignored(k)}
        kb = {k for k in ab.keys() if not self.ignored(k)}
        for k in sorted(ka ^ kb):
            self.diff(f"{where}@{k}", "attribute only in " + ("A" if k in ka else "B"))
        for k in sorted(ka & kb):
            self.arrays(f"{where}@{k}", aa[k], ab[k])

    # ------------------------------------------------------------------ CSV
    def csv(self, where: str, pa: Path, pb: Path) -> None:
        delim = "\t" if pa.suffix == ".tsv" else ","
        with open(pa, newline="") as fa, open(pb, newline="") as fb:
            ra, rb = list(csv.reader(fa, delimiter=delim)), list(csv.reader(fb, delimiter=delim))
        if len(ra) != len(rb):
            self.diff(where, f"{len(ra)} rows != {len(rb)} rows")
            return
        header = ra[0] if ra else []
        skip = {j for j, name in enumerate(header) if self.ignored(name)}
        for i, (row_a, row_b) in enumerate(zip(ra, rb, strict=True)):
            if len(row_a) != len(row_b):
                self.diff(f"{where}:{i + 1}", f"{len(row_a)} columns != {len(row_b)}")
                continue
            for j, (ca, cb) in enumerate(zip(row_a, row_b, strict=True)):
                if j in skip or ca == cb:
                    continue
                try:
                    fa_, fb_ = float(ca), float(cb)
                except ValueError:
                    self.diff(f"{where}:{i + 1}:{j + 1}", f"{ca!r} != {cb!r}")
                    continue
                if not self.close(fa_, fb_):
                    self.diff(f"{where}:{i + 1}:{j + 1}", f"{ca} != {cb}")

    # ------------------------------------------------------------------ JSON
    def json(self, where: str, pa: Path, pb: Path) -> None:
        with open(pa) as fa, open(pb) as fb:
            self.value(where, json.load(fa), json.load(fb))

    def value(self, where: str, a, b) -> None:
        num = (int, float)
        if isinstance(a, dict) and isinstance(b, dict):
            ka = {k for k in a if not self.ignored(k)}
            kb = {k for k in b if not self.ignored(k)}
            for k in sorted(ka ^ kb):
                self.diff(f"{where}.{k}", "key only in " + ("A" if k in ka else "B"))
            for k in sorted(ka & kb):
                self.value(f"{where}.{k}", a[k], b[k])
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                self.diff(where, f"list length {len(a)} != {len(b)}")
                return
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                self.value(f"{where}[{i}]", x, y)
        elif (
            isinstance(a, num)
            and isinstance(b, num)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
        ):
            if not self.close(float(a), float(b)):
                self.diff(where, f"{a!r} != {b!r}")
        elif a != b or type(a) is not type(b):
            self.diff(where, f"{a!r} != {b!r}")


def list_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != ".snakemake_timestamp"
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("dir_a", type=Path)
    ap.add_argument("dir_b", type=Path)
    ap.add_argument(
        "--subdir", default="results", help="tree to compare inside each dir (default: results)"
    )
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--atol", type=float, default=1e-6)
    ap.add_argument(
        "--ignore-key",
        action="append",
        default=None,
        metavar="GLOB",
        help="key/attribute/column name glob to skip (repeatable; replaces the defaults)",
    )
    ap.add_argument("--max-report", type=int, default=30)
    args = ap.parse_args(argv)

    root_a, root_b = args.dir_a / args.subdir, args.dir_b / args.subdir
    for root in (root_a, root_b):
        if not root.is_dir():
            print(f"compare_results: {root} is not a directory", file=sys.stderr)
            return 2

    cmp = Comparator(
        args.rtol, args.atol, DEFAULT_IGNORE if args.ignore_key is None else args.ignore_key
    )
    files_a, files_b = list_files(root_a), list_files(root_b)
    for rel in sorted(files_a ^ files_b):
        cmp.diff(f"{args.subdir}/{rel}", "only in " + ("A" if rel in files_a else "B"))

    counts = dict.fromkeys(["hdf5", "csv", "json"], 0)
    unchecked = 0
    for rel in sorted(files_a & files_b):
        kind = COMPARED.get(Path(rel).suffix.lower())
        if kind is None:
            unchecked += 1
            continue
        where = f"{args.subdir}/{rel}"
        before = len(cmp.diffs)
        try:
            getattr(cmp, kind)(where, root_a / rel, root_b / rel)
        except Exception as exc:  # unreadable/corrupt file counts as a difference
            cmp.diff(where, f"cannot compare: {type(exc).__name__}: {exc}")
        counts[kind] += 1
        if len(cmp.diffs) > before:
            print(f"DIFF {where} ({len(cmp.diffs) - before} differences)")

    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    print(
        f"compared {summary} file(s); {unchecked} other file(s) checked for presence only "
        f"(rtol={args.rtol}, atol={args.atol})"
    )
    if not any(counts.values()):
        cmp.diff(args.subdir, "no .h5/.csv/.json files to compare")
    if cmp.diffs:
        for line in cmp.diffs[: args.max_report]:
            print("  " + line)
        if len(cmp.diffs) > args.max_report:
            print(f"  ... and {len(cmp.diffs) - args.max_report} more")
        print(f"FAIL: {len(cmp.diffs)} difference(s) between {root_a} and {root_b}")
        return 1
    print(f"OK: {root_a} and {root_b} match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
