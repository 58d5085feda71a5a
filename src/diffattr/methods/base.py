"""What every attribution method shares: its declaration, its inputs, and the score file it writes.

A method *kind* (``trak``, ``tracin``, ``datamodels``, ...) is a :class:`Method` subclass
registered with :func:`register`. It declares

* ``params``: its config keys, each a :class:`Param` with a default (or required) and a check;
* ``uses_K`` / ``uses_lambdas`` / ``lds_sign`` / ``query_splits`` / ``needs_retrain_pool``;
* :meth:`Method.needs`: the files it reads, as :class:`Need` records that ``rules/common.smk``
  turns into paths (the library never spells the results layout);
* :meth:`Method.score`: reads those files and writes one score file.

Every score file has the layout of :mod:`diffattr.files` (:class:`~diffattr.files.ScoreFile`): ``scores``
[L, n, N], ``lambdas`` [L], ``train_ids`` [N], ``test_ids`` [n]. Methods without a ridge λ
store L = 1 with λ = 0 ("no λ"). The attrs ``method``, ``kind``, ``K`` (0 for methods that use
no timesteps), ``split``, ``params`` and ``lds_sign`` (+1 for scores in loss units, −1 for
"τ > 0 supports the query") travel to ``evaluate_lds``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from diffattr.errors import ConfigError, FeatureMismatchError
from diffattr.files import Scores, write_scores

#: λ recorded for methods without a ridge λ.
NO_LAMBDA = 0.0

#: Files a method may need; ``rules/common.smk`` maps each (with its fields) to a path.
NEED_FILES: dict[str, tuple[str, ...]] = {
    "features": ("ckpt", "fn", "noise", "K", "split"),  # projected gradient features
    "trajectory_features": ("fn",),  # Journey-TRAK gen features of the main model
    "clip_embeddings": ("split",),
    "dataset": (),
    "samples": (),
    "main_model": (),
    "groundtruth": ("pool",),
    "residuals": ("noise", "S"),  # DAS's residual profiles of the training set (diffattr.residuals)
    "ekfac_factors": ("noise", "T", "strategy"),  # kronfluence factors of the main model
}

_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One config key of a method kind."""

    description: str
    default: Any = _REQUIRED
    check: Callable[[Any], str | None] | None = None  # error text, or None when valid

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class Need:
    """One input file of a scorer: a kind of file (:data:`NEED_FILES`) and its fields."""

    file: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.file not in NEED_FILES:
            raise ConfigError(f"unknown input file kind {self.file!r}; valid: {sorted(NEED_FILES)}")
        if set(self.fields) != set(NEED_FILES[self.file]):
            raise ConfigError(
                f"input {self.file!r} needs fields {list(NEED_FILES[self.file])}, "
                f"got {sorted(self.fields)}"
            )


#: The feature-noise scheme of a method whose config does not name one (the schema default of
#: ``features.noise``; docs/noise.md says why).
DEFAULT_NOISE = "common"


def method_noise(params: Mapping[str, Any]) -> str:
    """The feature-noise tag of a method's params: its scheme (``noise``, filled from
    ``features.noise``), with ``-s<seed>`` when the method sets its own ``noise_seed``."""
    from diffattr.noise import noise_tag

    return noise_tag(params.get("noise", DEFAULT_NOISE), params.get("noise_seed"))


def features_need(ckpt: str, fn: str, K: int, split: str, noise: str = DEFAULT_NOISE) -> Need:
    """Gradient features of one (checkpoint, f, noise scheme, K, split)."""
    return Need("features", {"ckpt": ckpt, "fn": fn, "noise": noise, "K": K, "split": split})


@dataclass
class ScoreJob:
    """Everything one scoring job knows: the method's config, its wildcards and its inputs."""

    method: str
    kind: str
    params: dict[str, Any]
    K: int
    split: str
    inputs: dict[str, list[str]]
    out_path: str
    lambdas: list[float] = field(default_factory=list)
    chunk_rows: int = 4096
    progress: Any = None  # a text stream (the job's log) for progress bars, or None
    #: device, noise_seed, t_strategy for kinds that run the model (``uses_model``), else {}
    settings: dict[str, Any] = field(default_factory=dict)

    def input(self, name: str) -> list[str]:
        if name not in self.inputs:
            raise ConfigError(
                f"method {self.method!r} (kind {self.kind!r}) got no input {name!r}; "
                f"it has {sorted(self.inputs)}"
            )
        return self.inputs[name]

    def one_input(self, name: str) -> str:
        paths = self.input(name)
        if len(paths) != 1:
            raise ConfigError(
                f"method {self.method!r}: input {name!r} must be one file, got {paths}"
            )
        return paths[0]


class Method:
    """Base class of a method kind; subclasses set the class attributes and implement ``score``."""

    kind: ClassVar[str]
    summary: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    uses_K: ClassVar[bool] = True
    uses_lambdas: ClassVar[bool] = False
    lds_sign: ClassVar[int] = -1
    query_splits: ClassVar[tuple[str, ...]] = ("val", "gen")
    needs_retrain_pool: ClassVar[bool] = False
    #: Runs the model in its scoring job (gets ``ScoreJob.settings`` and the device).
    uses_model: ClassVar[bool] = False

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        """Named lists of input files for one (K, query split)."""
        raise NotImplementedError

    def score(self, job: ScoreJob) -> None:
        """Compute the scores of ``job`` and write them to ``job.out_path``."""
        raise NotImplementedError

    def writes_spectra(self, params: Mapping[str, Any]) -> bool:
        """Whether ``score`` writes a spectra file (:mod:`diffattr.spectral`: the λ grid is
        evaluated from one factorisation and scores are written only at the λ used) rather
        than a score file."""
        return False

    def retrain_models(self, params: Mapping[str, Any]) -> int:
        """How many retrain-pool models the method uses (0 if none)."""
        return 0

    def unavailable_reason(self, config: Mapping[str, Any]) -> str | None:
        """Why the method cannot run on this machine (then it is skipped), or None."""
        return None

    def score_attrs(self, job: ScoreJob) -> dict[str, Any]:
        """Provenance stamped on every score file of this method."""
        return {
            "method": job.method,
            "kind": self.kind,
            "K": int(job.K),
            "split": job.split,
            "params": dict(job.params),
            "lds_sign": int(self.lds_sign),
        }

    def write_score_grid(
        self,
        job: ScoreJob,
        scores: np.ndarray,
        lambdas: Sequence[float],
        train_ids: np.ndarray,
        test_ids: np.ndarray,
        extra_attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Write [L, n, N] (or one [n, N] matrix, stored as L = 1) to ``job.out_path`` with this
        method's provenance (:meth:`score_attrs`)."""
        grid = np.asarray(scores, dtype=np.float32)
        if grid.ndim == 2:
            grid = grid[None]
        lambdas = np.asarray(lambdas, dtype=np.float64).reshape(-1)
        expected = (lambdas.size, len(test_ids), len(train_ids))
        if grid.shape != expected:
            raise FeatureMismatchError(
                f"{job.method}: scores {grid.shape} do not match [L, n, N] = {expected}"
            )
        attrs = {
            **self.score_attrs(job),
            "score_kind": self.kind,
            "n_train": int(grid.shape[2]),
            "n_test": int(grid.shape[1]),
            **(extra_attrs or {}),
        }
        write_scores(job.out_path, Scores(grid, lambdas, train_ids, test_ids, attrs))


_REGISTRY: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method kind selectable in the config by its ``kind``."""
    if cls.kind in _REGISTRY:
        raise ConfigError(f"method kind {cls.kind!r} is registered twice")
    _REGISTRY[cls.kind] = cls()
    return cls


def get_method(kind: str) -> Method:
    """The registered method of ``kind``; ConfigError naming the valid kinds otherwise."""
    if kind not in _REGISTRY:
        raise ConfigError(
            f"unknown method kind {kind!r}; valid kinds are: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[kind]


def method_kinds() -> list[str]:
    return sorted(_REGISTRY)


# --------------------------------------------------------------------------- param checks


def positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"must be a positive integer, got {value!r}"
    return None


def positive_numbers(value: Any) -> str | None:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return f"must be a non-empty list of positive numbers, got {value!r}"
    return None


def one_of(*valid: Any) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value not in valid:
            return f"must be one of {list(valid)}, got {value!r}"
        return None

    return check
