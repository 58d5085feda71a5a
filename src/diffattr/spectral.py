"""The λ grid without a score matrix per λ: one factorisation, subset predictions for every λ.

The LDS needs only the subset predictions M·τ_λᵀ (masks M [S, N]), not τ_λ [n, N] itself.

* **primal** (Z <= N): ΦᵀΦ = V diag(s) Vᵀ, τ_λ = (ΨV) diag(1/(s+λ)) (ΦV)ᵀ and
  M·τ_λᵀ = ((MΦ) V) diag(1/(s+λ)) (ΨV)ᵀ: MΦ is one pass over the training features
  (S × N × Z), then S × Z × Z once and S × Z × n per λ. ΦV [N, Z] is never formed for the LDS.
* **dual** (N < Z): ΦΦᵀ = U diag(s) Uᵀ, τ_λ = (ΨΦᵀU) diag(1/(s+λ)) Uᵀ and
  M·τ_λᵀ = (MU) diag(1/(s+λ)) (ΨΦᵀU)ᵀ.

Either way a λ costs an S × r × n product instead of the n × r × N of a score matrix (at
CIFAR-2: 64 × 5000 × 1000 against 1000 × 5000 × 5000). Column normalisations divide column i of
τ_λ by c_i: ``renormalized`` (c_i = ‖Φ_i‖) scales the masks once, M diag(1/c); ``relative``
(c_i(λ) = ‖(Φ G_λ⁻¹)_i‖, see :mod:`diffattr.scoring`) depends on λ, so it needs the rows of ΦV
(primal: computed block by block, N × Z × Z) and one [S, N] × [N, r] product per λ. An ensemble
(``ensemble_trak``) stores one factorisation per member; its τ_λ and its predictions are the
means over the members.

**Spectra file** (``spectra/{method}/K{K}/{split}.h5``, written by the scoring job of every
method with a ridge λ; it does not depend on the λ grid):

* ``members/{m}/eigenvalues`` float64 [r], ``members/{m}/left`` float64 [n, r] (ΨV or ΨΦᵀU),
  ``members/{m}/row_norms`` float64 [N] (‖Φ_i‖), and ``members/{m}/basis`` float64 [Z, Z] (V,
  primal) or ``members/{m}/right`` float64 [N, N] (U, dual); the group's attr ``train_check``
  holds the training features' provenance and shape, checked when they are read again;
* ``train_ids`` int64 [N], ``test_ids`` int64 [n];
* attrs: the method's provenance (``method``, ``kind``, ``K``, ``split``, ``params``,
  ``lds_sign``), the feature provenance of :func:`diffattr.scoring.write_trak_scores`,
  ``file_kind = "spectra"``, ``form``, ``normalize``, ``num_members`` and ``complete``.

The primal form reads the training features again (its ΦV would be N × Z); readers of a primal
spectra file get the training feature file of each member (``train_paths``).

:func:`open_scores` gives the same interface (:class:`GridScores`) for a spectra file and a
plain score file (methods without λ), so ``evaluate_lds``, the counterfactual λ choice and the
score selection do not care which one a method produced. :func:`write_selected_scores` writes
the score file — the layout of :mod:`diffattr.scoring` — at the λ values that are used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffattr.errors import ConfigError, CorruptFileError, FeatureMismatchError
from diffattr.files import (
    FeatureFile,
    ScoreFile,
    create_score_dataset,
    lds_sign,
    score_writer,
)
from diffattr.scoring import (
    TrakOptions,
    _check_matrix,
    _check_normalize,
    _check_pair,
    _eigh,
    _inverse_spectrum,
    _progress_ticks,
    choose_form,
    feature_pair,
    stream_factors,
    validate_lambdas,
)
from diffattr.store import (
    COMPLETE_ATTR,
    FEATURE_CHECK_KEYS,
    decode_attr,
    encode_attr,
    h5_writer,
    open_h5,
    with_optional_keys,
)

FILE_KIND = "spectra"
#: Training rows read (and written) at a time.
ROW_BLOCK = 4096


@dataclass
class Member:
    """One factorisation (see the module docstring): ``basis`` V for the primal form, ``right``
    U for the dual form; ``train_check`` the provenance and shape of its training features."""

    eigenvalues: np.ndarray  # [r]
    left: np.ndarray  # [n, r]
    row_norms: np.ndarray  # [N]
    basis: np.ndarray | None = None  # [Z, Z] (primal)
    right: np.ndarray | None = None  # [N, N] (dual)
    train_check: dict[str, Any] = field(default_factory=dict)


def train_check(attrs: Mapping[str, Any], shape: Sequence[int]) -> dict[str, Any]:
    """What a reader checks of a member's training features: provenance keys and shape."""
    return {
        **{
            key: attrs[key] for key in with_optional_keys(FEATURE_CHECK_KEYS, attrs) if key in attrs
        },
        "shape": [int(v) for v in shape],
    }


# --------------------------------------------------------------------------- writing


def member_from_features(
    train: np.ndarray,
    test: np.ndarray,
    form: str = "auto",
    train_attrs: Mapping[str, Any] | None = None,
) -> Member:
    """The factorisation of in-memory features Φ [N, Z], Ψ [n, Z] (float64)."""
    phi = _check_matrix(train, "train_features").astype(np.float64, copy=False)
    psi = _check_matrix(test, "test_features").astype(np.float64, copy=False)
    _check_pair(phi.shape, psi.shape)
    chosen = choose_form(phi.shape[0], phi.shape[1], form)
    check = train_check(train_attrs or {}, phi.shape)
    norms = np.linalg.norm(phi, axis=1)
    if chosen == "primal":
        eigenvalues, basis = _eigh(phi.T @ phi)
        return Member(eigenvalues, psi @ basis, norms, basis=basis, train_check=check)
    eigenvalues, basis = _eigh(phi @ phi.T)
    return Member(eigenvalues, (psi @ phi.T) @ basis, norms, right=basis, train_check=check)


def write_spectra(
    train_path: str | os.PathLike,
    test_path: str | os.PathLike,
    out_path: str | os.PathLike,
    attrs: Mapping[str, Any],
    options: TrakOptions | None = None,
) -> Path:
    """Stream the factorisation of two feature files into a spectra file (one member).

    Same checks and memory as :func:`diffattr.scoring.write_trak_scores` without any per-λ
    work; the primal form reads the training file once (the kernel), the dual form as that
    function does. ``options``: the kernel's form, normalisation, checked keys, chunk size and
    progress (:class:`~diffattr.scoring.TrakOptions`; None: its defaults).
    """
    options = TrakOptions() if options is None else options
    chunk_rows, progress = int(options.chunk_rows), options.progress
    with feature_pair(train_path, test_path, out_path, attrs, options) as (train, test, out_attrs):
        out_attrs.update(file_kind=FILE_KIND, num_members=1)
        with h5_writer(out_path, out_attrs) as handle:
            handle.create_dataset("train_ids", data=train.ids())
            handle.create_dataset("test_ids", data=test.ids())
            group = handle.create_group("members/0")
            group.attrs["train_check"] = encode_attr(train_check(train.attrs, train.shape))
            chunks = len(list(train.chunks(chunk_rows)))
            if out_attrs["form"] == "primal":
                tick, close = _progress_ticks(progress, chunks)
                _write_primal(train, test, group, chunk_rows, tick)
            else:
                tick, close = _progress_ticks(progress, 2 * chunks)
                eigenvalues, left, blocks = stream_factors(train, test, chunk_rows, "dual", tick)
                group.create_dataset("eigenvalues", data=eigenvalues)
                group.create_dataset("left", data=left)
                right = _create_rows(group, "right", train.shape[0], left.shape[1])
                norms = np.empty(train.shape[0], dtype=np.float64)
                for start, stop, block, row_norms in blocks:
                    right[start:stop] = block
                    norms[start:stop] = row_norms
                    tick()
                group.create_dataset("row_norms", data=norms)
            close()
    return Path(out_path)


def _write_primal(
    train: FeatureFile, test: FeatureFile, group: h5py.Group, chunk_rows: int, tick: Any
) -> None:
    dim = train.shape[1]
    kernel = np.zeros((dim, dim), dtype=np.float64)
    norms = np.empty(train.shape[0], dtype=np.float64)
    for start, stop in train.chunks(chunk_rows):
        block = train.rows(start, stop)
        kernel += block.T @ block
        norms[start:stop] = np.linalg.norm(block, axis=1)
        tick()
    eigenvalues, basis = _eigh(kernel)
    del kernel
    left = np.empty((test.shape[0], dim), dtype=np.float64)
    for start, stop in test.chunks(chunk_rows):
        left[start:stop] = test.rows(start, stop) @ basis
    group.create_dataset("eigenvalues", data=eigenvalues)
    group.create_dataset("left", data=left)
    group.create_dataset("basis", data=basis)
    group.create_dataset("row_norms", data=norms)


def write_spectra_members(
    out_path: str | os.PathLike,
    members: Sequence[Member],
    train_ids: np.ndarray,
    test_ids: np.ndarray,
    attrs: Mapping[str, Any],
    *,
    normalize: str = "none",
) -> Path:
    """Write factorisations computed in memory (e.g. an ensemble's members) as a spectra file."""
    _check_normalize(normalize)
    lds_sign(attrs, out_path)  # required, as in every score file
    if not members:
        raise ConfigError("a spectra file needs at least one member factorisation")
    forms = {"primal" if member.basis is not None else "dual" for member in members}
    if len(forms) != 1:
        raise FeatureMismatchError("the members of a spectra file must share one form")
    n_train, n_test = len(train_ids), len(test_ids)
    for index, member in enumerate(members):
        if member.left.shape[0] != n_test or member.row_norms.shape != (n_train,):
            raise FeatureMismatchError(
                f"member {index}: left {member.left.shape} / row_norms {member.row_norms.shape} "
                f"do not match {n_test} queries and {n_train} training rows"
            )
    out_attrs = {
        **attrs,
        "file_kind": FILE_KIND,
        "form": forms.pop(),
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
            group.attrs["train_check"] = encode_attr(member.train_check)
            group.create_dataset("eigenvalues", data=member.eigenvalues)
            group.create_dataset("left", data=member.left)
            group.create_dataset("row_norms", data=member.row_norms)
            if member.basis is not None:
                group.create_dataset("basis", data=member.basis)
            else:
                rows = _create_rows(group, "right", n_train, member.right.shape[1])
                rows[...] = member.right
    return Path(out_path)


def _create_rows(group: h5py.Group, name: str, n_rows: int, width: int) -> h5py.Dataset:
    rows = max(1, min(n_rows, ROW_BLOCK, (1 << 21) // max(width, 1)))
    return group.create_dataset(name, shape=(n_rows, width), dtype=np.float64, chunks=(rows, width))


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
    handle: h5py.File

    @property
    def sign(self) -> int:
        """``lds_sign``: −1 when τ > 0 means support, +1 for scores in loss units (required:
        a file without it is refused when opened)."""
        return lds_sign(self.attrs, self.path)

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

    def __init__(self, file: ScoreFile) -> None:
        self.file = file
        self.path, self.handle, self.attrs = file.path, file.handle, file.attrs
        self.lambdas, self.train_ids, self.test_ids = file.lambdas, file.train_ids, file.test_ids

    def predictions(self, masks: np.ndarray) -> np.ndarray:
        mask_matrix = self._masks(masks)
        out = np.empty((len(self.lambdas), mask_matrix.shape[0], len(self.test_ids)))
        for index in range(len(self.lambdas)):
            matrix = self.file.read(index).astype(np.float64)
            if not np.isfinite(matrix).all():
                raise CorruptFileError(f"{self.path}: scores at λ index {index} hold NaN/inf")
            out[index] = self.sign * (mask_matrix @ matrix.T)
        return out

    def score_blocks(self, indices: Sequence[int]) -> Iterator[tuple[int, int, np.ndarray]]:
        n_train = len(self.train_ids)
        for start in range(0, n_train, ROW_BLOCK):
            stop = min(start + ROW_BLOCK, n_train)
            yield start, stop, self.file.read_block(indices, start, stop)


class _MemberReader:
    """One member of a spectra file: its factors, and the rows of its right factor."""

    def __init__(
        self, grid: _SpectraGrid, group: h5py.Group, train_path: str | os.PathLike | None
    ) -> None:
        self.grid, self.group = grid, group
        path = grid.path
        needed = ["eigenvalues", "left", "row_norms", "basis" if grid.form == "primal" else "right"]
        missing = [name for name in needed if name not in group]
        if missing:
            raise CorruptFileError(f"{path}: member {group.name} lacks {missing}")
        rank = group["eigenvalues"].shape[0]
        n_train, n_test = len(grid.train_ids), len(grid.test_ids)
        expected = {"left": (n_test, rank), "row_norms": (n_train,)}
        expected["basis" if grid.form == "primal" else "right"] = (
            (rank, rank) if grid.form == "primal" else (n_train, rank)
        )
        for name, shape in expected.items():
            if group[name].shape != shape:
                raise CorruptFileError(
                    f"{path}: {group.name}/{name} has shape {group[name].shape}, expected "
                    f"{shape} for {n_test} queries, {n_train} training rows and rank {rank}"
                )
        eigenvalues = _read(path, lambda: group["eigenvalues"][()]).astype(np.float64)
        self.spectrum = np.clip(eigenvalues, 0.0, None)
        self.weights = _inverse_spectrum(eigenvalues, grid.lambdas)  # [L, r]
        self.left = _read(path, lambda: group["left"][()]).astype(np.float64)
        self.row_norms = _read(path, lambda: group["row_norms"][()]).astype(np.float64)
        self.train: FeatureFile | None = None
        self.basis: np.ndarray | None = None
        if grid.form == "primal":
            if train_path is None:
                raise ConfigError(
                    f"{path} is a primal spectra file: reading it needs the training features "
                    f"of member {group.name} (train_paths)"
                )
            self.basis = _read(path, lambda: group["basis"][()]).astype(np.float64)
            self.train = FeatureFile(train_path, "train")
            self._check_train(decode_attr(group.attrs.get("train_check", "json:{}")))

    def _check_train(self, expected: Mapping[str, Any]) -> None:
        assert self.train is not None
        found = train_check(self.train.attrs, self.train.shape)
        differing = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
        ids_differ = not np.array_equal(self.train.ids(), self.grid.train_ids)
        if differing or ids_differ:
            what = ", ".join(f"{k}: {expected.get(k)!r} vs {found.get(k)!r}" for k in differing)
            raise FeatureMismatchError(
                f"{self.train.path} is not the training feature file {self.grid.path} was "
                f"factorised from ({what or 'row ids differ'})"
            )

    def close(self) -> None:
        if self.train is not None:
            self.train.close()

    def _train_rows(self, start: int, stop: int) -> np.ndarray:
        """Training feature rows [start, stop), checked against the stored row norms."""
        assert self.train is not None
        rows = self.train.rows(start, stop)
        norms = np.linalg.norm(rows, axis=1)
        if not np.allclose(norms, self.row_norms[start:stop], rtol=1e-6, atol=0.0):
            raise FeatureMismatchError(
                f"{self.train.path} is not the training feature file {self.grid.path} was "
                f"factorised from (the norms of rows {start}:{stop} differ)"
            )
        return rows

    def right_blocks(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """(start, stop, rows of ΦV or U, ‖Φ_i‖ of those rows), in training-row order."""
        n_train = len(self.grid.train_ids)
        for start in range(0, n_train, ROW_BLOCK):
            stop = min(start + ROW_BLOCK, n_train)
            norms = self.row_norms[start:stop]
            if self.train is not None:
                yield start, stop, self._train_rows(start, stop) @ self.basis, norms
            else:
                rows = _read(self.grid.path, lambda s=start, e=stop: self.group["right"][s:e])
                yield start, stop, np.asarray(rows, dtype=np.float64), norms

    def masked_right(self, masks: np.ndarray) -> np.ndarray:
        """M R [S, r] (R = ΦV or U), masks already divided by fixed column norms if any."""
        if self.train is None:
            total = np.zeros((masks.shape[0], self.left.shape[1]))
            for start, stop, rows, _ in self.right_blocks():
                total += masks[:, start:stop] @ rows
            return total
        masked_features = np.zeros((masks.shape[0], self.train.shape[1]))
        for start, stop in self.train.chunks(ROW_BLOCK):
            masked_features += masks[:, start:stop] @ self._train_rows(start, stop)
        return masked_features @ self.basis

    def column_norms(self, right: np.ndarray, norms: np.ndarray, rows: Any) -> np.ndarray | None:
        """Divisors [L', rows] of the columns of τ for the λ of ``rows`` (an index), or None."""
        normalize, weights = self.grid.normalize, self.weights[rows]
        if normalize == "none":
            return None
        if normalize == "renormalized":
            return np.broadcast_to(norms, (weights.shape[0], norms.size))
        scale = weights**2 if self.grid.form == "primal" else self.spectrum[None, :] * weights**2
        return np.sqrt(np.clip(scale @ (right**2).T, 0.0, None))


class _SpectraGrid(GridScores):
    """A spectra file: predictions and score rows from the factorisation(s)."""

    def __init__(
        self,
        path: Path,
        handle: h5py.File,
        attrs: dict[str, Any],
        lambdas: np.ndarray,
        train_paths: Sequence[str | os.PathLike] | None,
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
        if self.form not in ("primal", "dual"):
            raise CorruptFileError(f"{path}: form {self.form!r} is neither primal nor dual")
        self.normalize = _check_normalize(str(attrs.get("normalize", "none")))
        groups = [handle["members"][key] for key in sorted(handle["members"], key=int)]
        paths = list(train_paths) if train_paths else [None] * len(groups)
        if len(paths) != len(groups):
            raise ConfigError(
                f"{path} has {len(groups)} member(s) but {len(paths)} training feature file(s) "
                "were given"
            )
        self.members: list[_MemberReader] = []
        for group, train_path in zip(groups, paths, strict=True):
            self.members.append(_MemberReader(self, group, train_path))

    def close(self) -> None:
        for member in self.members:
            member.close()
        super().close()

    def predictions(self, masks: np.ndarray) -> np.ndarray:
        mask_matrix = self._masks(masks)
        n_lambdas = len(self.lambdas)
        total = np.zeros((n_lambdas, mask_matrix.shape[0], len(self.test_ids)))
        for member in self.members:
            if self.normalize == "relative":  # c_i depends on λ: one masked product per λ
                masked = np.zeros((n_lambdas, mask_matrix.shape[0], member.left.shape[1]))
                for start, stop, right, norms in member.right_blocks():
                    divisors = member.column_norms(right, norms, slice(None))
                    for index in range(n_lambdas):
                        masked[index] += (
                            _divide(mask_matrix[:, start:stop], divisors[index]) @ right
                        )
                for index in range(n_lambdas):
                    total[index] += (masked[index] * member.weights[index]) @ member.left.T
                continue
            scaled = mask_matrix
            if self.normalize == "renormalized":
                scaled = _divide(mask_matrix, member.row_norms)
            masked = member.masked_right(scaled)
            for index in range(n_lambdas):
                total[index] += (masked * member.weights[index]) @ member.left.T
        return self.sign * total / len(self.members)

    def score_blocks(self, indices: Sequence[int]) -> Iterator[tuple[int, int, np.ndarray]]:
        chosen = list(indices)
        blocks = [member.right_blocks() for member in self.members]
        for parts in zip(*blocks, strict=True):
            start, stop = parts[0][0], parts[0][1]
            total = np.zeros((len(chosen), len(self.test_ids), stop - start))
            for member, (_, _, right, norms) in zip(self.members, parts, strict=True):
                divisors = member.column_norms(right, norms, chosen)
                for position, index in enumerate(chosen):
                    block = (member.left * member.weights[index]) @ right.T
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


def open_scores(
    path: str | os.PathLike,
    lambdas: Sequence[float] | np.ndarray | None = None,
    train_paths: Sequence[str | os.PathLike] | None = None,
) -> GridScores:
    """A spectra file (evaluated on ``lambdas``, required; a primal one also needs the training
    feature file of each member, ``train_paths``) or a score file (its own λ)."""
    path = Path(path)
    handle = open_h5(path)
    try:
        attrs = {k: decode_attr(v) for k, v in handle.attrs.items() if k != COMPLETE_ATTR}
        if attrs.get("file_kind") != FILE_KIND:
            handle.close()
            return _ScoreFileGrid(ScoreFile(path))
        lds_sign(attrs, path)
        if lambdas is None or len(lambdas) == 0:
            raise ConfigError(
                f"{path} is a spectra file (a method with a ridge λ): it needs the λ grid "
                "(scoring.lambdas) to be evaluated"
            )
        return _SpectraGrid(path, handle, attrs, validate_lambdas(lambdas), train_paths)
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
    with score_writer(
        out_path, attrs, grid.lambdas[chosen], grid.train_ids, grid.test_ids
    ) as handle:
        scores = create_score_dataset(handle, len(chosen), n_test, n_train, chunk_rows)
        for start, stop, block in grid.score_blocks(chosen):
            if not np.isfinite(block).all():
                raise FeatureMismatchError(f"{grid.path}: scores of rows {start}:{stop} are NaN")
            scores[:, :, start:stop] = block
    return Path(out_path)
