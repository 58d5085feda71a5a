"""TRAK-style scores over a whole λ grid from one eigendecomposition, plus simple baselines.

For training features Φ [N, Z] and query features Ψ [n, Z] the score matrix at ridge λ is

    τ_λ = Ψ (ΦᵀΦ + λI)⁻¹ Φᵀ            [n, N],  τ[j, i] > 0: row i supports query j.

The reference inverted a Z×Z matrix once per λ (27 times). Here the kernel is eigendecomposed
once and every λ costs one matrix product. Two exact forms are used:

* **primal** (Z×Z kernel, best when Z <= N): ΦᵀΦ = V diag(s) Vᵀ, so
  τ_λ = (ΨV) diag(1/(s+λ)) (ΦV)ᵀ.
* **dual** (N×N Gram, best when N < Z): ΦΦᵀ = U diag(s) Uᵀ and, by the push-through identity
  (ΦᵀΦ+λI)⁻¹Φᵀ = Φᵀ(ΦΦᵀ+λI)⁻¹, τ_λ = (ΨΦᵀU) diag(1/(s+λ)) Uᵀ.

The kernel, its eigendecomposition (LAPACK's divide-and-conquer ``syevd``) and the change of
basis are float64. The per-λ product, whose result is stored as float32 anyway, is a float32
matmul: its error is about 1e-6 of the largest score, and it halves the cost that grows with the
grid (``benchmarks/run.py --only scores`` measures it against one float64 inverse per λ).
Eigenvalues of the positive semi-definite kernel that round-off makes slightly negative are
clipped to 0.

``normalize`` divides column i of τ_λ by a per-training-row norm (protocol §5):

* ``relative`` (Relative IF, Barshan et al. 2020): ‖(Φ G_λ⁻¹)_i‖₂ with G_λ = ΦᵀΦ + λI; from the
  eigendecomposition it is ‖(Φ_i V) / (s + λ)‖₂ (primal) or (Σ_r U_ir² s_r / (s_r + λ)²)^½ (dual);
* ``renormalized`` (Renormalized IF, Hammoudeh & Lowd 2022): ‖Φ_i‖₂.

A zero norm gives a zero column.

:func:`write_trak_scores` is the streaming version used by the workflow. It reads the feature
files in row chunks and writes an HDF5 score file with this layout:

* ``scores``     float32 [L, n_test, N_train], HDF5-chunked per λ and per block of training rows;
* ``lambdas``    float64 [L], in the order of the first axis of ``scores``;
* ``train_ids``  int64 [N_train], ``test_ids`` int64 [n_test]: row ids copied from the features;
* attrs: the caller's attrs, ``score_kind``, ``form`` (primal/dual), ``n_train``, ``n_test``,
  ``feature_dim``, the checked provenance keys (shared by both feature files),
  ``train_features`` / ``test_features`` (JSON: path + all attrs of each feature file),
  ``train_split`` / ``test_split`` (``split``, or ``shard_splits`` of a merged feature file)
  and ``complete``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch

from diffattr.errors import ConfigError, DataError, FeatureMismatchError
from diffattr.files import FeatureFile, check_finite, create_score_dataset, score_writer
from diffattr.progress import progress_bar
from diffattr.schema import schema_field
from diffattr.settings import _as_tuple, _check_choice, _check_int
from diffattr.store import COMPLETE_ATTR, FEATURE_CHECK_KEYS, require_same, with_optional_keys

#: Feature provenance that train and test features must share before they can be combined.
DEFAULT_CHECK_KEYS = FEATURE_CHECK_KEYS

FORMS = ("auto", "primal", "dual")
NORMALIZATIONS = ("none", "relative", "renormalized")

# Keys that write_trak_scores sets itself; the caller's attrs may not set them.
_RESERVED_ATTRS = (
    "score_kind",
    "form",
    "normalize",
    "n_train",
    "n_test",
    "feature_dim",
    "train_features",
    "test_features",
    "train_split",
    "test_split",
    COMPLETE_ATTR,
)

# Upper bound on the number of float32 elements in one HDF5 chunk of ``scores`` (16 MiB).
_MAX_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True, kw_only=True)
class TrakOptions:
    """How two feature files become a TRAK kernel (:func:`write_trak_scores`,
    :func:`diffattr.spectral.write_spectra`), checked when built.

    ``form``: ``auto``, ``primal`` or ``dual``; ``normalize``: ``none``, ``relative`` or
    ``renormalized`` column normalisation; ``score_kind``: stored as the ``score_kind`` attr
    (e.g. ``trak``, ``dtrak``); ``check_keys``: attrs both feature files must agree on (None:
    :data:`DEFAULT_CHECK_KEYS`); ``chunk_rows``: training rows read at a time; ``progress``:
    None, a callback ``progress(done, total)`` or a text stream for a tqdm bar, advanced once
    per chunk of training rows in each pass.
    """

    form: str = "auto"
    normalize: str = "none"
    score_kind: str = "trak"
    check_keys: tuple[str, ...] | None = None
    chunk_rows: int = schema_field("scoring.chunk_rows")
    progress: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_choice(self, "form", FORMS)
        _check_choice(self, "normalize", NORMALIZATIONS)
        if not isinstance(self.score_kind, str) or not self.score_kind:
            raise ConfigError(
                f"TrakOptions.score_kind = {self.score_kind!r} is not valid; expected the name "
                "of a method kind"
            )
        _as_tuple(
            self,
            "check_keys",
            lambda v: all(isinstance(k, str) for k in v),
            "expected null or a list of attribute names",
            allow_none=True,
        )
        _check_int(self, "chunk_rows", 1)


# --------------------------------------------------------------------------- validation


def validate_lambdas(lambdas: Sequence[float] | np.ndarray) -> np.ndarray:
    """The λ grid as a float64 vector; every λ must be finite and > 0."""
    try:
        grid = np.asarray(lambdas, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"lambdas must be positive numbers, got {lambdas!r}") from error
    if grid.ndim == 0:
        grid = grid.reshape(1)
    if grid.ndim != 1 or grid.size == 0:
        raise ConfigError(
            f"lambdas must be a non-empty 1-D list of positive numbers, got shape {grid.shape}"
        )
    bad = [float(v) for v in grid if not (np.isfinite(v) and v > 0)]
    if bad:
        raise ConfigError(
            f"every ridge λ must be finite and > 0; invalid value(s) {bad} in lambdas "
            f"{grid.tolist()}. Use values such as 1e-2 ... 5e9."
        )
    return grid


def _check_matrix(array: Any, name: str) -> np.ndarray:
    matrix = np.asarray(array)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise DataError(
            f"{name} must be a non-empty 2-D matrix [rows, dim], got shape {matrix.shape}"
        )
    check_finite(matrix, name)
    return matrix


def _check_pair(train_shape: tuple[int, ...], test_shape: tuple[int, ...]) -> None:
    if train_shape[1] != test_shape[1]:
        raise FeatureMismatchError(
            f"train features {train_shape} and test features {test_shape} have different "
            f"feature dimensions ({train_shape[1]} vs {test_shape[1]}); both must use the same "
            "projection"
        )


def choose_form(n_train: int, dim: int, form: str = "auto") -> str:
    """``primal`` (Z×Z kernel) or ``dual`` (N×N Gram); ``auto`` takes the smaller matrix."""
    if form not in FORMS:
        raise ConfigError(f"form must be one of {list(FORMS)}, got {form!r}")
    if form == "auto":
        return "primal" if dim <= n_train else "dual"
    return form


def _eigh(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of a symmetric float64 matrix, which is overwritten.

    ``syevd`` (divide and conquer) is markedly faster than numpy's default driver for the
    eigenvectors of a large kernel.
    """
    return scipy.linalg.eigh(kernel.T, driver="evd", overwrite_a=True, check_finite=False)


def _float32(matrix: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))


def _weighted_product(left: np.ndarray, weights: np.ndarray, right32: torch.Tensor) -> np.ndarray:
    """(left · diag(weights)) rightᵀ as float32 [n, m]; ``right32`` = float32 right [m, r]."""
    return (_float32(left * weights) @ right32.T).numpy()


def _inverse_spectrum(eigenvalues: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """[L, r] matrix of 1/(s + λ); round-off negatives of a PSD spectrum are clipped to 0."""
    spectrum = np.clip(eigenvalues, 0.0, None)
    return 1.0 / (spectrum[None, :] + lambdas[:, None])


def _check_normalize(normalize: str) -> str:
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"normalize must be one of {list(NORMALIZATIONS)}, got {normalize!r}")
    return normalize


def _column_norms(
    normalize: str,
    form: str,
    right: np.ndarray,
    weights: np.ndarray,
    eigenvalues: np.ndarray,
    row_norms: np.ndarray,
) -> np.ndarray | None:
    """Per-column divisors of one block of τ_λ (None for ``none``); see the module docstring.

    ``right`` is the block's ΦV (primal) or U rows (dual), ``weights`` 1/(s+λ) for this λ and
    ``row_norms`` the block's ‖Φ_i‖₂.
    """
    if normalize == "none":
        return None
    if normalize == "renormalized":
        return row_norms
    if form == "primal":
        return np.linalg.norm(right * weights, axis=1)
    spectrum = np.clip(eigenvalues, 0.0, None)
    return np.sqrt(np.clip((right**2) @ (spectrum * weights**2), 0.0, None))


def _divide_columns(block: np.ndarray, norms: np.ndarray | None) -> np.ndarray:
    if norms is None:
        return block
    return np.divide(block, norms[None, :], out=np.zeros_like(block), where=norms[None, :] > 0)


# --------------------------------------------------------------------------- in memory


def trak_scores(
    train_features: np.ndarray,
    test_features: np.ndarray,
    lambdas: Sequence[float] | np.ndarray,
    *,
    form: str = "auto",
    normalize: str = "none",
) -> np.ndarray:
    """τ_λ = Ψ(ΦᵀΦ+λI)⁻¹Φᵀ for every λ, from one eigendecomposition.

    Args:
        train_features: Φ [N, Z].
        test_features: Ψ [n, Z].
        lambdas: ridge values, all > 0.
        form: ``auto`` (primal when Z <= N, else dual), ``primal`` or ``dual``; all are exact.
        normalize: ``none`` (TRAK), ``relative`` (Relative IF) or ``renormalized``
            (Renormalized IF); see the module docstring.

    Returns:
        float32 [L, n, N] scores, in the order of ``lambdas``.
    """
    grid = validate_lambdas(lambdas)
    phi = _check_matrix(train_features, "train_features").astype(np.float64, copy=False)
    psi = _check_matrix(test_features, "test_features").astype(np.float64, copy=False)
    _check_pair(phi.shape, psi.shape)
    _check_normalize(normalize)
    n_train, dim = phi.shape
    out = np.empty((grid.size, psi.shape[0], n_train), dtype=np.float32)
    chosen = choose_form(n_train, dim, form)
    eigenvalues, left, right = factorize(phi, psi, chosen)
    weights = _inverse_spectrum(eigenvalues, grid)
    row_norms = np.linalg.norm(phi, axis=1)
    right32 = _float32(right)
    for index in range(grid.size):
        norms = _column_norms(normalize, chosen, right, weights[index], eigenvalues, row_norms)
        out[index] = _divide_columns(_weighted_product(left, weights[index], right32), norms)
    return out


def factorize(
    phi: np.ndarray, psi: np.ndarray, form: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s [r], left [n, r], right [N, r]) with τ_λ = left diag(1/(s+λ)) rightᵀ (float64).

    primal: s, V of ΦᵀΦ, left = ΨV, right = ΦV; dual: s, U of ΦΦᵀ, left = ΨΦᵀU, right = U.
    """
    if form == "primal":
        eigenvalues, basis = _eigh(phi.T @ phi)
        return eigenvalues, psi @ basis, phi @ basis
    if form == "dual":
        eigenvalues, basis = _eigh(phi @ phi.T)
        return eigenvalues, (psi @ phi.T) @ basis, basis
    raise ConfigError(f"form must be 'primal' or 'dual' here, got {form!r}")


def dot_scores(test: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Inner products ⟨test_j, train_i⟩ as float32 [n, N] ("Gradient (dot)", raw/CLIP dot)."""
    test = _check_matrix(test, "test").astype(np.float64, copy=False)
    train = _check_matrix(train, "train").astype(np.float64, copy=False)
    _check_pair(train.shape, test.shape)
    return (test @ train.T).astype(np.float32)


def cosine_scores(test: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Cosine similarities as float32 [n, N]. A zero-norm row has similarity 0 with everything."""
    test = _check_matrix(test, "test").astype(np.float64, copy=False)
    train = _check_matrix(train, "train").astype(np.float64, copy=False)
    _check_pair(train.shape, test.shape)
    return (_unit_rows(test) @ _unit_rows(train).T).astype(np.float32)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


# --------------------------------------------------------------------------- feature files


def write_trak_scores(
    train_path: str | os.PathLike,
    test_path: str | os.PathLike,
    out_path: str | os.PathLike,
    lambdas: Sequence[float] | np.ndarray,
    attrs: Mapping[str, Any],
    options: TrakOptions | None = None,
) -> Path:
    """Stream TRAK scores for a λ grid from two feature files into one HDF5 score file.

    Memory: one chunk of training rows, the kernel (Z×Z primal or N×N dual) and its eigenvectors,
    the query features and their projection ([n, Z] or [n, N]), and one [n, chunk] output block.
    The training file is read twice in the primal form (Gram, then projection) and
    ⌈N/chunk⌉(⌈N/chunk⌉+1)/2 chunk pairs in the dual form. ``auto`` picks primal when Z <= N and
    dual otherwise (the smaller kernel); both give the same scores.

    The workflow does not call this: it stores the factorisation once
    (:func:`diffattr.spectral.write_spectra`), evaluates the λ grid from it and writes score
    matrices only at the λ it uses. This is the one-call form for tools and benchmarks.

    Args:
        train_path, test_path: feature files (``features`` [n, Z] float32, ``ids`` [n] int64).
        out_path: the score file to write (atomically, see module docstring for the layout).
        lambdas: ridge values, all > 0.
        attrs: provenance to stamp on the output (method, dataset, K, ...); ``lds_sign`` is
            −1 (τ > 0 supports the query) unless ``attrs`` sets it.
        options: form, normalisation, score kind, checked keys, chunk size and progress
            (:class:`TrakOptions`; None: its defaults). The progress bar advances once per
            chunk of training rows in each pass (kernel, then scores).

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.
    """
    grid = validate_lambdas(lambdas)
    options = TrakOptions() if options is None else options
    normalize = options.normalize
    with feature_pair(train_path, test_path, out_path, attrs, options) as (train, test, out_attrs):
        chunk_rows = int(options.chunk_rows)
        n_train, n_test = train.shape[0], test.shape[0]
        chosen = out_attrs["form"]
        with score_writer(out_path, out_attrs, grid, train.ids(), test.ids()) as handle:
            scores = create_score_dataset(handle, grid.size, n_test, n_train, chunk_rows)
            ticks = 2 * len(list(train.chunks(chunk_rows)))
            tick, close = _progress_ticks(options.progress, ticks)
            eigenvalues, left, blocks = stream_factors(train, test, chunk_rows, chosen, tick)
            weights = _inverse_spectrum(eigenvalues, grid)
            for start, stop, right, row_norms in blocks:
                right32 = _float32(right)
                for index in range(grid.size):
                    norms = _column_norms(
                        normalize, chosen, right, weights[index], eigenvalues, row_norms
                    )
                    block = _divide_columns(_weighted_product(left, weights[index], right32), norms)
                    scores[index, :, start:stop] = block.astype(np.float32, copy=False)
                tick()
            close()
    return Path(out_path)


def _progress_ticks(progress: Any, total: int) -> tuple[Callable[[], None], Callable[[], None]]:
    update, close = progress_bar(progress, total, "scores", unit="chunk")
    done = iter(range(1, total + 1))

    def tick() -> None:
        update(next(done, total))

    return tick, close


@contextlib.contextmanager
def feature_pair(
    train_path: str | os.PathLike,
    test_path: str | os.PathLike,
    out_path: str | os.PathLike,
    attrs: Mapping[str, Any],
    options: TrakOptions,
) -> Iterator[tuple[FeatureFile, FeatureFile, dict[str, Any]]]:
    """Train and test feature files opened and checked against each other and ``attrs``,
    with the attrs of an output computed from them (``options.form`` resolved)."""
    check_keys = options.check_keys
    keys = list(DEFAULT_CHECK_KEYS if check_keys is None else check_keys)
    clash = sorted(key for key in attrs if key in _RESERVED_ATTRS)
    if clash:
        raise ConfigError(
            f"attrs may not set {clash}: the score writer sets these itself "
            f"(pass score_kind=... for the score kind)"
        )
    train = FeatureFile(train_path, "train")
    try:
        test = FeatureFile(test_path, "test")
        try:
            for features in (train, test):
                features.require_keys(keys)
            require_same(
                train.attrs,
                test.attrs,
                with_optional_keys(keys, train.attrs, test.attrs),
                f"train features {train.path} and test features {test.path}",
            )
            given = [key for key in keys if key in attrs]
            require_same(
                attrs, train.attrs, given, f"attrs passed for {out_path} and features {train.path}"
            )
            _check_pair(train.shape, test.shape)
            n_train, dim = train.shape
            out_attrs = dict(attrs)
            out_attrs.setdefault("lds_sign", -1)  # TRAK scores: τ > 0 supports the query
            out_attrs.update({key: train.attrs[key] for key in keys if key in train.attrs})
            out_attrs.update(
                score_kind=options.score_kind,
                form=choose_form(n_train, dim, options.form),
                normalize=options.normalize,
                n_train=n_train,
                n_test=test.shape[0],
                feature_dim=dim,
                train_features={"path": str(train.path), **train.attrs},
                test_features={"path": str(test.path), **test.attrs},
                train_split=train.split(),
                test_split=test.split(),
            )
            yield train, test, out_attrs
        finally:
            test.close()
    finally:
        train.close()


RightBlocks = Iterator[tuple[int, int, np.ndarray, np.ndarray]]


def stream_factors(
    train: FeatureFile,
    test: FeatureFile,
    chunk_rows: int,
    form: str,
    tick: Callable[[], None] = lambda: None,
) -> tuple[np.ndarray, np.ndarray, RightBlocks]:
    """The factors of :func:`factorize` from feature files: (s, left, blocks of right).

    ``blocks`` yields (start, stop, right rows [start, stop) float64, ‖Φ_i‖ of those rows) in
    training-row order; the caller ticks once per block. ``tick`` is called once per chunk of
    the kernel pass.
    """
    stream = _primal_factors if form == "primal" else _dual_factors
    return stream(train, test, chunk_rows, tick)


def _primal_factors(
    train: FeatureFile, test: FeatureFile, chunk_rows: int, tick: Callable[[], None]
) -> tuple[np.ndarray, np.ndarray, RightBlocks]:
    dim = train.shape[1]
    kernel = np.zeros((dim, dim), dtype=np.float64)
    for start, stop in train.chunks(chunk_rows):
        block = train.rows(start, stop)
        kernel += block.T @ block
        tick()
    eigenvalues, basis = _eigh(kernel)
    del kernel
    left = np.empty((test.shape[0], dim), dtype=np.float64)
    for start, stop in test.chunks(chunk_rows):
        left[start:stop] = test.rows(start, stop) @ basis

    def blocks() -> RightBlocks:
        for start, stop in train.chunks(chunk_rows):
            block = train.rows(start, stop)
            yield start, stop, block @ basis, np.linalg.norm(block, axis=1)

    return eigenvalues, left, blocks()


def _dual_factors(
    train: FeatureFile, test: FeatureFile, chunk_rows: int, tick: Callable[[], None]
) -> tuple[np.ndarray, np.ndarray, RightBlocks]:
    n_train, n_test = train.shape[0], test.shape[0]
    psi = np.empty(test.shape, dtype=np.float64)
    for start, stop in test.chunks(chunk_rows):
        psi[start:stop] = test.rows(start, stop)
    gram = np.empty((n_train, n_train), dtype=np.float64)
    cross = np.empty((n_test, n_train), dtype=np.float64)
    blocks = list(train.chunks(chunk_rows))
    for position, (a0, a1) in enumerate(blocks):
        block_a = train.rows(a0, a1)
        cross[:, a0:a1] = psi @ block_a.T
        gram[a0:a1, a0:a1] = block_a @ block_a.T
        for b0, b1 in blocks[position + 1 :]:
            product = block_a @ train.rows(b0, b1).T
            gram[a0:a1, b0:b1] = product
            gram[b0:b1, a0:a1] = product.T
        tick()
    del psi
    all_row_norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    eigenvalues, basis = _eigh(gram)
    del gram
    left = cross @ basis
    del cross

    def right_blocks() -> RightBlocks:
        for start, stop in blocks:
            yield start, stop, basis[start:stop], all_row_norms[start:stop]

    return eigenvalues, left, right_blocks()
