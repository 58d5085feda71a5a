"""HDF5 storage with provenance attributes, and atomic writes for every declared output.

Every matrix file carries self-describing attributes (what produced it, row order, settings).
Readers check the attributes they depend on with :func:`require_attrs` / :func:`require_same`
and fail with :class:`FeatureMismatchError` instead of silently mixing incompatible files.

Writes go to a temporary name in the destination directory and are renamed into place only
after success, so a killed job never leaves a file that looks complete. HDF5 files in addition
carry ``complete = True``, written last, which :func:`open_h5` insists on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffattr import __version__
from diffattr.errors import CorruptFileError, DiskFullError, FeatureMismatchError

COMPLETE_ATTR = "complete"
#: Feature provenance that train and query features must share before they can be combined.
FEATURE_CHECK_KEYS: tuple[str, ...] = (
    "proj_kind",
    "proj_seed",
    "proj_dim",
    "output_fn",
    "timesteps",
    "noise_seed",
    "noise",
    "noise_batch_size",
    "noise_shard_rows",
    "model_digest",
)


#: Feature provenance compared wherever either file records it: a structured projection's
#: layout (its split of Z, the energy shares, its version), absent from dense features.
OPTIONAL_FEATURE_CHECK_KEYS: tuple[str, ...] = ("proj_layout_digest",)


def with_optional_keys(keys: Sequence[str], *attrs: Mapping[str, Any]) -> list[str]:
    """``keys`` plus the :data:`OPTIONAL_FEATURE_CHECK_KEYS` that any of ``attrs`` records."""
    extra = [k for k in OPTIONAL_FEATURE_CHECK_KEYS if k not in keys and any(k in a for a in attrs)]
    return [*keys, *extra]


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries a killed earlier attempt at ``path`` left behind (SIGKILL skips cleanup).

    Only one job writes a given output at a time, so any leftover is stale.
    """
    import shutil

    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.tmp*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; move it into place only on success."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write a JSON file atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a ``.npy`` file atomically."""
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(array))


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


def encode_attr(value: Any) -> Any:
    """Turn a provenance value into something HDF5 stores faithfully (dicts/lists become JSON)."""
    if isinstance(value, (dict, list, tuple)):
        return "json:" + json.dumps(value, sort_keys=True, default=_json_default)
    if value is None:
        return "json:null"
    if isinstance(value, Path):
        return str(value)
    return value


def decode_text(value: Any) -> str:
    """A stored string (HDF5 gives ``bytes`` for variable-length strings) as ``str``; unlike
    :func:`decode_attr` it never parses the value (a caption may start with ``json:``)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.startswith("json:"):
        return json.loads(value[5:])
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@contextlib.contextmanager
def h5_writer(path: str | os.PathLike, attrs: Mapping[str, Any]) -> Iterator[h5py.File]:
    """Open an HDF5 file for writing under a temporary name, stamp provenance, rename on success.

    ``complete`` is set as the very last step, so a reader can tell a finished file from one that
    was copied or renamed half-written.
    """
    try:
        with atomic_path(path, suffix=".h5") as tmp:
            with h5py.File(tmp, "w") as handle:
                for key, value in attrs.items():
                    handle.attrs[key] = encode_attr(value)
                handle.attrs.setdefault("diffattr_version", __version__)
                yield handle
                handle.attrs[COMPLETE_ATTR] = True
    except OSError as error:
        if not _disk_full(error):
            raise
        import shutil

        folder = Path(path).parent
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        raise DiskFullError(
            errno.ENOSPC,
            f"{path}: no space left on the device while writing it ({free / 1e6:.1f} MB free in "
            f"{folder}); the partial file was removed, nothing was written to {Path(path).name}. "
            "Free space (or move the results folder to a larger disk) and rerun.",
        ) from error


def _disk_full(error: BaseException) -> bool:
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)


def write_h5(
    path: str | os.PathLike, datasets: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
) -> None:
    """Write whole arrays to an HDF5 file atomically, with provenance attributes."""
    with h5_writer(path, attrs) as handle:
        for name, array in datasets.items():
            handle.create_dataset(name, data=np.asarray(array))


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open a finished diffattr HDF5 file for reading; refuse truncated or unfinished files."""
    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"{path}: file does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise CorruptFileError(
            f"{path}: not a readable HDF5 file ({error}); it is truncated or corrupted. "
            "Delete it and rerun the rule that produces it."
        ) from error
    if not bool(handle.attrs.get(COMPLETE_ATTR, False)):
        handle.close()
        raise CorruptFileError(
            f"{path}: file lacks the `complete` mark, so it was not finished by diffattr. "
            "Delete it and rerun the rule that produces it."
        )
    return handle


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """All provenance attributes of a finished HDF5 file, decoded."""
    with open_h5(path) as handle:
        return {key: decode_attr(value) for key, value in handle.attrs.items()}


def read_h5(path: str | os.PathLike, name: str) -> np.ndarray:
    """Read one whole dataset from a finished HDF5 file."""
    with open_h5(path) as handle:
        if name not in handle:
            raise CorruptFileError(f"{path}: has no dataset {name!r}; it has {sorted(handle)}")
        return handle[name][()]


def require_attrs(attrs: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Fail unless ``attrs`` has every key of ``expected`` with an equal value."""
    problems = []
    for key, want in expected.items():
        have = attrs.get(key, "<missing>")
        if _normalise(have) != _normalise(want):
            problems.append(f"  {key}: expected {want!r}, found {have!r}")
    if problems:
        raise FeatureMismatchError(f"{where}: provenance does not match:\n" + "\n".join(problems))


def require_same(
    first: Mapping[str, Any], second: Mapping[str, Any], keys: list[str], what: str
) -> None:
    """Fail unless two attribute sets agree on ``keys`` (e.g. train and test feature files)."""
    problems = []
    for key in keys:
        a, b = first.get(key, "<missing>"), second.get(key, "<missing>")
        if _normalise(a) != _normalise(b):
            problems.append(f"  {key}: {a!r} vs {b!r}")
    if problems:
        raise FeatureMismatchError(
            f"{what} were computed with different settings and cannot be combined:\n"
            + "\n".join(problems)
        )


def _normalise(value: Any) -> Any:
    value = decode_attr(value)
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def digest_files(paths: list[str | os.PathLike]) -> str:
    """A short sha256 digest of the contents of several files (used as a model fingerprint)."""
    sha = hashlib.sha256()
    for path in sorted(str(p) for p in paths):
        sha.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()[:16]


def digest_directory(path: str | os.PathLike) -> str:
    """Fingerprint of a saved model directory: digest of its weight and config files (PyTorch
    ``.bin`` weights too, as in older published checkpoints such as google/ddpm-cifar10-32)."""
    path = Path(path)
    suffixes = {".safetensors", ".json", ".bin"}
    files = [p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes]
    if not files:
        raise CorruptFileError(
            f"{path}: no model files (.safetensors/.bin/.json) found to fingerprint"
        )
    return digest_files(files)
