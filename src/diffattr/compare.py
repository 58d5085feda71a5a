"""Compare the ``results/`` trees of two workflow runs, value by value.

    python -m diffattr.compare DIR_A DIR_B [--subdir results] [--rtol 1e-5] [--atol 1e-6]
                               [--exact] [--ignore-key GLOB ...] [--ignore-path GLOB ...]

``DIR_A/results`` and ``DIR_B/results`` must hold the same files (``--subdir .`` compares the
two directories themselves). Every ``.h5``/``.hdf5``, ``.csv``/``.tsv`` and ``.json`` file is
compared by content:

* HDF5: the same groups and datasets; per dataset the same shape and numeric values within
  ``numpy.allclose(rtol, atol, equal_nan=True)``, anything else exactly; the same attributes
  (numeric ones with the same tolerance);
* CSV/TSV: the same rows and columns; cells that parse as numbers on both sides are compared with
  the tolerance, all other cells exactly;
* JSON: the same structure; numbers with the tolerance, everything else exactly.

Two uses, two modes:

* a SLURM run against a local run (``tests/slurm/run_slurm_test.sh``): the default tolerance
  (another node may sum in another order); other files only have to exist on both sides;
* a refactor that must change no result (``--exact``): rtol = atol = 0 and, beyond that, equal
  dtypes (float32 is not float64), equal JSON number types (1 is not 1.0), and every other file
  (model weights, figures, pages) equal byte for byte.

Keys (JSON object keys, HDF5 attribute names, CSV column names) matching an ``--ignore-key`` glob
are skipped, and paths matching an ``--ignore-path`` glob are left out; the defaults cover
wall-clock and host bookkeeping (:data:`DEFAULT_IGNORE_KEYS`, :data:`DEFAULT_IGNORE_PATHS`).
Exit status 0 when everything matches, 1 on any difference, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

COMPARED = {".h5": "hdf5", ".hdf5": "hdf5", ".csv": "csv", ".tsv": "csv", ".json": "json"}
DEFAULT_IGNORE_KEYS = (
    "wall_time*",
    "elapsed*",
    "duration*",
    "timestamp*",
    "created*",
    "hostname",
    "host",
    "slurm_job_id",
    "pid",
)
# Clocks, not results: Snakemake's directory markers and the page of job wall times.
DEFAULT_IGNORE_PATHS = ("*.snakemake_timestamp", "*report/runtimes.html")


class Comparator:
    """Collects the differences between two trees; ``exact`` tolerates none (see module doc)."""

    def __init__(
        self,
        rtol: float = 1e-5,
        atol: float = 1e-6,
        ignore: Sequence[str] = DEFAULT_IGNORE_KEYS,
        exact: bool = False,
    ) -> None:
        self.rtol, self.atol = (0.0, 0.0) if exact else (rtol, atol)
        self.ignore, self.exact = tuple(ignore), exact
        self.diffs: list[str] = []

    def diff(self, where: str, msg: str) -> None:
        self.diffs.append(f"{where}: {msg}")

    def ignored(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(str(key), pattern) for pattern in self.ignore)

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
        if self.exact and a.dtype != b.dtype:
            self.diff(where, f"dtype {a.dtype} != {b.dtype}")
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
                same = np.array_equal(a, b)
            else:
                same = np.allclose(a, b, rtol=self.rtol, atol=self.atol, equal_nan=True)
            if not same:
                with np.errstate(all="ignore"):
                    delta = a.astype(np.complex128) - b.astype(np.complex128)
                    err = np.nanmax(np.abs(delta)) if a.size else 0
                count = int(np.sum(~np.isclose(a, b, self.rtol, self.atol, equal_nan=True)))
                self.diff(
                    where,
                    f"values differ (max abs diff {err:.3g}, {count} entries, "
                    f"dtype {a.dtype}/{b.dtype})",
                )
        elif numeric_a != numeric_b:
            self.diff(where, f"dtype {a.dtype} != {b.dtype}")
        elif a.tolist() != b.tolist():
            self.diff(where, "non-numeric values differ")

    # ------------------------------------------------------------------ HDF5
    def hdf5(self, where: str, path_a: Path, path_b: Path) -> None:
        import h5py

        def entries(handle):
            found = {}
            # a callback that returns a value stops visititems, so this one returns None
            handle.visititems(lambda name, item: found.__setitem__(name, item))
            return found

        with h5py.File(path_a, "r") as file_a, h5py.File(path_b, "r") as file_b:
            self.attrs(f"{where}:/", file_a.attrs, file_b.attrs)
            entries_a, entries_b = entries(file_a), entries(file_b)
            for name in sorted(set(entries_a) ^ set(entries_b)):
                self.diff(f"{where}:/{name}", "only in " + ("A" if name in entries_a else "B"))
            for name in sorted(set(entries_a) & set(entries_b)):
                item_a, item_b = entries_a[name], entries_b[name]
                loc = f"{where}:/{name}"
                if isinstance(item_a, h5py.Dataset) != isinstance(item_b, h5py.Dataset):
                    self.diff(loc, "dataset vs group")
                    continue
                self.attrs(loc, item_a.attrs, item_b.attrs)
                if isinstance(item_a, h5py.Dataset):
                    if item_a.shape is None or item_b.shape is None:  # h5py.Empty
                        if (item_a.shape is None) != (item_b.shape is None):
                            self.diff(loc, "empty vs non-empty dataset")
                        continue
                    self.arrays(loc, item_a[()], item_b[()])

    def attrs(self, where: str, attrs_a, attrs_b) -> None:
        keys_a = {k for k in attrs_a.keys() if not self.ignored(k)}
        keys_b = {k for k in attrs_b.keys() if not self.ignored(k)}
        for key in sorted(keys_a ^ keys_b):
            self.diff(f"{where}@{key}", "attribute only in " + ("A" if key in keys_a else "B"))
        for key in sorted(keys_a & keys_b):
            self.arrays(f"{where}@{key}", attrs_a[key], attrs_b[key])

    # ------------------------------------------------------------------ CSV
    def csv(self, where: str, path_a: Path, path_b: Path) -> None:
        delimiter = "\t" if path_a.suffix == ".tsv" else ","
        with open(path_a, newline="") as file_a, open(path_b, newline="") as file_b:
            rows_a = list(csv.reader(file_a, delimiter=delimiter))
            rows_b = list(csv.reader(file_b, delimiter=delimiter))
        if len(rows_a) != len(rows_b):
            self.diff(where, f"{len(rows_a)} rows != {len(rows_b)} rows")
            return
        header = rows_a[0] if rows_a else []
        skip = {j for j, name in enumerate(header) if self.ignored(name)}
        for i, (row_a, row_b) in enumerate(zip(rows_a, rows_b, strict=True)):
            if len(row_a) != len(row_b):
                self.diff(f"{where}:{i + 1}", f"{len(row_a)} columns != {len(row_b)}")
                continue
            for j, (cell_a, cell_b) in enumerate(zip(row_a, row_b, strict=True)):
                if j in skip or cell_a == cell_b:
                    continue
                try:
                    number_a, number_b = float(cell_a), float(cell_b)
                except ValueError:
                    self.diff(f"{where}:{i + 1}:{j + 1}", f"{cell_a!r} != {cell_b!r}")
                    continue
                if self.exact or not self.close(number_a, number_b):
                    self.diff(f"{where}:{i + 1}:{j + 1}", f"{cell_a} != {cell_b}")

    # ------------------------------------------------------------------ JSON
    def json(self, where: str, path_a: Path, path_b: Path) -> None:
        with open(path_a) as file_a, open(path_b) as file_b:
            self.value(where, json.load(file_a), json.load(file_b))

    def value(self, where: str, a, b) -> None:
        number = (int, float)
        if isinstance(a, dict) and isinstance(b, dict):
            keys_a = {k for k in a if not self.ignored(k)}
            keys_b = {k for k in b if not self.ignored(k)}
            for key in sorted(keys_a ^ keys_b):
                self.diff(f"{where}.{key}", "key only in " + ("A" if key in keys_a else "B"))
            for key in sorted(keys_a & keys_b):
                self.value(f"{where}.{key}", a[key], b[key])
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                self.diff(where, f"list length {len(a)} != {len(b)}")
                return
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                self.value(f"{where}[{i}]", x, y)
        elif (
            isinstance(a, number)
            and isinstance(b, number)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
        ):
            if self.exact and type(a) is not type(b):
                self.diff(where, f"{a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})")
            elif not self.close(float(a), float(b)):
                self.diff(where, f"{a!r} != {b!r}")
        elif a != b or type(a) is not type(b):
            self.diff(where, f"{a!r} != {b!r}")

    # ------------------------------------------------------------------ other files
    def raw(self, where: str, path_a: Path, path_b: Path) -> None:
        if path_a.read_bytes() != path_b.read_bytes():
            self.diff(where, "bytes differ")


def list_files(root: Path, ignore_paths: Sequence[str] = DEFAULT_IGNORE_PATHS) -> set[str]:
    names = (path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    return {name for name in names if not any(fnmatch.fnmatch(name, g) for g in ignore_paths)}


def compare_trees(
    root_a: Path,
    root_b: Path,
    comparator: Comparator,
    ignore_paths: Sequence[str] = DEFAULT_IGNORE_PATHS,
    label: str = "",
) -> dict[str, int]:
    """Compare two trees into ``comparator.diffs``; returns the number of files per kind."""
    files_a, files_b = list_files(root_a, ignore_paths), list_files(root_b, ignore_paths)
    prefix = f"{label}/" if label and label != "." else ""
    for rel in sorted(files_a ^ files_b):
        comparator.diff(f"{prefix}{rel}", "only in " + ("A" if rel in files_a else "B"))
    counts = dict.fromkeys(["hdf5", "csv", "json", "other"], 0)
    for rel in sorted(files_a & files_b):
        kind = COMPARED.get(Path(rel).suffix.lower(), "other")
        counts[kind] += 1
        if kind == "other" and not comparator.exact:
            continue  # presence only
        where = f"{prefix}{rel}"
        before = len(comparator.diffs)
        try:
            getattr(comparator, "raw" if kind == "other" else kind)(
                where, root_a / rel, root_b / rel
            )
        except Exception as exc:  # an unreadable or corrupt file counts as a difference
            comparator.diff(where, f"cannot compare: {type(exc).__name__}: {exc}")
        if len(comparator.diffs) > before:
            print(f"DIFF {where} ({len(comparator.diffs) - before} differences)")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffattr.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir_a", type=Path)
    parser.add_argument("dir_b", type=Path)
    parser.add_argument(
        "--subdir", default="results", help="tree to compare inside each dir (default: results)"
    )
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--atol", type=float, default=1e-6)
    parser.add_argument(
        "--exact",
        action="store_true",
        help="no tolerance: equal dtypes and number types, every other file equal byte for byte",
    )
    parser.add_argument(
        "--ignore-key",
        action="append",
        default=None,
        metavar="GLOB",
        help="key/attribute/column name glob to skip (repeatable; replaces the defaults)",
    )
    parser.add_argument(
        "--ignore-path",
        action="append",
        default=None,
        metavar="GLOB",
        help="path glob (relative to the tree) to leave out (repeatable; replaces the defaults)",
    )
    parser.add_argument("--max-report", type=int, default=30)
    args = parser.parse_args(argv)

    root_a, root_b = args.dir_a / args.subdir, args.dir_b / args.subdir
    for root in (root_a, root_b):
        if not root.is_dir():
            print(f"diffattr.compare: {root} is not a directory", file=sys.stderr)
            return 2
    keys = DEFAULT_IGNORE_KEYS if args.ignore_key is None else args.ignore_key
    paths = DEFAULT_IGNORE_PATHS if args.ignore_path is None else args.ignore_path
    comparator = Comparator(args.rtol, args.atol, keys, exact=args.exact)
    counts = compare_trees(root_a, root_b, comparator, paths, label=args.subdir)
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    rule = "exact" if args.exact else f"rtol={args.rtol}, atol={args.atol}; other files: presence"
    print(f"compared {summary} file(s) ({rule}; ignored paths: {', '.join(paths) or 'none'})")
    if not any(counts[kind] for kind in ("hdf5", "csv", "json")):
        comparator.diff(args.subdir, "no .h5/.csv/.json files to compare")
    if comparator.diffs:
        for line in comparator.diffs[: args.max_report]:
            print("  " + line)
        if len(comparator.diffs) > args.max_report:
            print(f"  ... and {len(comparator.diffs) - args.max_report} more")
        print(f"FAIL: {len(comparator.diffs)} difference(s) between {root_a} and {root_b}")
        return 1
    print(f"OK: {root_a} and {root_b} match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
