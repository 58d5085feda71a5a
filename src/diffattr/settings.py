"""Settings objects: what a job computes, passed as one frozen, self-validating value.

A rule's ``params`` become one settings object in its script (``FeatureSettings.from_params``),
and the job takes it by keyword (``extract_features(..., settings=..., runtime=...)``), so two
values can no longer be swapped by position. Each class checks its values when it is built and
raises :class:`~diffattr.errors.ConfigError` naming the field, the bad value and what would be
valid, against the library's own registries (output functions, projections, noise schemes).

* :class:`ProjectionSettings`: the random projection of gradients;
* :class:`FeatureSettings`: gradient features of a split (projection, output function, K,
  timesteps, feature noise), with :class:`SplitRows` saying which rows;
* :class:`TrajectoryFeatureSettings`: Journey-TRAK features (projection, output function,
  noise seed);
* :class:`MeasureSettings`, :class:`GenerationSettings`, :class:`LdsSettings`;
* :class:`ScoreSettings` (one score or spectra file), :class:`ScoreGridSettings` (score
  matrices from a spectra file);
* :class:`NoiseSettings` (the feature noise of a job that runs the model outside the feature
  stage) and :class:`EkfacFactorSettings`;
* :class:`Runtime`: performance-only values (batch size, device, threads, progress stream).
  ``Runtime.from_snakemake`` is the one reader of ``snakemake.config`` in the scripts: batch
  sizes are not params, so changing one reruns nothing.

Values are checked, never converted (a YAML ``0`` stays an int), so what a job writes to its
provenance attributes is what the config said. Sequences are stored as tuples. Defaults are the
schema's (:func:`diffattr.schema.schema_default`), written nowhere else.

This module imports no torch at module level (the Snakefile may import it at parse time); the
registries that live in torch modules are imported when a settings object is checked.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

from diffattr.errors import ConfigError
from diffattr.schema import schema_field as _default


def _bad(owner: object, name: str, value: Any, valid: str) -> ConfigError:
    return ConfigError(f"{type(owner).__name__}.{name} = {value!r} is not valid; {valid}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(owner: object, name: str, minimum: int | None = None) -> None:
    value = getattr(owner, name)
    if not _is_int(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise _bad(owner, name, value, f"expected an integer{bound}")


def _check_number(owner: object, name: str, minimum: float | None = None) -> None:
    value = getattr(owner, name)
    if not _is_number(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise _bad(owner, name, value, f"expected a number{bound}")


def _check_choice(owner: object, name: str, valid: Sequence[str]) -> None:
    value = getattr(owner, name)
    if not isinstance(value, str) or value not in valid:
        raise _bad(owner, name, value, f"choose one of: {', '.join(map(repr, valid))}")


def _as_tuple(owner: object, name: str, check: Any, valid: str, allow_none: bool = False) -> None:
    """Check a sequence field (``check(items)``, else ``valid`` says what is) and store it as a
    tuple; a string is not a sequence of values here."""
    value = getattr(owner, name)
    if value is None and allow_none:
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _bad(owner, name, value, f"expected a list; {valid}")
    if not check(value):
        raise _bad(owner, name, value, valid)
    object.__setattr__(owner, name, tuple(value))


def _param(params: Any, key: str) -> Any:
    """One value of a rule's ``params`` (a Snakemake ``Params``, a mapping or any object)."""
    if isinstance(params, Mapping):
        return params[key]
    return getattr(params, key)


def _has_param(params: Any, key: str) -> bool:
    if isinstance(params, Mapping):
        return key in params
    try:
        getattr(params, key)
    except (AttributeError, KeyError):
        return False
    return True


class _FromParams:
    """``from_params``: one field per param, named as the field unless ``PARAMS`` renames it."""

    #: field -> param name, where they differ
    PARAMS: ClassVar[dict[str, str]] = {}
    #: fields left at their default when the rule passes no such param
    OPTIONAL_PARAMS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def _values(cls, params: Any) -> dict[str, Any]:
        values, missing = {}, []
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]
            key = cls.PARAMS.get(item.name, item.name)
            if _has_param(params, key):
                values[item.name] = _param(params, key)
            elif item.name not in cls.OPTIONAL_PARAMS:
                missing.append(key)
        if missing:
            raise ConfigError(
                f"{cls.__name__}.from_params: the rule passes no param {', '.join(missing)}; "
                f"it needs {', '.join(cls._needed())}"
            )
        return values

    @classmethod
    def _needed(cls) -> list[str]:
        return [
            cls.PARAMS.get(f.name, f.name)
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.name not in cls.OPTIONAL_PARAMS
        ]

    @classmethod
    def from_params(cls, params: Any) -> Any:
        """The settings of a rule's ``params`` (attribute- or key-accessible)."""
        return cls(**cls._values(params))


# --------------------------------------------------------------------------- features


@dataclass(frozen=True, kw_only=True)
class ProjectionSettings(_FromParams):
    """The seeded projection of every feature producer (``features.proj_*``, docs/projection.md)."""

    proj_kind: str = _default("features.proj_kind")
    proj_dim: int = _default("features.proj_dim")
    proj_seed: int = _default("features.proj_seed")
    projection: str = _default("features.projection")
    allocation: str = _default("features.structured_allocation")

    PARAMS: ClassVar[dict[str, str]] = {"allocation": "proj_allocation"}

    def __post_init__(self) -> None:
        from diffattr.projection_structured import (
            ALLOCATIONS,
            FEATURE_PROJECTION_KINDS,
            PROJECTIONS,
        )

        _check_choice(self, "proj_kind", FEATURE_PROJECTION_KINDS)
        _check_int(self, "proj_dim", 1)
        _check_int(self, "proj_seed")
        _check_choice(self, "projection", PROJECTIONS)
        _check_choice(self, "allocation", ALLOCATIONS)

    def projector(self, model: Any) -> Any:
        """The projector of ``model``'s trainable parameters
        (:func:`diffattr.projection_structured.make_feature_projector`)."""
        from diffattr.projection_structured import make_feature_projector

        return make_feature_projector(
            model, self.proj_dim, self.proj_seed, self.proj_kind, self.projection, self.allocation
        )


def _check_output_fn(owner: object, name: str, feature_name: bool) -> None:
    from diffattr.features import parse_feature_name
    from diffattr.outputs import canonical_name

    value = getattr(owner, name)
    if not isinstance(value, str):
        raise _bad(owner, name, value, "expected the name of an output function")
    try:
        canonical_name(parse_feature_name(value)[0] if feature_name else value)
    except ConfigError as error:
        raise _bad(owner, name, value, str(error)) from None


def _check_noise(owner: Any) -> None:
    """The feature-noise fields ``noise_seed``, ``noise`` and its ``reference`` geometry
    (``noise_batch_size`` / ``noise_shard_rows``: >= 1 for that scheme, which uses them)."""
    from diffattr.noise import NOISE_SCHEMES

    _check_int(owner, "noise_seed")
    _check_choice(owner, "noise", NOISE_SCHEMES)
    minimum = 1 if owner.noise == "reference" else 0
    _check_int(owner, "noise_batch_size", minimum)
    _check_int(owner, "noise_shard_rows", minimum)


def _with_noise_geometry(cls: type, params: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the reference geometry of the ``noise_geometry`` param."""
    geometry = _param(params, "noise_geometry")
    if not isinstance(geometry, Mapping) or set(geometry) != {"batch_size", "shard_rows"}:
        raise ConfigError(
            f"{cls.__name__}.from_params: param noise_geometry = {geometry!r}; expected "
            "{'batch_size': ..., 'shard_rows': ...}"
        )
    return {
        **values,
        "noise_batch_size": geometry["batch_size"],
        "noise_shard_rows": geometry["shard_rows"],
    }


@dataclass(frozen=True, kw_only=True)
class FeatureSettings(ProjectionSettings):
    """What a gradient-feature file is (rules ``extract_query_features`` /
    ``extract_train_features``): every value but the rows, the model and the runtime.

    ``output_fn`` is a feature name (an output function, ``_tnorm`` for per-timestep
    normalisation); ``noise`` a scheme of :data:`diffattr.noise.NOISE_SCHEMES`, whose
    ``reference`` geometry is ``noise_batch_size`` / ``noise_shard_rows`` (the rules pass 0 for
    the other schemes, which do not use them)."""

    output_fn: str
    K: int
    t_strategy: str = _default("features.t_strategy")
    noise_seed: int = _default("features.noise_seed")
    noise: str = _default("features.noise")
    noise_batch_size: int = _default("features.reference_noise.batch_size")
    noise_shard_rows: int = _default("features.reference_noise.shard_rows")

    #: the reference geometry comes as one param, ``noise_geometry``
    OPTIONAL_PARAMS: ClassVar[frozenset[str]] = frozenset({"noise_batch_size", "noise_shard_rows"})

    def __post_init__(self) -> None:
        from diffattr.features import TIMESTEP_STRATEGIES

        super().__post_init__()
        _check_output_fn(self, "output_fn", feature_name=True)
        _check_int(self, "K", 1)
        _check_choice(self, "t_strategy", TIMESTEP_STRATEGIES)
        _check_noise(self)

    @classmethod
    def from_params(cls, params: Any) -> FeatureSettings:
        return cls(**_with_noise_geometry(cls, params, cls._values(params)))

    @classmethod
    def _needed(cls) -> list[str]:
        return [*super()._needed(), "noise_geometry"]


@dataclass(frozen=True, kw_only=True)
class TrajectoryFeatureSettings(ProjectionSettings):
    """Journey-TRAK features (rule ``extract_trajectory_features``): the timesteps are the
    recorded trajectory's, the noise is keyed by sample id."""

    output_fn: str
    noise_seed: int = _default("features.noise_seed")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_output_fn(self, "output_fn", feature_name=False)
        _check_int(self, "noise_seed")


@dataclass(frozen=True, kw_only=True)
class SplitRows(_FromParams):
    """Which rows a feature job takes: shard ``shard`` of ``num_shards`` of ``split`` (``gen``
    is read from ``samples_path``)."""

    split: str
    samples_path: str | None = None
    shard: int = 0
    num_shards: int = 1

    OPTIONAL_PARAMS: ClassVar[frozenset[str]] = frozenset({"samples_path"})

    def __post_init__(self) -> None:
        from diffattr.queries import SPLITS

        _check_choice(self, "split", SPLITS)
        if self.split == "gen" and self.samples_path is None:
            raise _bad(self, "samples_path", None, "split 'gen' needs the generated samples file")
        _check_int(self, "num_shards", 1)
        _check_int(self, "shard", 0)
        if self.shard >= self.num_shards:
            raise _bad(self, "shard", self.shard, f"expected 0..{self.num_shards - 1}")

    @classmethod
    def from_params(cls, params: Any, samples_path: str | None = None) -> SplitRows:
        return cls(**{**cls._values(params), "samples_path": samples_path})


# --------------------------------------------------------------------------- other stages


@dataclass(frozen=True, kw_only=True)
class MeasureSettings(_FromParams):
    """The measured outputs of a model (rule ``measure_outputs``): ``output`` is a canonical
    name of :mod:`diffattr.outputs` (the rule passes it only when it is not the default, so that
    results measured before the key existed rerun nothing)."""

    splits: tuple[str, ...]
    timesteps: int = _default("measure.timesteps")
    noise_seeds: tuple[int, ...] = _default("measure.noise_seeds")
    output: str = _default("measure.output")

    OPTIONAL_PARAMS: ClassVar[frozenset[str]] = frozenset({"output"})

    def __post_init__(self) -> None:
        from diffattr.outputs import OUTPUT_FUNCTIONS
        from diffattr.queries import SPLITS

        _check_choice(self, "output", OUTPUT_FUNCTIONS)

        _as_tuple(
            self,
            "splits",
            lambda v: bool(v) and all(s in SPLITS for s in v),
            f"expected splits among {list(SPLITS)}",
        )
        _as_tuple(
            self,
            "noise_seeds",
            lambda v: bool(v) and all(_is_int(s) for s in v),
            "expected a non-empty list of integers",
        )
        _check_int(self, "timesteps", 1)


@dataclass(frozen=True, kw_only=True)
class GenerationSettings(_FromParams):
    """The generated query set (rule ``generate_samples``)."""

    num_samples: int = _default("generation.num_samples")
    steps: int = _default("generation.steps")
    eta: float = _default("generation.eta")
    seed: int = _default("generation.seed")
    grid_columns: int = _default("generation.grid_columns")
    guidance_scale: float = _default("generation.guidance_scale")
    prompts: tuple[str, ...] | None = _default("generation.prompts")

    def __post_init__(self) -> None:
        for name in ("num_samples", "steps", "grid_columns"):
            _check_int(self, name, 1)
        _check_int(self, "seed")
        _check_number(self, "eta", 0)
        _check_number(self, "guidance_scale", 0)
        _as_tuple(
            self,
            "prompts",
            lambda v: bool(v) and all(isinstance(p, str) for p in v),
            "expected null or a non-empty list of text",
            allow_none=True,
        )


@dataclass(frozen=True, kw_only=True)
class LdsSettings(_FromParams):
    """One LDS evaluation (rule ``evaluate_lds``): the query split, the bootstrap, the λ grid
    (``lambdas``: None or empty for methods without λ) and an optional ``sign`` overriding the
    score file's ``lds_sign``."""

    split: str
    bootstrap_resamples: int = _default("lds.bootstrap_resamples")
    bootstrap_seed: int = _default("lds.bootstrap_seed")
    lambdas: tuple[float, ...] | None = None
    sign: int | None = None

    OPTIONAL_PARAMS: ClassVar[frozenset[str]] = frozenset({"sign"})

    def __post_init__(self) -> None:
        from diffattr.queries import QUERY_SPLITS

        _check_choice(self, "split", QUERY_SPLITS)
        _check_int(self, "bootstrap_resamples", 2)
        _check_int(self, "bootstrap_seed")
        _as_tuple(
            self,
            "lambdas",
            lambda v: all(_is_number(x) and 0 < x < float("inf") for x in v),
            "expected null or finite numbers > 0 (empty: a method without λ)",
            allow_none=True,
        )
        if self.sign is not None and (not _is_int(self.sign) or self.sign not in (-1, 1)):
            raise _bad(self, "sign", self.sign, "expected -1, +1 or None (the file's lds_sign)")

    def lambda_list(self) -> list[float] | None:
        return None if self.lambdas is None else list(self.lambdas)


@dataclass(frozen=True, kw_only=True)
class NoiseSettings(_FromParams):
    """The training features' noise in a job that runs the model outside ``extract_features``
    (the EK-FAC factors and scores): the seed, the scheme of
    :data:`diffattr.noise.NOISE_SCHEMES` and its ``reference`` geometry (the param
    ``noise_geometry``; the rules pass 0 for the other schemes), as in
    :class:`FeatureSettings`."""

    noise_seed: int = _default("features.noise_seed")
    noise: str = _default("features.noise")
    noise_batch_size: int = _default("features.reference_noise.batch_size")
    noise_shard_rows: int = _default("features.reference_noise.shard_rows")

    OPTIONAL_PARAMS: ClassVar[frozenset[str]] = frozenset({"noise_batch_size", "noise_shard_rows"})

    def __post_init__(self) -> None:
        _check_noise(self)

    @classmethod
    def from_params(cls, params: Any) -> NoiseSettings:
        return cls(**_with_noise_geometry(cls, params, cls._values(params)))

    @classmethod
    def _needed(cls) -> list[str]:
        return [*super()._needed(), "noise_geometry"]

    def keys(self, split: str, ids: Any) -> Any:
        """One uint64 noise key per row of a whole split (:func:`diffattr.noise.feature_noise_keys`,
        rows at positions 0..n-1)."""
        import numpy as np

        from diffattr.noise import feature_noise_keys

        return feature_noise_keys(
            self.noise,
            split,
            ids,
            np.arange(len(ids)),
            self.noise_batch_size,
            self.noise_shard_rows,
        )

    def attrs(self) -> dict[str, Any]:
        """The noise provenance of a file (:func:`diffattr.noise.feature_noise_attrs`)."""
        from diffattr.noise import feature_noise_attrs

        return feature_noise_attrs(self.noise, self.noise_batch_size, self.noise_shard_rows)


@dataclass(frozen=True, kw_only=True)
class EkfacFactorSettings(_FromParams):
    """The EK-FAC factors of the main model (rule ``fit_ekfac_factors``; the noise is a
    :class:`NoiseSettings`): every training image at ``factor_timesteps`` uniform timesteps
    (param ``T``; each (image, t) pair one example) and kronfluence's ``strategy``."""

    factor_timesteps: int
    strategy: str

    PARAMS: ClassVar[dict[str, str]] = {"factor_timesteps": "T"}

    def __post_init__(self) -> None:
        from diffattr.ekfac import STRATEGIES

        _check_int(self, "factor_timesteps", 1)
        _check_choice(self, "strategy", STRATEGIES)


def _positive_numbers(values: Sequence[Any]) -> bool:
    return all(_is_number(x) and 0 < x < float("inf") for x in values)


@dataclass(frozen=True, kw_only=True)
class ScoreSettings(_FromParams):
    """One score (or spectra) file (rules ``score_method`` and ``factor_method``): the method's
    name, kind and params, its ``K`` (0: a method without timesteps) and query split, the λ grid
    (empty for a method without λ and for a spectra file), the training rows read at a time,
    and ``model_settings`` (param ``settings``): the feature stage's values for a kind that runs
    the model (``device``, ``noise_seed``, ``t_strategy``, ``reference_noise``), else empty.

    The kind is checked against the method registry when the job looks it up
    (:func:`diffattr.methods.get_method`; importing the registry here would make a cycle)."""

    method: str
    kind: str
    params: Mapping[str, Any]
    K: int
    split: str
    lambdas: tuple[float, ...] = ()
    chunk_rows: int = _default("scoring.chunk_rows")
    model_settings: Mapping[str, Any] = field(default_factory=dict)

    PARAMS: ClassVar[dict[str, str]] = {"model_settings": "settings"}

    def __post_init__(self) -> None:
        from diffattr.queries import QUERY_SPLITS

        for name in ("method", "kind"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise _bad(self, name, getattr(self, name), f"expected the method's {name} name")
        for name in ("params", "model_settings"):
            if not isinstance(getattr(self, name), Mapping):
                raise _bad(self, name, getattr(self, name), "expected a mapping")
        _check_int(self, "K", 0)
        _check_choice(self, "split", QUERY_SPLITS)
        _as_tuple(self, "lambdas", _positive_numbers, "expected finite numbers > 0 (or none)")
        _check_int(self, "chunk_rows", 1)


@dataclass(frozen=True, kw_only=True)
class ScoreGridSettings(_FromParams):
    """Score matrices from a spectra file (rules ``select_scores`` and ``score_grid``): the λ
    grid and the training rows read at a time."""

    lambdas: tuple[float, ...] = _default("scoring.lambdas")
    chunk_rows: int = _default("scoring.chunk_rows")

    def __post_init__(self) -> None:
        _as_tuple(
            self,
            "lambdas",
            lambda v: bool(v) and _positive_numbers(v),
            "expected a non-empty list of finite numbers > 0",
        )
        _check_int(self, "chunk_rows", 1)


# --------------------------------------------------------------------------- runtime


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Values that change speed and memory, never results: the batch size, the device, the
    number of threads and where progress is written.

    ``device`` is also a param of every rule that has one (``config["device"]``), so that a new
    device reruns those jobs; the batch sizes are not params."""

    batch_size: int
    device: str = _default("device")
    threads: int = 1
    progress: IO[str] | None = field(default=None, compare=False, repr=False)

    #: config groups with a ``batch_size``
    GROUPS: ClassVar[tuple[str, ...]] = ("features", "measure", "generation", "clip")

    def __post_init__(self) -> None:
        _check_int(self, "batch_size", 1)
        _check_int(self, "threads", 1)
        if not isinstance(self.device, str) or not self.device:
            raise _bad(
                self, "device", self.device, "expected a torch device name (auto, cpu, cuda)"
            )

    @classmethod
    def from_snakemake(cls, snakemake: Any, group: str) -> Runtime:
        """The runtime of a job: ``config[group]["batch_size"]``, the rule's ``device`` param
        (else ``config["device"]``) and its threads."""
        if group not in cls.GROUPS:
            raise ConfigError(
                f"Runtime.from_snakemake: group {group!r} has no batch size; choose one of: "
                f"{', '.join(cls.GROUPS)}"
            )
        config = snakemake.config
        params = snakemake.params
        device = _param(params, "device") if _has_param(params, "device") else config["device"]
        return cls(batch_size=config[group]["batch_size"], device=device, threads=snakemake.threads)

    def logging_to(self, progress: IO[str] | None) -> Runtime:
        """This runtime, writing progress to ``progress`` (the job's log)."""
        return dataclasses.replace(self, progress=progress)


#: Every settings class with a ``from_params``.
SETTINGS_CLASSES: tuple[type, ...] = (
    ProjectionSettings,
    FeatureSettings,
    TrajectoryFeatureSettings,
    SplitRows,
    MeasureSettings,
    GenerationSettings,
    LdsSettings,
    NoiseSettings,
    EkfacFactorSettings,
    ScoreSettings,
    ScoreGridSettings,
)

__all__ = [
    "SETTINGS_CLASSES",
    "EkfacFactorSettings",
    "FeatureSettings",
    "GenerationSettings",
    "LdsSettings",
    "MeasureSettings",
    "NoiseSettings",
    "ProjectionSettings",
    "Runtime",
    "ScoreGridSettings",
    "ScoreSettings",
    "SplitRows",
    "TrajectoryFeatureSettings",
]
