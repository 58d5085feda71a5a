"""The files between stages: one reader and one writer per kind, over :mod:`diffattr.store`.

:mod:`diffattr.store` is the mechanics (atomic writes, the ``complete`` mark, attribute
encoding, provenance checks); this module knows what each kind of file holds. A reader checks
the layout it depends on and refuses a file that lacks a dataset or an attribute that decides a
result (:class:`~diffattr.errors.CorruptFileError` naming the file and what it lacks): a
missing ``lds_sign`` is an error, never a default.

| file | datasets | key attributes |
|---|---|---|
| ``data/dataset.h5`` | ``train/{images,labels,ids,captions}``, ``val/...`` | source, classes, resolution, sizes, split_seed |
| ``subsets/{pool}/{k}.h5`` | ``positions`` (sorted rows of the train split) | pool, k, alpha, pool_seed, n_train |
| ``samples/gen.h5`` (:class:`Samples`) | ``images``, ``seeds``, ``ids``, ``prompts`` (conditional models) | model_digest, model_kind, steps, eta, gen_seed, sampler, batch_size, guidance_scale (with prompts) |
| ``measured/{pool}/{k}/seed{s}.h5`` (:class:`Measured`) | ``{split}/loss``, ``{split}/loss_by_noise``, ``{split}/ids`` (the measured output, named ``loss`` whatever it is) | model_digest, timesteps, noise_seeds, output_fn (``measure.output``) and output (its description) |
| ``features/{ckpt}/{fn}/{noise}/K{K}/{split}.h5`` (:class:`FeatureFile`) | ``features`` [n, Z], ``ids`` | output_fn, K, timesteps, noise_seed, noise (scheme) and noise_batch_size/noise_shard_rows, proj_kind/seed/dim, model_digest, n_rows |
| ``spectra/{method}/K{K}/{split}.h5`` | ``members/{m}/{eigenvalues,left,right,row_norms}``, ``train_ids``, ``test_ids`` | file_kind = spectra, form, normalize, num_members, lds_sign; method attrs and feature provenance (methods with a ridge λ; see :mod:`diffattr.spectral`) |
| ``scores/{method}/K{K}/{split}.h5`` (:class:`ScoreFile`) | ``scores`` [L, n, N], ``lambdas``, ``train_ids``, ``test_ids`` | method, kind, K (0: no timesteps), lds_sign, params; provenance of the inputs; for ridge-λ methods only the held-out λ (``lambda_grid``, ``lambda_grid_index``, ``heldout_lambda``) (every λ: ``score_grids/``, with ``scoring.write_all_lambdas``) |
| ``features/main/trajectory.h5`` (:class:`Trajectory`) | ``x0_trajectory`` [n, T, C, H, W], ``timesteps`` [T], ``ids``, ``seeds`` | split, model_digest, steps, eta, gen_seed, max_image_difference |
| ``residuals/...h5`` (DAS; :func:`write_residuals`, :func:`read_residual_weights`) | ``residuals`` [n, S], ``weights`` [n], ``ids``, ``timesteps`` | model_digest, noise_seed, noise (scheme), timesteps, S, n_rows |
| ``groundtruth/{pool}.h5`` (:class:`GroundTruth`) | ``masks`` [S, N], ``train_ids``, ``{split}/{measured,measured_by_seed,ids}`` ([S, n], [R, S, n], [n]) | pool, num_subsets, num_seeds, splits |
| ``lds/{method}/K{K}/{split}.json`` | λ curves on both pools, held-out and oracle choice, bootstrap | |
| ``counterfactual/targets.h5`` | ``ids`` (gen ids to explain) | kind, target_seed, num_targets, num_samples, gen_model_digest |
| ``counterfactual/removals/{method}/{target}.h5`` (:class:`Removal`) | ``positions`` (kept rows, a training subset), ``removed`` (ranked), ``scores`` | kind, method, target, top_k, n_train, size; with scores: lambda, lambda_index, K, lds_sign; random: random_seed |
| ``counterfactual/regenerated/{method}/{target}.h5`` (:class:`Regeneration`) | ``image`` [C, H, W] | kind, method, target, seed, prompt, steps, eta, batch_size, model_digest, gen_model_digest |

The ``diffattr attribute`` command line writes ``scores.h5`` in the score layout (with
``train_paths`` / ``query_paths`` and ``lds_sign = -1``: TRAK scores, τ > 0 supports).

Row order of every train-side matrix is the order of the train split in ``dataset.h5``; readers
check ids rather than trusting positions. The scorer refuses train and query features whose
projection, output function, timesteps, noise seed or model digest differ.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffattr.errors import ConfigError, CorruptFileError, DataError, FeatureMismatchError
from diffattr.store import (
    COMPLETE_ATTR,
    decode_attr,
    decode_text,
    h5_writer,
    open_h5,
    require_same,
    with_optional_keys,
    write_h5,
)

# --------------------------------------------------------------------------- helpers


def _attrs(handle: h5py.File) -> dict[str, Any]:
    """Decoded attributes of an open file, without the ``complete`` mark."""
    return {key: decode_attr(value) for key, value in handle.attrs.items() if key != COMPLETE_ATTR}


def _require_datasets(path: Path, handle: h5py.Group, names: Sequence[str], what: str) -> None:
    missing = [name for name in names if name not in handle]
    if missing:
        raise CorruptFileError(
            f"{path}: {what} lacks dataset(s) {missing}; it has {sorted(handle)}"
        )


def required_attr(attrs: Mapping[str, Any], key: str, path: str | os.PathLike, what: str) -> Any:
    """``attrs[key]``; CorruptFileError naming the file and the attribute when it is missing."""
    if key not in attrs or attrs[key] is None:
        hint = (
            "" if what.endswith("to write") else " Delete it and rerun the rule that produces it."
        )
        raise CorruptFileError(
            f"{path}: {what} lacks the attribute {key!r}, which decides the result; it has "
            f"{sorted(attrs)}.{hint}"
        )
    return attrs[key]


def lds_sign(attrs: Mapping[str, Any], path: str | os.PathLike) -> int:
    """A score or spectra file's ``lds_sign`` (−1: τ > 0 supports the query; +1: loss units).

    Required: a file without it (or with another value) is refused, never read as −1."""
    value = required_attr(attrs, "lds_sign", path, "score file")
    if isinstance(value, bool) or value not in (-1, 1):
        raise CorruptFileError(f"{path}: lds_sign = {value!r}; expected -1 or +1")
    return int(value)


def _read(path: Path, reader: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(reader())
    except OSError as error:
        raise CorruptFileError(
            f"{path}: cannot read {what} ({error}); the file is truncated or corrupted. "
            "Delete it and rerun the rule that produces it."
        ) from error


def check_finite(matrix: np.ndarray, name: str, row_offset: int = 0) -> None:
    """DataError naming the rows of ``matrix`` [rows, dim] that hold NaN or inf."""
    finite = np.isfinite(matrix)
    if not finite.all():
        rows = np.nonzero(~finite.reshape(len(matrix), -1).all(axis=1))[0] + row_offset
        raise DataError(
            f"{name} has {int((~finite).sum())} non-finite value(s) (NaN/inf) in rows "
            f"{rows[:10].tolist()}{' ...' if rows.size > 10 else ''}; features must be finite"
        )


# --------------------------------------------------------------------------- ground truth

#: The datasets every ground-truth file has (per split: ``{split}/...``).
GROUNDTRUTH_DATASETS = ("masks", "train_ids")
GROUNDTRUTH_SPLIT_DATASETS = ("measured", "measured_by_seed", "ids")
GROUNDTRUTH_ATTRS = ("pool", "num_subsets", "num_seeds", "splits")


@dataclass(frozen=True)
class GroundTruth:
    """One split of a pool's ground truth: masks [S, N] and the measured outputs [S, n].

    ``measured_by_seed`` [R, S, n] is read only when asked for (``by_seed=True``)."""

    path: Path
    split: str
    masks: np.ndarray
    train_ids: np.ndarray
    measured: np.ndarray
    ids: np.ndarray
    measured_by_seed: np.ndarray | None = None


def read_groundtruth(path: str | os.PathLike, split: str, *, by_seed: bool = False) -> GroundTruth:
    """The ground truth of one split; FeatureMismatchError when the file has no such split."""
    path = Path(path)
    with open_h5(path) as handle:
        if f"{split}/measured" not in handle:
            raise FeatureMismatchError(f"{path}: has no measured outputs for split {split!r}")
        names = [*GROUNDTRUTH_DATASETS, f"{split}/measured", f"{split}/ids"]
        if by_seed:
            names.append(f"{split}/measured_by_seed")
        _require_datasets(path, handle, names, "ground-truth file")
        return GroundTruth(
            path=path,
            split=split,
            masks=handle["masks"][()],
            train_ids=handle["train_ids"][()],
            measured=handle[f"{split}/measured"][()],
            ids=handle[f"{split}/ids"][()],
            measured_by_seed=handle[f"{split}/measured_by_seed"][()] if by_seed else None,
        )


def groundtruth_splits(path: str | os.PathLike) -> list[str]:
    """The query splits a ground-truth file holds measured outputs for."""
    path = Path(path)
    with open_h5(path) as handle:
        return [
            name
            for name in handle
            if isinstance(handle[name], h5py.Group) and "measured" in handle[name]
        ]


def write_groundtruth(
    path: str | os.PathLike,
    masks: np.ndarray,
    train_ids: np.ndarray,
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    attrs: Mapping[str, Any],
) -> None:
    """``splits``: split -> (measured_by_seed [R, S, n], ids [n]); ``measured`` is their mean
    over seeds. ``attrs`` must hold :data:`GROUNDTRUTH_ATTRS`."""
    for key in GROUNDTRUTH_ATTRS:
        required_attr(attrs, key, path, "ground truth to write")
    arrays: dict[str, np.ndarray] = {"masks": masks, "train_ids": train_ids}
    for split, (by_seed, ids) in splits.items():
        arrays[f"{split}/measured_by_seed"] = by_seed
        arrays[f"{split}/measured"] = by_seed.mean(axis=0)
        arrays[f"{split}/ids"] = ids
    write_h5(path, arrays, attrs)


# --------------------------------------------------------------------------- measured outputs

#: Attributes a measured-outputs file must hold; ``output_fn`` decides what the LDS measures.
MEASURED_ATTRS = ("model_digest", "splits", "timesteps", "noise_seeds", "output_fn")


@dataclass(frozen=True)
class Measured:
    """One model's measured outputs on one query split: ``outputs`` [n] (the mean over the
    noise draws), ``ids`` [n], ``output_fn`` (``measure.output``). The datasets are named
    ``loss`` whatever the output; ``output_fn`` says which it is."""

    path: Path
    split: str
    outputs: np.ndarray
    ids: np.ndarray
    output_fn: str
    attrs: dict[str, Any]


def write_measured(
    path: str | os.PathLike,
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    attrs: Mapping[str, Any],
) -> None:
    """``splits``: split -> (outputs by noise draw [R, n], ids [n]); the ``loss`` dataset is
    their mean over the draws. ``attrs`` must hold :data:`MEASURED_ATTRS`."""
    for key in MEASURED_ATTRS:
        required_attr(attrs, key, path, "measured outputs to write")
    arrays: dict[str, np.ndarray] = {}
    for split, (by_noise, ids) in splits.items():
        arrays[f"{split}/loss_by_noise"] = by_noise
        arrays[f"{split}/loss"] = by_noise.mean(axis=0)
        arrays[f"{split}/ids"] = ids
    write_h5(path, arrays, attrs)


def read_measured(path: str | os.PathLike, split: str) -> Measured:
    """One split of a measured-outputs file; FeatureMismatchError when it has no such split,
    CorruptFileError when it does not say which output it measured."""
    path = Path(path)
    with open_h5(path) as handle:
        if f"{split}/loss" not in handle:
            raise FeatureMismatchError(f"{path}: has no measured outputs for split {split!r}")
        _require_datasets(path, handle, [f"{split}/loss", f"{split}/ids"], "measured file")
        attrs = _attrs(handle)
        output_fn = required_attr(attrs, "output_fn", path, "measured file")
        return Measured(
            path=path,
            split=split,
            outputs=handle[f"{split}/loss"][()],
            ids=handle[f"{split}/ids"][()],
            output_fn=str(output_fn),
            attrs=attrs,
        )


# --------------------------------------------------------------------------- features


class FeatureFile:
    """A finished feature (or embedding) file, opened with its layout checked: ``features``
    [n, Z] and ``ids`` [n]. Read it whole (:meth:`read`) or in row blocks (:meth:`rows`);
    close it, or use it as a context manager."""

    def __init__(self, path: str | os.PathLike, role: str = "") -> None:
        self.path = Path(path)
        self.role = role
        self.handle = open_h5(self.path)
        try:
            self._check_layout()
        except BaseException:
            self.handle.close()
            raise
        self.attrs: dict[str, Any] = _attrs(self.handle)

    @property
    def _what(self) -> str:
        return f"{self.role} feature file" if self.role else "feature file"

    def _check_layout(self) -> None:
        missing = [name for name in ("features", "ids") if name not in self.handle]
        if missing:
            raise CorruptFileError(
                f"{self.path}: {self._what} lacks dataset(s) {missing}; "
                f"it has {sorted(self.handle)}. Expected `features` [n, Z] and `ids` [n]."
            )
        features, ids = self.handle["features"], self.handle["ids"]
        if features.ndim != 2 or 0 in features.shape:
            raise CorruptFileError(
                f"{self.path}: `features` must be a non-empty [n, Z] matrix, got {features.shape}"
            )
        if ids.shape != (features.shape[0],):
            raise CorruptFileError(
                f"{self.path}: `ids` has shape {ids.shape} but `features` has "
                f"{features.shape[0]} rows; expected ids of shape ({features.shape[0]},)"
            )
        self.shape: tuple[int, int] = (int(features.shape[0]), int(features.shape[1]))

    def require_keys(self, keys: Sequence[str]) -> None:
        missing = [key for key in keys if key not in self.attrs]
        if missing:
            raise CorruptFileError(
                f"{self.path}: {self._what} lacks provenance attr(s) {missing} needed "
                f"to check it against the other feature file; it has {sorted(self.attrs)}"
            )

    def require_same(self, other: FeatureFile, keys: Sequence[str]) -> None:
        """FeatureMismatchError unless both files agree on ``keys`` and the feature dimension."""
        keys = with_optional_keys(list(keys), self.attrs, other.attrs)
        require_same(self.attrs, other.attrs, keys, f"features {self.path} and {other.path}")
        if self.shape[1] != other.shape[1]:
            raise FeatureMismatchError(
                f"features {self.path} {self.shape} and {other.path} {other.shape} have "
                "different dimensions"
            )

    def split(self) -> Any:
        """``split``, or the per-shard ``shard_splits`` of a merged file, or None."""
        return self.attrs.get("split", self.attrs.get("shard_splits"))

    def ids(self) -> np.ndarray:
        return self._read(lambda: self.handle["ids"][()], "ids").astype(np.int64)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as float64, checked to be finite."""
        block = self._read(lambda: self.handle["features"][start:stop], f"rows {start}:{stop}")
        block = block.astype(np.float64)
        check_finite(block, f"{self.path} ({self.role or 'the'} features)", row_offset=start)
        return block

    def read(self, dtype: Any = np.float64) -> np.ndarray:
        """The whole matrix [n, Z] as ``dtype``, checked to be finite."""
        matrix = self._read(lambda: self.handle["features"][()], "the features").astype(dtype)
        check_finite(matrix, f"{self.path} ({self.role or 'the'} features)")
        return matrix

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, int]]:
        for start in range(0, self.shape[0], chunk_rows):
            yield start, min(start + chunk_rows, self.shape[0])

    def _read(self, reader: Any, what: str) -> np.ndarray:
        return _read(self.path, reader, f"{what} of the {self._what}")

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class FeatureMatrix:
    """A feature file read into memory: features [n, Z], ids [n] int64, attrs."""

    path: Path
    features: np.ndarray
    ids: np.ndarray
    attrs: dict[str, Any]


def read_features(
    path: str | os.PathLike, dtype: Any = np.float64, role: str = ""
) -> FeatureMatrix:
    """The whole feature file (features as ``dtype``, checked finite; ids int64)."""
    with FeatureFile(path, role) as file:
        return FeatureMatrix(file.path, file.read(dtype), file.ids(), file.attrs)


def read_feature_pair(
    train_path: str | os.PathLike, test_path: str | os.PathLike, check_keys: Sequence[str]
) -> tuple[FeatureMatrix, FeatureMatrix]:
    """Train and query features that agree on ``check_keys`` and on the feature dimension."""
    with FeatureFile(train_path, "train") as train, FeatureFile(test_path, "test") as test:
        train.require_same(test, check_keys)
        return (
            FeatureMatrix(train.path, train.read(), train.ids(), train.attrs),
            FeatureMatrix(test.path, test.read(), test.ids(), test.attrs),
        )


def write_features(
    path: str | os.PathLike,
    features: np.ndarray,
    ids: Sequence[int] | np.ndarray,
    attrs: Mapping[str, Any],
) -> None:
    """Write a feature matrix atomically: datasets ``features`` [n, Z] float32, ``ids`` int64;
    attrs ``attrs`` plus ``n_rows`` and ``proj_dim`` (the column count)."""
    features = np.asarray(features, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if features.ndim != 2 or features.shape[0] != len(ids):
        raise ConfigError(
            f"features must be [n, Z] with n = len(ids) = {len(ids)}, got {features.shape}"
        )
    if "proj_dim" in attrs and int(attrs["proj_dim"]) != features.shape[1]:
        raise ConfigError(
            f"attrs say proj_dim={attrs['proj_dim']!r} but features have {features.shape[1]} columns"
        )
    full = dict(attrs)
    full["n_rows"] = int(features.shape[0])
    full["proj_dim"] = int(features.shape[1])
    with h5_writer(path, full) as handle:
        handle.create_dataset("features", data=features)
        handle.create_dataset("ids", data=ids)


# --------------------------------------------------------------------------- scores

SCORE_DATASETS = ("scores", "lambdas", "train_ids", "test_ids")
#: Attributes every score file carries (its writer refuses attrs without them).
SCORE_ATTRS = ("lds_sign",)
# Upper bound on the number of float32 elements in one HDF5 chunk of ``scores`` (16 MiB).
_MAX_CHUNK_ELEMENTS = 1 << 22


@dataclass
class Scores:
    """A score file's contents; ``scores`` is [L, n, N] or, for one λ, [n, N]."""

    scores: np.ndarray
    lambdas: np.ndarray
    train_ids: np.ndarray
    test_ids: np.ndarray
    attrs: dict[str, Any]

    @property
    def lds_sign(self) -> int:
        return int(self.attrs["lds_sign"])


class ScoreFile:
    """A finished score file opened for reading, its layout and ``lds_sign`` checked:
    ``scores`` [L, n, N] float32, ``lambdas`` [L], ``train_ids`` [N], ``test_ids`` [n]."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.handle = open_h5(self.path)
        try:
            self._open()
        except BaseException:
            self.handle.close()
            raise

    def _open(self) -> None:
        path, handle = self.path, self.handle
        _require_datasets(path, handle, SCORE_DATASETS, "score file")
        shape = handle["scores"].shape
        expected = {
            "lambdas": (shape[0],) if len(shape) == 3 else None,
            "test_ids": (shape[1],) if len(shape) == 3 else None,
            "train_ids": (shape[2],) if len(shape) == 3 else None,
        }
        for name, want in expected.items():
            if want is None or handle[name].shape != want:
                raise CorruptFileError(
                    f"{path}: inconsistent score file: `scores` {shape}, `{name}` "
                    f"{handle[name].shape}; expected scores [L, n, N] with lambdas [L], "
                    "test_ids [n], train_ids [N]"
                )
        self.shape: tuple[int, int, int] = tuple(int(v) for v in shape)  # type: ignore[assignment]
        self.attrs: dict[str, Any] = _attrs(handle)
        self.lds_sign = lds_sign(self.attrs, path)
        self.lambdas = _read(path, lambda: handle["lambdas"][()], "lambdas").astype(np.float64)
        self.train_ids = _read(path, lambda: handle["train_ids"][()], "ids").astype(np.int64)
        self.test_ids = _read(path, lambda: handle["test_ids"][()], "ids").astype(np.int64)

    def _index(self, lambda_index: int) -> int:
        if not -self.shape[0] <= lambda_index < self.shape[0]:
            raise ConfigError(
                f"lambda_index {lambda_index} is out of range for {self.shape[0]} λ values in "
                f"{self.path}"
            )
        return int(lambda_index)

    def read(self, lambda_index: int | None = None) -> np.ndarray:
        """[L, n, N] (all λ), or [n, N] at one λ."""
        if lambda_index is None:
            return _read(self.path, lambda: self.handle["scores"][()], "the scores")
        index = self._index(lambda_index)
        return _read(self.path, lambda: self.handle["scores"][index], "the scores")

    def read_rows(self, lambda_index: int, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 [len(rows), N] at one λ, rows in the order given, without the whole file."""
        index, rows = self._index(lambda_index), np.asarray(rows)
        block = _read(
            self.path, lambda: self.handle["scores"][index, np.sort(rows), :], "the scores"
        )
        unsort = np.argsort(np.argsort(rows))
        return np.asarray(block, dtype=np.float32)[unsort]

    def read_block(self, lambda_indices: Sequence[int], start: int, stop: int) -> np.ndarray:
        """float32 [len(lambda_indices), n, stop-start]: training columns [start, stop)."""
        chosen = list(lambda_indices)
        block = _read(self.path, lambda: self.handle["scores"][chosen, :, start:stop], "the scores")
        return np.asarray(block, dtype=np.float32)

    def lambda_index(self, value: float) -> int:
        """The position of λ = ``value`` in ``lambdas`` (ConfigError naming the stored ones)."""
        return lambda_position(self.lambdas, value, str(self.path))

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> ScoreFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lambda_position(lambdas: Sequence[float] | np.ndarray, value: float, where: str) -> int:
    """Position of λ = ``value`` in a score file's ``lambdas``; ConfigError naming the stored ones."""
    grid = np.asarray(lambdas, dtype=np.float64)
    matches = np.flatnonzero(np.isclose(grid, float(value), rtol=1e-12, atol=0.0))
    if matches.size == 0:
        raise ConfigError(
            f"{where}: holds scores at λ {grid.tolist()}, not at λ = {value}. The score file "
            "of a method with a ridge λ holds only its held-out λ; score_grids/ (with "
            "scoring.write_all_lambdas: true) holds every λ"
        )
    return int(matches[0])


def read_scores(path: str | os.PathLike, lambda_index: int | None = None) -> Scores:
    """A score file read into memory (all λ, or one λ by index)."""
    with ScoreFile(path) as file:
        return Scores(
            scores=file.read(lambda_index),
            lambdas=file.lambdas,
            train_ids=file.train_ids,
            test_ids=file.test_ids,
            attrs=file.attrs,
        )


def create_score_dataset(
    handle: h5py.File, n_lambdas: int, n_test: int, n_train: int, chunk_rows: int
) -> h5py.Dataset:
    """The float32 ``scores`` [L, n, N] dataset, chunked per λ and per block of training rows."""
    block_cols = min(n_train, chunk_rows)
    block_rows = max(1, min(n_test, _MAX_CHUNK_ELEMENTS // block_cols))
    return handle.create_dataset(
        "scores",
        shape=(n_lambdas, n_test, n_train),
        dtype=np.float32,
        chunks=(1, block_rows, block_cols),
    )


@contextlib.contextmanager
def score_writer(
    path: str | os.PathLike,
    attrs: Mapping[str, Any],
    lambdas: Sequence[float] | np.ndarray,
    train_ids: np.ndarray,
    test_ids: np.ndarray,
) -> Iterator[h5py.File]:
    """Open a score file for writing: ``lambdas`` (float64), ``train_ids`` and ``test_ids``
    (int64) are written; the caller adds ``scores`` [L, n, N] (whole, or streamed into
    :func:`create_score_dataset`). ``attrs`` must hold :data:`SCORE_ATTRS`; the file is renamed
    into place only when the block succeeds and ``scores`` has the shape of the ids."""
    lds_sign(attrs, path)
    grid = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    with h5_writer(path, attrs) as handle:
        handle.create_dataset("lambdas", data=grid)
        handle.create_dataset("train_ids", data=np.asarray(train_ids, dtype=np.int64))
        handle.create_dataset("test_ids", data=np.asarray(test_ids, dtype=np.int64))
        yield handle
        expected = (grid.size, len(test_ids), len(train_ids))
        if "scores" not in handle or handle["scores"].shape != expected:
            found = handle["scores"].shape if "scores" in handle else None
            raise FeatureMismatchError(
                f"{path}: scores {found} do not match [L, n, N] = {expected}"
            )


def write_scores(
    path: str | os.PathLike,
    contents: Scores,
    *,
    per_lambda_chunks: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """A score file from an in-memory grid: ``contents.scores`` float32 [L, n, N] (checked
    finite) with its ``lambdas``, ``train_ids``, ``test_ids`` and ``attrs``.

    ``per_lambda_chunks``: HDF5 chunks of one λ each (else contiguous); ``extra``: more
    datasets, name -> array or (array, dtype)."""
    grid = np.asarray(contents.scores, dtype=np.float32)
    lambdas, train_ids, test_ids = contents.lambdas, contents.train_ids, contents.test_ids
    attrs = contents.attrs
    expected = (np.asarray(lambdas).size, len(test_ids), len(train_ids))
    if grid.shape != expected:
        raise FeatureMismatchError(
            f"{path}: scores {grid.shape} do not match [L, n, N] = {expected}"
        )
    if not np.isfinite(grid).all():
        raise FeatureMismatchError(f"{path}: {int((~np.isfinite(grid)).sum())} scores are NaN/inf")
    with score_writer(path, attrs, lambdas, train_ids, test_ids) as handle:
        chunks = (1, *grid.shape[1:]) if per_lambda_chunks else None
        handle.create_dataset("scores", data=grid, chunks=chunks)
        for name, value in (extra or {}).items():
            data, dtype = value if isinstance(value, tuple) else (value, None)
            handle.create_dataset(name, data=data, dtype=dtype)


# --------------------------------------------------------------------------- samples

#: Attributes the generation record of a samples file must hold.
GENERATION_ATTRS = ("model_digest", "steps", "eta", "gen_seed", "batch_size")


@dataclass(frozen=True)
class Generation:
    """How a samples file was generated. ``guidance_scale`` is None for an unconditional model
    (no prompts, no guidance); ``batch_size`` is the one the samples were generated in (on CPU
    the batch layout fixes the last bits)."""

    model_digest: str
    steps: int
    eta: float
    gen_seed: int
    batch_size: int
    guidance_scale: float | None


@dataclass(frozen=True)
class Samples:
    """Generated samples: images [n, C, H, W] (None when not read), seeds, ids, prompts (None
    for an unconditional model), attrs. :meth:`generation` checks the generation record."""

    path: Path
    ids: np.ndarray
    seeds: np.ndarray | None
    images: np.ndarray | None
    prompts: list[str] | None
    attrs: dict[str, Any]

    def generation(self) -> Generation:
        """The generation record; CorruptFileError naming the file and the missing attribute."""
        attrs, path = self.attrs, self.path
        values = {key: required_attr(attrs, key, path, "samples file") for key in GENERATION_ATTRS}
        if self.seeds is None:
            raise CorruptFileError(f"{path}: samples file lacks dataset `seeds`")
        guidance = None
        if self.prompts is not None:
            guidance = float(required_attr(attrs, "guidance_scale", path, "samples file"))
        return Generation(
            model_digest=str(values["model_digest"]),
            steps=int(values["steps"]),
            eta=float(values["eta"]),
            gen_seed=int(values["gen_seed"]),
            batch_size=int(values["batch_size"]),
            guidance_scale=guidance,
        )

    def position(self, sample_id: int) -> int:
        """The row of gen sample ``sample_id``; FeatureMismatchError when it is not there."""
        rows = np.flatnonzero(self.ids == sample_id)
        if rows.size != 1:
            raise FeatureMismatchError(f"{self.path}: gen sample {sample_id} is not a sample row")
        return int(rows[0])


def write_samples(
    path: str | os.PathLike,
    images: np.ndarray,
    seeds: np.ndarray,
    prompts: Sequence[str] | None,
    attrs: Mapping[str, Any],
) -> None:
    """A samples file: ``images`` [n, C, H, W], their ``seeds``, ids 0..n-1 and, for a
    conditional model, one prompt per sample. ``attrs`` must hold :data:`GENERATION_ATTRS` (and
    ``guidance_scale`` with prompts)."""
    for key in GENERATION_ATTRS:
        required_attr(attrs, key, path, "samples to write")
    arrays: dict[str, np.ndarray] = {
        "images": images,
        "seeds": seeds,
        "ids": np.arange(len(images), dtype=np.int64),
    }
    if prompts is not None:
        required_attr(attrs, "guidance_scale", path, "samples with prompts to write")
        arrays["prompts"] = np.array(prompts, dtype=object)
    write_h5(path, arrays, attrs)


def read_samples(path: str | os.PathLike, *, images: bool = True) -> Samples:
    """A samples file (``images=False``: everything but the images)."""
    path = Path(path)
    with open_h5(path) as handle:
        _require_datasets(path, handle, ["ids", *(["images"] if images else [])], "samples file")
        return Samples(
            path=path,
            ids=handle["ids"][()],
            seeds=handle["seeds"][()] if "seeds" in handle else None,
            images=handle["images"][()] if images else None,
            prompts=[decode_text(p) for p in handle["prompts"][()]]
            if "prompts" in handle
            else None,
            attrs=_attrs(handle),
        )


def read_sample_image(path: str | os.PathLike, sample_id: int) -> np.ndarray:
    """The image [C, H, W] of gen sample ``sample_id`` (one row read)."""
    path = Path(path)
    with open_h5(path) as handle:
        _require_datasets(path, handle, ["ids", "images"], "samples file")
        rows = np.flatnonzero(handle["ids"][()] == sample_id)
        if rows.size != 1:
            raise FeatureMismatchError(f"{path}: gen sample {sample_id} is not a sample row")
        return handle["images"][int(rows[0])]


# --------------------------------------------------------------------------- trajectories

#: Attributes of a recorded sampling trajectory (Journey-TRAK).
TRAJECTORY_ATTRS = ("split", "model_digest", "steps", "eta", "gen_seed", "max_image_difference")


@dataclass(frozen=True)
class Trajectory:
    """The DDIM trajectory of the generated samples: ``x0`` [n, T, C, H, W] (the predicted x0
    at each of the T sampling ``timesteps``), the samples' ``ids`` and ``seeds``, attrs."""

    path: Path
    x0: np.ndarray
    timesteps: np.ndarray
    ids: np.ndarray
    seeds: np.ndarray
    attrs: dict[str, Any]


def write_trajectory(
    path: str | os.PathLike,
    x0: np.ndarray,
    timesteps: np.ndarray,
    ids: np.ndarray,
    seeds: np.ndarray,
    attrs: Mapping[str, Any],
) -> None:
    """``features/main/trajectory.h5``; ``attrs`` must hold :data:`TRAJECTORY_ATTRS`."""
    for key in TRAJECTORY_ATTRS:
        required_attr(attrs, key, path, "trajectory to write")
    arrays = {"x0_trajectory": x0, "timesteps": timesteps, "ids": ids, "seeds": seeds}
    write_h5(path, arrays, attrs)


def read_trajectory(path: str | os.PathLike) -> Trajectory:
    path = Path(path)
    with open_h5(path) as handle:
        _require_datasets(path, handle, ["x0_trajectory", "timesteps", "ids"], "trajectory file")
        return Trajectory(
            path=path,
            x0=handle["x0_trajectory"][()],
            timesteps=handle["timesteps"][()].astype(np.int64),
            ids=handle["ids"][()].astype(np.int64),
            seeds=handle["seeds"][()] if "seeds" in handle else np.empty(0, np.int64),
            attrs=_attrs(handle),
        )


# --------------------------------------------------------------------------- DAS residuals


def write_residuals(
    path: str | os.PathLike,
    residuals: np.ndarray,
    weights: np.ndarray,
    ids: np.ndarray,
    timesteps: Sequence[int],
    attrs: Mapping[str, Any],
) -> None:
    """``residuals/{S}/{noise}.h5``: DAS's residual profiles [n, S] (float32), the column
    weights [n] they give, the train ids [n] and the S timesteps."""
    write_h5(
        path,
        {
            "residuals": residuals.astype(np.float32),
            "weights": weights,
            "ids": np.asarray(ids, dtype=np.int64),
            "timesteps": np.asarray(timesteps, dtype=np.int64),
        },
        attrs,
    )


def read_residual_weights(
    path: str | os.PathLike, train_ids: np.ndarray, expected: dict[str, Any]
) -> np.ndarray:
    """The DAS weights of ``path`` in the order of ``train_ids``, after checking ``expected``
    provenance (e.g. the model digest and noise seed of the features)."""
    with open_h5(path) as handle:
        if "weights" not in handle or "ids" not in handle:
            raise CorruptFileError(f"{path}: lacks `weights`/`ids`; it has {sorted(handle)}")
        weights, ids = handle["weights"][()], handle["ids"][()].astype(np.int64)
        attrs = _attrs(handle)
    require_same(attrs, expected, sorted(expected), f"residuals {path} and the features")
    position = {int(i): r for r, i in enumerate(ids)}
    missing = [int(i) for i in train_ids if int(i) not in position]
    if missing:
        raise FeatureMismatchError(f"{path}: no residuals for training ids {missing[:10]}")
    return np.asarray([weights[position[int(i)]] for i in train_ids], dtype=np.float64)


# --------------------------------------------------------------------------- counterfactual

REMOVAL_ATTRS = ("kind", "method", "target", "top_k", "n_train", "size")
REGENERATION_ATTRS = (
    "kind",
    "method",
    "target",
    "seed",
    "prompt",
    "steps",
    "eta",
    "batch_size",
    "model_digest",
    "gen_model_digest",
)


TARGETS_ATTRS = ("kind", "target_seed", "num_targets", "num_samples", "gen_model_digest")


def write_targets(path: str | os.PathLike, ids: Sequence[int], attrs: Mapping[str, Any]) -> None:
    """``counterfactual/targets.h5``: the gen ids to explain, in the order they were drawn."""
    for key in TARGETS_ATTRS:
        required_attr(attrs, key, path, "counterfactual targets to write")
    write_h5(path, {"ids": np.asarray(ids, dtype=np.int64)}, attrs)


def read_targets(path: str | os.PathLike) -> list[int]:
    """The gen ids a counterfactual targets file lists, in order."""
    path = Path(path)
    with open_h5(path) as handle:
        _require_datasets(path, handle, ["ids"], "counterfactual targets file")
        return [int(t) for t in handle["ids"][()]]


@dataclass(frozen=True)
class Removal:
    """One (method, target)'s removal set: ``positions`` the kept training rows (sorted; the
    file is a training subset), ``removed`` the removed rows in rank order, ``scores`` the
    ranking scores (larger: more support for the target)."""

    path: Path
    method: str
    target: int
    positions: np.ndarray
    removed: np.ndarray
    scores: np.ndarray
    attrs: dict[str, Any]


def write_removal(
    path: str | os.PathLike,
    positions: np.ndarray,
    removed: np.ndarray,
    scores: np.ndarray,
    attrs: Mapping[str, Any],
) -> None:
    for key in REMOVAL_ATTRS:
        required_attr(attrs, key, path, "removal to write")
    write_h5(
        path,
        {"positions": positions, "removed": removed, "scores": np.asarray(scores, np.float32)},
        attrs,
    )


def read_removal(path: str | os.PathLike) -> Removal:
    path = Path(path)
    with open_h5(path) as handle:
        _require_datasets(path, handle, ["positions", "removed", "scores"], "removal file")
        attrs = _attrs(handle)
        return Removal(
            path=path,
            method=required_attr(attrs, "method", path, "removal file"),
            target=int(required_attr(attrs, "target", path, "removal file")),
            positions=handle["positions"][()],
            removed=handle["removed"][()],
            scores=handle["scores"][()],
            attrs=attrs,
        )


@dataclass(frozen=True)
class Regeneration:
    """One (method, target)'s regenerated image [C, H, W] and how it was made."""

    path: Path
    method: str
    target: int
    image: np.ndarray
    attrs: dict[str, Any]


def write_regeneration(
    path: str | os.PathLike, image: np.ndarray, attrs: Mapping[str, Any]
) -> None:
    for key in REGENERATION_ATTRS:
        if key not in attrs:  # prompt and gen_model_digest may be None, but must be stated
            required_attr(attrs, key, path, "regeneration to write")
    write_h5(path, {"image": image}, attrs)


def read_regeneration(path: str | os.PathLike) -> Regeneration:
    path = Path(path)
    with open_h5(path) as handle:
        _require_datasets(path, handle, ["image"], "regeneration file")
        attrs = _attrs(handle)
        return Regeneration(
            path=path,
            method=required_attr(attrs, "method", path, "regeneration file"),
            target=int(required_attr(attrs, "target", path, "regeneration file")),
            image=handle["image"][()],
            attrs=attrs,
        )
