"""The λ grid without a score matrix per λ: one factorisation, subset predictions for every λ.

The LDS needs only the subset predictions M·τ_λᵀ (masks M [S, N]), not τ_λ [n, N] itself. With
the factors of :func:`diffattr.scoring.factorize`, τ_λ = L diag(1/(s+λ)) Rᵀ (primal: L = ΨV,
R = ΦV; dual: L = ΨΦᵀU, R = U), so

    M·τ_λᵀ = (M R) diag(1/(s+λ)) Lᵀ           [S, n]

costs one [S, N] × [N, r] product for the whole grid and an S × r × n product per λ, instead of
n × r × N per λ for the score matrix (at CIFAR-2: 64 × 5000 × 1000 against 1000 × 5000 × 5000).
Column normalisations divide column i of τ_λ by c_i: ``renormalized`` (c_i = ‖Φ_i‖) scales the
masks once, M diag(1/c); ``relative`` (c_i(λ) = ‖(Φ G_λ⁻¹)_i‖, see :mod:`diffattr.scoring`)
depends on λ, so each λ costs one [S, N] × [N, r] product (still S/n of a score matrix).
An ensemble (``ensemble_trak``) stores one factorisation per member; its τ_λ and its predictions
are the means over the members.

**Spectra file** (``spectra/{method}/K{K}/{split}.h5``, written by the scoring job of every
method with a ridge λ; it does not depend on the λ grid):

* ``members/{m}/eigenvalues`` float64 [r]; ``members/{m}/left`` float64 [n, r];
  ``members/{m}/right`` float32 [N, r] (HDF5-chunked by row blocks); ``members/{m}/row_norms``
  float64 [N] (‖Φ_i‖);
* ``train_ids`` int64 [N], ``test_ids`` int64 [n];
* attrs: the method's provenance (``method``, ``kind``, ``K``, ``split``, ``params``,
  ``lds_sign``), the feature provenance of :func:`diffattr.scoring.write_trak_scores`,
  ``file_kind = "spectra"``, ``form``, ``normalize``, ``num_members`` and ``complete``.

``right`` is float32 (it is the [N, Z] matrix at CIFAR-10, 6.5 GB in float32): predictions
and scores computed from it carry its rounding, ≈ 1e-7 of their scale, as the float32 score
files always did. Products with it are float64.

:func:`open_scores` gives the same interface (:class:`GridScores`) for a spectra file and a
plain score file (methods without λ), so ``lds_job``, the counterfactual λ choice and the
score selection do not care which one a method produced. :func:`write_selected_scores` writes
the score file — the layout of :mod:`diffattr.scoring` — at the λ values that are used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffattr.errors import ConfigError, CorruptFileError, FeatureMismatchError
from diffattr.scoring import (
    _check_matrix,
    _check_normalize,
    _check_pair,
    _inverse_spectrum,
    _progress_ticks,
    choose_form,
    create_score_dataset,
    factorize,
    feature_pair,
    stream_factors,
    validate_lambdas,
)
from diffattr.store import COMPLETE_ATTR, decode_attr, h5_writer, open_h5

FILE_KIND = "spectra"
#: Training rows of ``right`` read (and written) at a time.
ROW_BLOCK = 4096


@dataclass
class Member:
    """One factorisation: τ_λ = left diag(1/(s+λ)) rightᵀ, columns divided per normalisation."""

    eigenvalues: np.ndarray  # [r]
    left: np.ndarray  # [n, r]
    right: np.ndarray  # [N, r]
    row_norms: np.ndarray  # [N]


# --------------------------------------------------------------------------- writing


def member_from_features(train: np.ndarray, test: np.ndarray, form: str = "auto") -> Member:
    """The factorisation of in-memory features Φ [N, Z], Ψ [n, Z] (float64)."""
    phi = _check_matrix(train, "train_features").astype(np.float64, copy=False)
    psi = _check_matrix(test, "test_features").astype(np.float64, copy=False)
    _check_pair(phi.shape, psi.shape)
    chosen = choose_form(phi.shape[0], phi.shape[1], form)
    eigenvalues, left, right = factorize(phi, psi, chosen)
    return Member(eigenvalues, left, right, np.linalg.norm(phi, axis=1))


def write_spectra(
    train_path: str | os.PathLike,
    test_path: str | os.PathLike,
    out_path: str | os.PathLike,
    attrs: Mapping[str, Any],
    chunk_rows: int = 4096,
    *,
    check_keys: Sequence[str] | None = None,
    score_kind: str = "trak",
    form: str = "auto",
    normalize: str = "none",
    progress: Any = None,
) -> Path:
    """Stream the factorisation of two feature files into a spectra file (one member).

    Same checks, memory and passes over the training file as
    :func:`diffattr.scoring.write_trak_scores`, without any per-λ work.
    """
    with feature_pair(
        train_path, test_path, out_path, attrs, chunk_rows, check_keys, score_kind, form, normalize
    ) as (train, test, out_attrs):
        chunk_rows = int(chunk_rows)
        out_attrs.update(file_kind=FILE_KIND, num_members=1)
        with h5_writer(out_path, out_attrs) as handle:
            handle.create_dataset("train_ids", data=train.ids())
            handle.create_dataset("test_ids", data=test.ids())
            tick, close = _progress_ticks(progress, 2 * len(list(train.chunks(chunk_rows))))
            eigenvalues, left, blocks = stream_factors(
                train, test, chunk_rows, out_attrs["form"], tick
            )
            group = handle.create_group("members/0")
            group.create_dataset("eigenvalues", data=eigenvalues)
            group.create_dataset("left", data=left)
            right = _create_right(group, train.shape[0], left.shape[1])
            norms = np.empty(train.shape[0], dtype=np.float64)
            for start, stop, block, row_norms in blocks:
                right[start:stop] = block.astype(np.float32)
                norms[start:stop] = row_norms
                tick()
            group.create_dataset("row_norms", data=norms)
            close()
    return Path(out_path)


def write_spectra_members(
    out_path: str | os.PathLike,
    members: Sequence[Member],
    train_ids: np.ndarray,
    test_ids: np.ndarray,
    attrs: Mapping[str, Any],
    *,
    form: str,
    normalize: str = "none",
) -> Path:
    """Write factorisations computed in memory (e.g. an ensemble's members) as a spectra file."""
    _check_normalize(normalize)
    if not members:
        raise ConfigError("a spectra file needs at least one member factorisation")
    n_train, n_test = len(train_ids), len(test_ids)
    for index, member in enumerate(members):
        if member.left.shape[0] != n_test or member.right.shape[0] != n_train:
            raise FeatureMismatchError(
                f"member {index}: left {member.left.shape} / right {member.right.shape} do not "
                f"match {n_test} queries and {n_train} training rows"
            )
    out_attrs = {
        **attrs,
        "file_kind": FILE_KIND,
        "form": form,
        "normalize": normalize,
        "num_members": len(members),
        "n_train": n_train,
        "n_test": n_test,
    }
    with h5_writer(out_path, out_attrs) as handle:
        handle.create_dataset("train_ids", data=np.asarray(train_ids, dtype=np.int64))
        handle.create_dataset("test_ids", data=np.asarray(test_ids, dtype=np.int64))
        for index, member in enumerate(members):
            group = handle.create_group(f"members/{index}")
            group.create_dataset("eigenvalues", data=member.eigenvalues)
            group.create_dataset("left", data=member.left)
            right = _create_right(group, n_train, member.right.shape[1])
            right[...] = member.right.astype(np.float32)
            group.create_dataset("row_norms", data=member.row_norms)
    return Path(out_path)


def _create_right(group: h5py.Group, n_train: int, rank: int) -> h5py.Dataset:
    rows = max(1, min(n_train, ROW_BLOCK, (1 << 22) // max(rank, 1)))
    return group.create_dataset(
        "right", shape=(n_train, rank), dtype=np.float32, chunks=(rows, rank)
    )


# --------------------------------------------------------------------------- reading


class GridScores:
    """Scores of one (method, K, split) over a λ grid: predictions for any masks, score rows.

    Use :func:`open_scores`; close with :meth:`close` or as a context manager.
    """

    lambdas: np.ndarray
    train_ids: np.ndarray
    test_ids: np.ndarray
    attrs: dict[str, Any]
    path: Path

    @property
    def sign(self) -> int:
        """``lds_sign``: −1 when τ > 0 means support, +1 for scores in loss units."""
        return int(self.attrs.get("lds_sign", -1))

    def predictions(self, masks: np.ndarray) -> np.ndarray:
        """``sign · M τ_λᵀ`` for every λ: float64 [L, S, n] (the LDS predictions)."""
        raise NotImplementedError

    def score_blocks(self, indices: Sequence[int]) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, τ[indices][:, :, start:stop] as float32 [L', n, stop-start])."""
        raise NotImplementedError

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> GridScores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _masks(self, masks: Any) -> np.ndarray:
        matrix = np.asarray(masks)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.train_ids):
            raise FeatureMismatchError(
                f"masks {matrix.shape} [S, N] do not match the {len(self.train_ids)} training "
                f"rows of {self.path}"
            )
        return matrix.astype(np.float64)


class _ScoreFileGrid(GridScores):
    """A plain score file (``scores`` [L, n, N]): predictions from the stored matrices."""

    def __init__(self, path: Path, handle: h5py.File, attrs: dict[str, Any]) -> None:
        self.path, self.handle, self.attrs = path, handle, attrs
        missing = [n for n in ("scores", "lambdas", "train_ids", "test_ids") if n not in handle]
        if missing:
            raise CorruptFileError(f"{path}: score file lacks {missing}; it has {sorted(handle)}")
        self.lambdas = handle["lambdas"][()].astype(np.float64)
        self.train_ids = handle["train_ids"][()].astype(np.int64)
        self.test_ids = handle["test_ids"][()].astype(np.int64)
        shape = handle["scores"].shape
        if shape != (len(self.lambdas), len(self.test_ids), len(self.train_ids)):
            raise CorruptFileError(
                f"{path}: `scores` {shape} does not match lambdas {self.lambdas.shape}, test_ids "
                f"{self.test_ids.shape} and train_ids {self.train_ids.shape}"
            )

    def predictions(self, masks: np.ndarray) -> np.ndarray:
        mask_matrix = self._masks(masks)
        out = np.empty((len(self.lambdas), mask_matrix.shape[0], len(self.test_ids)))
        for index in range(len(self.lambdas)):
            matrix = _read(self.path, lambda i=index: self.handle["scores"][i]).astype(np.float64)
            if not np.isfinite(matrix).all():
                raise CorruptFileError(f"{self.path}: scores at λ index {index} hold NaN/inf")
            out[index] = self.sign * (mask_matrix @ matrix.T)
        return out

    def score_blocks(self, indices: Sequence[int]) -> Iterator[tuple[int, int, np.ndarray]]:
        n_train = len(self.train_ids)
        for start in range(0, n_train, ROW_BLOCK):
            stop = min(start + ROW_BLOCK, n_train)
            block = _read(
                self.path, lambda s=start, e=stop: self.handle["scores"][list(indices), :, s:e]
            )
            yield start, stop, np.asarray(block, dtype=np.float32)


class _SpectraGrid(GridScores):
    """A spectra file: predictions and score rows from the factorisation(s)."""

    def __init__(
        self, path: Path, handle: h5py.File, attrs: dict[str, Any], lambdas: np.ndarray
    ) -> None:
        self.path, self.handle, self.attrs = path, handle, attrs
        self.lambdas = lambdas
        for name in ("train_ids", "test_ids", "members"):
            if name not in handle:
                raise CorruptFileError(
                    f"{path}: spectra file lacks `{name}`; it has {sorted(handle)}"
                )
        self.train_ids = handle["train_ids"][()].astype(np.int64)
        self.test_ids = handle["test_ids"][()].astype(np.int64)
        self.form = str(attrs.get("form"))
        self.normalize = _check_normalize(str(attrs.get("normalize", "none")))
        self.members = [handle["members"][key] for key in sorted(handle["members"], key=int)]
        for group in self.members:
            self._check_member(group)

    def _check_member(self, group: h5py.Group) -> None:
        missing = [n for n in ("eigenvalues", "left", "right", "row_norms") if n not in group]
        if missing:
            raise CorruptFileError(f"{self.path}: member {group.name} lacks {missing}")
        rank = group["eigenvalues"].shape[0]
        expected = {
            "left": (len(self.test_ids), rank),
            "right": (len(self.train_ids), rank),
            "row_norms": (len(self.train_ids),),
        }
        for name, shape in expected.items():
            if group[name].shape != shape:
                raise CorruptFileError(
                    f"{self.path}: {group.name}/{name} has shape {group[name].shape}, expected "
                    f"{shape} for {len(self.test_ids)} queries, {len(self.train_ids)} training "
                    f"rows and rank {rank}"
                )

    def _factors(self, group: h5py.Group) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(clipped eigenvalues, left, weights [L, r] = 1/(s+λ))."""
        eigenvalues = _read(self.path, lambda: group["eigenvalues"][()]).astype(np.float64)
        left = _read(self.path, lambda: group["left"][()]).astype(np.float64)
        return np.clip(eigenvalues, 0.0, None), left, _inverse_spectrum(eigenvalues, self.lambdas)

    def _right_blocks(self, group: h5py.Group) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        n_train = len(self.train_ids)
        for start in range(0, n_train, ROW_BLOCK):
            stop = min(start + ROW_BLOCK, n_train)
            right = _read(self.path, lambda s=start, e=stop: group["right"][s:e])
            norms = _read(self.path, lambda s=start, e=stop: group["row_norms"][s:e])
            yield start, stop, np.asarray(right, dtype=np.float64), np.asarray(norms, np.float64)

    def _column_norms(
        self, right: np.ndarray, row_norms: np.ndarray, spectrum: np.ndarray, weights: np.ndarray
    ) -> np.ndarray | None:
        """Divisors [L, rows] of the columns of τ for every λ of ``weights`` [L, r], or None."""
        if self.normalize == "none":
            return None
        if self.normalize == "renormalized":
            return np.broadcast_to(row_norms, (weights.shape[0], row_norms.size))
        scale = weights**2 if self.form == "primal" else spectrum[None, :] * weights**2
        return np.sqrt(np.clip(scale @ (right**2).T, 0.0, None))

    def predictions(self, masks: np.ndarray) -> np.ndarray:
        mask_matrix = self._masks(masks)
        total = np.zeros((len(self.lambdas), mask_matrix.shape[0], len(self.test_ids)))
        for group in self.members:
            spectrum, left, weights = self._factors(group)
            if self.normalize == "relative":
                # c_i depends on λ: one masked product per λ
                masked = np.zeros((len(self.lambdas), mask_matrix.shape[0], left.shape[1]))
                for start, stop, right, row_norms in self._right_blocks(group):
                    divisors = self._column_norms(right, row_norms, spectrum, weights)
                    for index in range(len(self.lambdas)):
                        scaled = _divide(mask_matrix[:, start:stop], divisors[index])
                        masked[index] += scaled @ right
                for index in range(len(self.lambdas)):
                    total[index] += (masked[index] * weights[index]) @ left.T
                continue
            masked = np.zeros((mask_matrix.shape[0], left.shape[1]))
            for start, stop, right, row_norms in self._right_blocks(group):
                block = mask_matrix[:, start:stop]
                if self.normalize == "renormalized":
                    block = _divide(block, row_norms)
                masked += block @ right
            for index in range(len(self.lambdas)):
                total[index] += (masked * weights[index]) @ left.T
        return self.sign * total / len(self.members)

    def score_blocks(self, indices: Sequence[int]) -> Iterator[tuple[int, int, np.ndarray]]:
        chosen = list(indices)
        factors = [self._factors(group) for group in self.members]
        blocks = [self._right_blocks(group) for group in self.members]
        for parts in zip(*blocks, strict=True):
            start, stop = parts[0][0], parts[0][1]
            total = np.zeros((len(chosen), len(self.test_ids), stop - start))
            for (spectrum, left, weights), (_, _, right, row_norms) in zip(
                factors, parts, strict=True
            ):
                divisors = self._column_norms(right, row_norms, spectrum, weights[chosen])
                for position, index in enumerate(chosen):
                    block = (left * weights[index]) @ right.T
                    if divisors is not None:
                        block = _divide(block, divisors[position])
                    total[position] += block
            yield start, stop, (total / len(self.members)).astype(np.float32)


def _divide(block: np.ndarray, divisors: np.ndarray) -> np.ndarray:
    """Columns of ``block`` divided by ``divisors``; a zero divisor gives a zero column."""
    divisors = np.asarray(divisors)[None, :]
    return np.divide(block, divisors, out=np.zeros_like(block), where=divisors > 0)


def _read(path: Path, reader: Any) -> np.ndarray:
    try:
        return np.asarray(reader())
    except OSError as error:
        raise CorruptFileError(
            f"{path}: cannot read the file ({error}); it is truncated or corrupted. Delete it "
            "and rerun the rule that produces it."
        ) from error


def is_spectra(path: str | os.PathLike) -> bool:
    with open_h5(path) as handle:
        return decode_attr(handle.attrs.get("file_kind")) == FILE_KIND


def open_scores(
    path: str | os.PathLike, lambdas: Sequence[float] | np.ndarray | None = None
) -> GridScores:
    """A spectra file (evaluated on ``lambdas``, required) or a score file (its own λ)."""
    path = Path(path)
    handle = open_h5(path)
    try:
        attrs = {k: decode_attr(v) for k, v in handle.attrs.items() if k != COMPLETE_ATTR}
        if attrs.get("file_kind") == FILE_KIND:
            if lambdas is None or len(lambdas) == 0:
                raise ConfigError(
                    f"{path} is a spectra file (a method with a ridge λ): it needs the λ grid "
                    "(scoring.lambdas) to be evaluated"
                )
            return _SpectraGrid(path, handle, attrs, validate_lambdas(lambdas))
        return _ScoreFileGrid(path, handle, attrs)
    except BaseException:
        handle.close()
        raise


# --------------------------------------------------------------------------- score files


def write_selected_scores(
    grid: GridScores,
    out_path: str | os.PathLike,
    indices: Sequence[int],
    extra_attrs: Mapping[str, Any] | None = None,
    chunk_rows: int = ROW_BLOCK,
) -> Path:
    """The score file (layout of :mod:`diffattr.scoring`) at ``grid.lambdas[indices]``.

    Attrs: the source's, without ``file_kind``, plus ``lambda_grid`` (every λ evaluated),
    ``lambda_grid_index`` (the position of each stored λ in it) and ``extra_attrs``.
    """
    chosen = sorted({int(i) for i in indices})
    if not chosen or not all(0 <= i < len(grid.lambdas) for i in chosen):
        raise ConfigError(
            f"λ indices {list(indices)} must be non-empty and within the grid of "
            f"{len(grid.lambdas)} values"
        )
    attrs = {k: v for k, v in grid.attrs.items() if k != "file_kind"}
    attrs.update(
        lambda_grid=grid.lambdas.tolist(),
        lambda_grid_index=chosen,
        **(extra_attrs or {}),
    )
    n_test, n_train = len(grid.test_ids), len(grid.train_ids)
    with h5_writer(out_path, attrs) as handle:
        handle.create_dataset("lambdas", data=grid.lambdas[chosen])
        handle.create_dataset("train_ids", data=grid.train_ids)
        handle.create_dataset("test_ids", data=grid.test_ids)
        scores = create_score_dataset(handle, len(chosen), n_test, n_train, chunk_rows)
        for start, stop, block in grid.score_blocks(chosen):
            if not np.isfinite(block).all():
                raise FeatureMismatchError(f"{grid.path}: scores of rows {start}:{stop} are NaN")
            scores[:, :, start:stop] = block
    return Path(out_path)


def lambda_position(lambdas: Sequence[float] | np.ndarray, value: float, where: str) -> int:
    """Position of λ = ``value`` in a score file's ``lambdas``; ConfigError naming the stored ones."""
    grid = np.asarray(lambdas, dtype=np.float64)
    matches = np.flatnonzero(np.isclose(grid, float(value), rtol=1e-12, atol=0.0))
    if matches.size == 0:
        raise ConfigError(
            f"{where}: holds scores at λ {grid.tolist()}, not at λ = {value}. Score files keep "
            "only the λ values that are used; set scoring.write_all_lambdas: true to keep all"
        )
    return int(matches[0])
