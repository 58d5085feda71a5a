"""Compare two ``results/`` trees value by value: are two runs bit-identical?

``python -m diffattr.compare RUN_A RUN_B`` walks both trees and compares

* every HDF5 file: the same dataset names, and for each the dtype, shape and values (NaN equal to
  NaN, nothing else tolerated), and the same attributes with equal values;
* every JSON file: the parsed values, exactly (floats compared as written);
* every CSV file: the rows, cell by cell as text;
* every other file (model weights, PNG figures, HTML pages): the bytes.

Files that only one tree has are differences too. Paths matching ``--ignore`` globs (default:
Snakemake's ``.snakemake_timestamp`` markers and the wall-time pages, whose values are clocks, not
results) are left out and listed. Exit status 0 means identical, 1 lists the differences.
A refactor that claims "no result may change" is checked with it (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

# Clocks, not results: wall times of jobs, and Snakemake's directory markers.
DEFAULT_IGNORE = ("*/.snakemake_timestamp", ".snakemake_timestamp", "*runtimes*")


def _files(root: Path, ignore: Sequence[str]) -> tuple[set[str], set[str]]:
    kept, ignored = set(), set()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        name = path.relative_to(root).as_posix()
        (ignored if any(fnmatch.fnmatch(name, g) for g in ignore) else kept).add(name)
    return kept, ignored


def _attr_value(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _h5_differences(a: Path, b: Path) -> Iterator[str]:
    import h5py

    def items(handle):
        found = {"/": handle}

        def visit(name, item):  # visititems stops at the first callback that returns a value
            found[name] = item

        handle.visititems(visit)
        return found

    with h5py.File(a, "r") as left, h5py.File(b, "r") as right:
        left_items, right_items = items(left), items(right)
        for name in sorted(set(left_items) ^ set(right_items)):
            yield f"{name}: only in {'A' if name in left_items else 'B'}"
        for name in sorted(set(left_items) & set(right_items)):
            x, y = left_items[name], right_items[name]
            if hasattr(x, "shape") != hasattr(y, "shape"):
                yield f"{name}: a dataset in one file, a group in the other"
                continue
            if hasattr(x, "shape"):
                vx, vy = x[()], y[()]
                if isinstance(vx, np.ndarray) or isinstance(vy, np.ndarray):
                    same = _same_array(np.asarray(vx), np.asarray(vy))
                else:
                    same = vx == vy or (vx != vx and vy != vy)
                if not same:
                    yield f"{name}: values differ ({_describe(vx, vy)})"
            ax = {k: _attr_value(v) for k, v in x.attrs.items()}
            ay = {k: _attr_value(v) for k, v in y.attrs.items()}
            for key in sorted(set(ax) | set(ay)):
                if not _json_equal(ax.get(key, _MISSING), ay.get(key, _MISSING)):
                    yield f"{name}@{key}: {ax.get(key, '<missing>')!r} != {ay.get(key, '<missing>')!r}"


def _describe(x, y) -> str:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.dtype != y.dtype:
        return f"{x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}"
    if x.dtype.kind in "fiu":
        diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
        return f"max |A - B| = {np.nanmax(diff):.3g}, {int(np.sum(diff > 0))} entries differ"
    return f"{int(np.sum(x != y))} entries differ"


_MISSING = object()


def _json_equal(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float) and x != x and y != y:
        return True  # NaN written as NaN in both
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_json_equal(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_json_equal(a, b) for a, b in zip(x, y, strict=True))
    return type(x) is type(y) and x == y


def _json_differences(a: Path, b: Path, prefix: str = "") -> Iterator[str]:
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    yield from _value_differences(x, y, prefix or "$")


def _value_differences(x, y, where: str) -> Iterator[str]:
    if isinstance(x, dict) and isinstance(y, dict):
        for key in sorted(set(x) ^ set(y)):
            yield f"{where}.{key}: only in {'A' if key in x else 'B'}"
        for key in sorted(set(x) & set(y)):
            yield from _value_differences(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for index, (a, b) in enumerate(zip(x, y, strict=True)):
            yield from _value_differences(a, b, f"{where}[{index}]")
    elif not _json_equal(x, y):
        yield f"{where}: {_short(x)} != {_short(y)}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _csv_differences(a: Path, b: Path) -> Iterator[str]:
    with open(a, newline="") as left, open(b, newline="") as right:
        x, y = list(csv.reader(left)), list(csv.reader(right))
    if len(x) != len(y):
        yield f"{len(x)} rows != {len(y)} rows"
    for row, (rx, ry) in enumerate(zip(x, y, strict=False)):
        if rx != ry:
            yield f"row {row}: {_short(rx)} != {_short(ry)}"


def file_differences(a: Path, b: Path) -> list[str]:
    """Differences between two files of the same kind (by suffix), as readable lines."""
    suffix = a.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return list(_h5_differences(a, b))
    if suffix == ".json":
        return list(_json_differences(a, b))
    if suffix == ".csv":
        return list(_csv_differences(a, b))
    return [] if a.read_bytes() == b.read_bytes() else ["bytes differ"]


def compare_trees(
    a: str | Path, b: str | Path, ignore: Sequence[str] = DEFAULT_IGNORE
) -> tuple[dict[str, list[str]], int, set[str]]:
    """(differences by file, number of files compared, ignored paths) of two result trees."""
    a, b = Path(a), Path(b)
    for root in (a, b):
        if not root.is_dir():
            raise FileNotFoundError(f"not a results directory: {root}")
    files_a, ignored_a = _files(a, ignore)
    files_b, ignored_b = _files(b, ignore)
    differences: dict[str, list[str]] = {}
    for name in sorted(files_a ^ files_b):
        differences[name] = [f"only in {'A' if name in files_a else 'B'}"]
    common = sorted(files_a & files_b)
    for name in common:
        found = file_differences(a / name, b / name)
        if found:
            differences[name] = found
    return differences, len(common), ignored_a | ignored_b


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffattr.compare",
        description="Are two results/ trees identical, value by value?",
    )
    parser.add_argument("a", type=Path, help="first results directory")
    parser.add_argument("b", type=Path, help="second results directory")
    parser.add_argument(
        "--ignore",
        action="append",
        default=None,
        metavar="GLOB",
        help=f"leave out paths matching GLOB (default: {', '.join(DEFAULT_IGNORE)})",
    )
    args = parser.parse_args(argv)
    ignore = DEFAULT_IGNORE if args.ignore is None else tuple(args.ignore)
    differences, compared, ignored = compare_trees(args.a, args.b, ignore)
    for name, lines in differences.items():
        print(name)
        for line in lines[:20]:
            print(f"    {line}")
        if len(lines) > 20:
            print(f"    ... {len(lines) - 20} more")
    verdict = "identical" if not differences else f"{len(differences)} files differ"
    print(f"{compared} files compared, {len(ignored)} ignored ({', '.join(ignore)}): {verdict}")
    return 0 if not differences else 1


if __name__ == "__main__":
    sys.exit(main())
