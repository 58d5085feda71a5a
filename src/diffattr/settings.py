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
* :class:`MeasureSettings`, :class:`GenerationSettings`, :class:`LdsSettings`,
  :class:`SubsetSettings`;
* :class:`ScoreSettings` (one score or spectra file), :class:`ScoreGridSettings` (score
  matrices from a spectra file);
* :class:`TrainingSettings` (the optimisation) within :class:`TrainingRecipe` (model,
  scheduler, optimisation);
* :class:`ResidualSettings` and :class:`EkfacFactorSettings`, passes over the train split with
  the training features' noise (:class:`FeatureNoiseSettings`);
* counterfactual: :class:`CounterfactualLambdaSettings`, :class:`RemovalSettings`,
  :class:`CounterfactualMetricSettings`, :class:`CounterfactualFigureSettings`;
* results and checks: :class:`SummarySettings`, :class:`AgreementSettings`,
  :class:`FindingsSettings`, :class:`AttributionGridSettings`;
* :class:`Runtime`: performance-only values (batch size, device, threads, progress stream).
  ``Runtime.from_snakemake`` is the one reader of ``snakemake.config`` in the scripts: batch
  sizes are not params, so changing one reruns nothing. :class:`TrainingRuntime` is a training
  job's (checkpoint and staging folders, threads, progress stream).

Values are checked, never converted (a YAML ``0`` stays an int), so what a job writes to its
provenance attributes is what the config said. Sequences are stored as tuples. Defaults are the
schema's (:func:`diffattr.schema.schema_default`), written nowhere else.

This module imports no torch at module level (the Snakefile may import it at parse time); the
registries that live in torch modules are imported when a settings object is checked.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
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
    def _renames(cls) -> dict[str, str]:
        """``PARAMS`` of the class and of every settings class it derives from."""
        merged: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("PARAMS", {}))
        return merged

    @classmethod
    def _optional(cls) -> frozenset[str]:
        """``OPTIONAL_PARAMS`` of the class and of every settings class it derives from."""
        return frozenset().union(*(vars(k).get("OPTIONAL_PARAMS", ()) for k in cls.__mro__))

    @classmethod
    def _values(cls, params: Any) -> dict[str, Any]:
        values, missing = {}, []
        renames, optional = cls._renames(), cls._optional()
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]
            key = renames.get(item.name, item.name)
            if _has_param(params, key):
                values[item.name] = _param(params, key)
            elif item.name not in optional:
                missing.append(key)
        if missing:
            raise ConfigError(
                f"{cls.__name__}.from_params: the rule passes no param {', '.join(missing)}; "
                f"it needs {', '.join(cls._needed())}"
            )
        return values

    @classmethod
    def _needed(cls) -> list[str]:
        renames, optional = cls._renames(), cls._optional()
        return [
            renames.get(f.name, f.name)
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.name not in optional
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
    mixing: int = _default("features.structured_mixing")
    mixer: str = _default("features.structured_mixer")

    PARAMS: ClassVar[dict[str, str]] = {
        "allocation": "proj_allocation",
        "mixing": "proj_mixing",
        "mixer": "proj_mixer",
    }
    #: rules pass ``proj_mixing`` and ``proj_mixer`` only where they differ from the defaults,
    #: so that dense runs keep their params when the defaults change
    OPTIONAL_PARAMS: ClassVar[frozenset[str]] = frozenset({"mixing", "mixer"})

    def __post_init__(self) -> None:
        from diffattr.projection_structured import (
            ALLOCATIONS,
            FEATURE_PROJECTION_KINDS,
            MIXERS,
            PROJECTIONS,
        )

        _check_choice(self, "proj_kind", FEATURE_PROJECTION_KINDS)
        _check_int(self, "proj_dim", 1)
        _check_int(self, "proj_seed")
        _check_choice(self, "projection", PROJECTIONS)
        _check_choice(self, "allocation", ALLOCATIONS)
        _check_int(self, "mixing", 1)
        _check_choice(self, "mixer", MIXERS)

    def projector(self, model: Any, calibrate: Any = None) -> Any:
        """The projector of ``model``'s trainable parameters
        (:func:`diffattr.projection_structured.make_feature_projector`; ``calibrate``, e.g.
        :func:`diffattr.calibration.train_calibration`, for the ``energy`` allocation)."""
        from diffattr.projection_structured import Split, make_feature_projector

        split = Split(self.allocation, calibrate, self.mixing, self.mixer)
        return make_feature_projector(
            model, self.proj_dim, self.proj_seed, self.proj_kind, self.projection, split
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


def _check_feature_noise(owner: Any) -> None:
    """The feature noise of ``owner``: ``noise_seed``, the scheme ``noise`` and its reference
    geometry ``noise_batch_size`` / ``noise_shard_rows`` (0 where the scheme does not use it)."""
    from diffattr.noise import NOISE_SCHEMES

    _check_int(owner, "noise_seed")
    _check_choice(owner, "noise", NOISE_SCHEMES)
    minimum = 1 if owner.noise == "reference" else 0
    _check_int(owner, "noise_batch_size", minimum)
    _check_int(owner, "noise_shard_rows", minimum)


def _with_noise_geometry(cls: Any, params: Any) -> dict[str, Any]:
    """``cls``'s values from ``params``, the reference geometry from the one param
    ``noise_geometry`` (``{'batch_size': ..., 'shard_rows': ...}``)."""
    values = cls._values(params)
    geometry = _param(params, "noise_geometry")
    if not isinstance(geometry, Mapping) or set(geometry) != {"batch_size", "shard_rows"}:
        raise ConfigError(
            f"{cls.__name__}.from_params: param noise_geometry = {geometry!r}; expected "
            "{'batch_size': ..., 'shard_rows': ...}"
        )
    values["noise_batch_size"] = geometry["batch_size"]
    values["noise_shard_rows"] = geometry["shard_rows"]
    return values


@dataclass(frozen=True, kw_only=True)
class FeatureNoiseSettings(_FromParams):
    """The features' noise: ``noise_seed`` and the scheme ``noise``, whose ``reference``
    geometry comes as the param ``noise_geometry``. Part of :class:`FeatureSettings`, and the
    settings of the jobs that run the model outside ``extract_features`` with the features'
    noise (DAS's residuals, the EK-FAC factors and scores)."""

    noise_seed: int = _default("features.noise_seed")
    noise: str = _default("features.noise")
    noise_batch_size: int = _default("features.reference_noise.batch_size")
    noise_shard_rows: int = _default("features.reference_noise.shard_rows")

    OPTIONAL_PARAMS: ClassVar[frozenset[str]] = frozenset({"noise_batch_size", "noise_shard_rows"})

    def __post_init__(self) -> None:
        _check_feature_noise(self)

    @classmethod
    def from_params(cls, params: Any) -> Any:
        return cls(**_with_noise_geometry(cls, params))

    @classmethod
    def _needed(cls) -> list[str]:
        return [*super()._needed(), "noise_geometry"]

    def noise_keys(self, ids: Any, split: str = "train") -> Any:
        """One uint64 noise key per row of a whole split (rows ``ids`` at positions 0..n-1, in
        order; :func:`diffattr.noise.feature_noise_keys`)."""
        import numpy as np

        from diffattr.noise import feature_noise_keys

        positions = np.arange(len(ids))
        return feature_noise_keys(
            self.noise, split, ids, positions, self.noise_batch_size, self.noise_shard_rows
        )

    def noise_attrs(self) -> dict[str, Any]:
        """The scheme's provenance attributes (:func:`diffattr.noise.feature_noise_attrs`)."""
        from diffattr.noise import feature_noise_attrs

        return feature_noise_attrs(self.noise, self.noise_batch_size, self.noise_shard_rows)


@dataclass(frozen=True, kw_only=True)
class FeatureSettings(ProjectionSettings, FeatureNoiseSettings):
    """What a gradient-feature file is (rules ``extract_query_features`` /
    ``extract_train_features``): every value but the rows, the model and the runtime.

    ``output_fn`` is a feature name (an output function, ``_tnorm`` for per-timestep
    normalisation); ``noise`` a scheme of :data:`diffattr.noise.NOISE_SCHEMES`, whose
    ``reference`` geometry is ``noise_batch_size`` / ``noise_shard_rows`` (the rules pass 0 for
    the other schemes, which do not use them)."""

    output_fn: str
    K: int
    t_strategy: str = _default("features.t_strategy")

    def __post_init__(self) -> None:
        from diffattr.features import TIMESTEP_STRATEGIES

        super().__post_init__()
        _check_output_fn(self, "output_fn", feature_name=True)
        _check_int(self, "K", 1)
        _check_choice(self, "t_strategy", TIMESTEP_STRATEGIES)
        _check_feature_noise(self)


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


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, kw_only=True)
class SubsetSettings(_FromParams):
    """Subset ``k`` of an LDS pool (rule ``draw_subset``): ``alpha`` of the train split, drawn
    from ``SeedSequence([pool_seed, k])``, stratified by class or not."""

    pool: str
    k: int
    alpha: float = _default("subsets.alpha")
    pool_seed: int
    stratify: bool = _default("data.stratify")

    def __post_init__(self) -> None:
        if not isinstance(self.pool, str) or not self.pool:
            raise _bad(self, "pool", self.pool, "expected the name of a pool")
        _check_int(self, "k", 0)
        if not _is_number(self.alpha) or not 0 < self.alpha < 1:
            raise _bad(self, "alpha", self.alpha, "expected a fraction strictly between 0 and 1")
        _check_int(self, "pool_seed", 0)
        if not isinstance(self.stratify, bool):
            raise _bad(self, "stratify", self.stratify, "expected true or false")


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation hyperparameters (the paper's CIFAR values are in experiments/cifar2.yaml).

    Defaults are the schema's ``training.*`` (``seed``: ``training.main_seed``; ``device``: the
    top-level ``device``); the workflow passes every value from the validated config."""

    epochs: int
    batch_size: int
    lr: float = _default("training.lr")
    adam_beta1: float = _default("training.adam_beta1")
    adam_beta2: float = _default("training.adam_beta2")
    weight_decay: float = _default("training.weight_decay")
    adam_eps: float = _default("training.adam_eps")
    max_grad_norm: float = _default("training.max_grad_norm")
    warmup_fraction: float = _default("training.warmup_fraction")
    random_flip: bool = _default("training.random_flip")
    seed: int = _default("training.main_seed")
    checkpoint_every: int = _default("training.checkpoint_every")
    device: str = _default("device")
    caption_dropout: float = _default("training.caption_dropout")
    mixed_precision: str = _default("training.mixed_precision")
    ema_decay: float = _default("training.ema_decay")

    def __post_init__(self) -> None:
        from diffattr.models import PRECISIONS

        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"training.{name} = {getattr(self, name)} must be at least 1")
        if self.lr <= 0:
            raise ConfigError(f"training.lr = {self.lr} must be positive")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(
                f"training.warmup_fraction = {self.warmup_fraction} must lie in [0, 1)"
            )
        if not 0 <= self.caption_dropout < 1:
            raise ConfigError(
                f"training.caption_dropout = {self.caption_dropout} must lie in [0, 1)"
            )
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(
                f"training.ema_decay = {self.ema_decay} must lie in [0, 1) (0 = no EMA)"
            )
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(
                f"training.mixed_precision = {self.mixed_precision!r}; choose no, fp16 or bf16"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> TrainingSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; valid: {sorted(known)}")
        return cls(**{**values, **overrides})

    @classmethod
    def from_params(cls, params: Any) -> TrainingSettings:
        """The settings of a training rule: its ``training`` block (less ``main_seed``), with
        the model's ``seed`` and the ``device``."""
        values = {k: v for k, v in _param(params, "training").items() if k != "main_seed"}
        return cls.from_dict(
            values, seed=int(_param(params, "seed")), device=_param(params, "device")
        )


@dataclass(frozen=True, kw_only=True)
class TrainingRecipe:
    """What a training job computes (rules ``train_main``, ``train_subset``,
    ``train_counterfactual``): the model (the config's ``model`` block), its noise scheduler
    (``scheduler``; an ``sd_lora`` model uses its base's) and the optimisation, seed included."""

    model: Mapping[str, Any]
    scheduler: Mapping[str, Any]
    training: TrainingSettings

    def __post_init__(self) -> None:
        from diffattr.models import MODEL_KINDS

        for name in ("model", "scheduler"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise _bad(self, name, value, f"expected a mapping (the config's {name} block)")
        kind = self.model.get("kind", "unet")
        if kind not in MODEL_KINDS:
            raise _bad(
                self, "model", self.model, f"model.kind: choose one of: {', '.join(MODEL_KINDS)}"
            )
        if not isinstance(self.training, TrainingSettings):
            raise _bad(self, "training", self.training, "expected a TrainingSettings")

    @classmethod
    def from_params(cls, params: Any) -> TrainingRecipe:
        """The recipe of a training rule: its params ``model``, ``scheduler``, ``training``,
        ``seed`` and ``device``."""
        return cls(
            model=_param(params, "model"),
            scheduler=_param(params, "scheduler"),
            training=TrainingSettings.from_params(params),
        )


# --------------------------------------------------------------------------- model passes


@dataclass(frozen=True, kw_only=True)
class ResidualSettings(FeatureNoiseSettings):
    """DAS's residual profiles (rule ``compute_residuals``): ``S`` uniform timesteps."""

    S: int

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int(self, "S", 1)


@dataclass(frozen=True, kw_only=True)
class EkfacFactorSettings(FeatureNoiseSettings):
    """The EK-FAC factors of the main model (rule ``fit_ekfac_factors``): ``factor_timesteps``
    uniform timesteps per training image (the param ``T``) and the preconditioner
    ``strategy`` (:data:`diffattr.ekfac.STRATEGIES`)."""

    factor_timesteps: int
    strategy: str

    PARAMS: ClassVar[dict[str, str]] = {"factor_timesteps": "T"}

    def __post_init__(self) -> None:
        from diffattr.ekfac import STRATEGIES

        super().__post_init__()
        _check_int(self, "factor_timesteps", 1)
        _check_choice(self, "strategy", STRATEGIES)


# --------------------------------------------------------------------------- scores


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


# --------------------------------------------------------------------------- counterfactual


def _check_name(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if not isinstance(value, str) or not value:
        raise _bad(owner, name, value, "expected a non-empty name")


def _check_names(owner: object, name: str) -> None:
    _as_tuple(
        owner,
        name,
        lambda v: bool(v) and all(isinstance(m, str) and m for m in v),
        "expected a non-empty list of names",
    )


@dataclass(frozen=True, kw_only=True)
class CounterfactualLambdaSettings(_FromParams):
    """The held-out λ of one scored method (rule ``choose_counterfactual_lambda``): the method,
    the K of its score file and its λ grid (None or empty for a method without λ)."""

    method: str
    K: int
    lambdas: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _check_name(self, "method")
        _check_int(self, "K", 0)
        _as_tuple(
            self,
            "lambdas",
            lambda v: all(_is_number(x) and 0 < x < float("inf") for x in v),
            "expected null or finite numbers > 0 (empty: a method without λ)",
            allow_none=True,
        )

    def lambda_list(self) -> list[float] | None:
        return None if self.lambdas is None else list(self.lambdas)


@dataclass(frozen=True, kw_only=True)
class RemovalSettings(_FromParams):
    """One removal set (rule ``remove_top_examples``): the ``target``'s top rows by ``method``'s
    scores (``random``: seeded random scores), ``top_k`` rows, or ``top_fraction`` of them."""

    method: str
    target: int
    top_k: int | None = _default("counterfactual.top_k")
    top_fraction: float = _default("counterfactual.top_fraction")
    random_seed: int = _default("counterfactual.random_seed")

    def __post_init__(self) -> None:
        _check_name(self, "method")
        _check_int(self, "target", 0)
        if self.top_k is not None:
            _check_int(self, "top_k", 1)
        if not _is_number(self.top_fraction) or not 0 < self.top_fraction < 1:
            raise _bad(self, "top_fraction", self.top_fraction, "expected a number in (0, 1)")
        _check_int(self, "random_seed")


@dataclass(frozen=True, kw_only=True)
class CounterfactualMetricSettings(_FromParams):
    """How a regeneration is compared with its original (rule ``compare_counterfactual``):
    ``metrics`` of :data:`diffattr.counterfactual.METRICS`; ``clip`` needs ``clip_weights``
    (None: the CLIP metric is left out and the record says so)."""

    metrics: tuple[str, ...] = _default("counterfactual.metrics")
    clip_weights: str | None = _default("clip.weights")

    def __post_init__(self) -> None:
        from diffattr.counterfactual import METRICS

        _as_tuple(
            self,
            "metrics",
            lambda v: bool(v) and all(m in METRICS for m in v),
            f"expected a non-empty list among {list(METRICS)}",
        )
        if self.clip_weights is not None and not isinstance(self.clip_weights, str):
            raise _bad(self, "clip_weights", self.clip_weights, "expected null or a checkpoint")


@dataclass(frozen=True, kw_only=True)
class CounterfactualFigureSettings(_FromParams):
    """The counterfactual figure (rule ``plot_counterfactual``): one row per target and method
    in ``methods`` order, with the first ``figure_removed`` removed training images."""

    methods: tuple[str, ...]
    figure_removed: int = _default("counterfactual.figure_removed")

    def __post_init__(self) -> None:
        _check_names(self, "methods")
        _check_int(self, "figure_removed", 0)


# --------------------------------------------------------------------------- summary and checks


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(m, str) and m for m in value)
    )


@dataclass(frozen=True, kw_only=True)
class SummarySettings(_FromParams):
    """The results tables (rule ``summarize``): the experiment's name (the title of summary.md)
    and the paired bootstrap of each method pair [a, b] in ``pairs``."""

    experiment: str
    pairs: tuple[tuple[str, str], ...] = _default("lds.pairs")
    paired_resamples: int = _default("lds.paired_resamples")
    paired_seed: int = _default("lds.bootstrap_seed")

    def __post_init__(self) -> None:
        _check_name(self, "experiment")
        _as_tuple(
            self,
            "pairs",
            lambda v: all(_is_pair(p) for p in v),
            "expected a list of method pairs [a, b]",
        )
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        _check_int(self, "paired_resamples", 2)
        _check_int(self, "paired_seed")


@dataclass(frozen=True, kw_only=True)
class AgreementSettings(_FromParams):
    """The class agreement of the proponents (rule ``check_attributions``): the ``method``,
    ``K`` and ``split`` of each score file (parallel to the files), and the ``top`` proponents
    counted per query."""

    labels: tuple[Mapping[str, Any], ...]
    top: int = _default("report.proponents")

    def __post_init__(self) -> None:
        _as_tuple(
            self,
            "labels",
            lambda v: all(isinstance(x, Mapping) and {"method", "K", "split"} <= set(x) for x in v),
            "expected a list of {method, K, split}",
        )
        _check_int(self, "top", 1)


@dataclass(frozen=True, kw_only=True)
class FindingsSettings(_FromParams):
    """What the run found, in plain words (rule ``summarize_checks``): the kind of each method
    and the run's description (:func:`diffattr.demo_checks.findings`)."""

    method_kinds: Mapping[str, str]
    run: Mapping[str, Any]

    def __post_init__(self) -> None:
        kinds = self.method_kinds
        if not isinstance(kinds, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in kinds.items()
        ):
            raise _bad(self, "method_kinds", kinds, "expected {method name: kind}")
        if not isinstance(self.run, Mapping):
            raise _bad(self, "run", self.run, "expected a mapping describing the run")


@dataclass(frozen=True, kw_only=True)
class AttributionGridSettings(_FromParams):
    """A proponent / opponent grid (rule ``plot_attribution_grid``): ``queries`` evenly spaced
    queries of ``split``, each with its ``proponents`` and ``opponents``; ``label`` heads the
    figure."""

    split: str
    queries: int = _default("report.queries")
    proponents: int = _default("report.proponents")
    opponents: int = _default("report.opponents")
    label: str = ""

    def __post_init__(self) -> None:
        from diffattr.queries import QUERY_SPLITS

        _check_choice(self, "split", QUERY_SPLITS)
        _check_int(self, "queries", 1)
        _check_int(self, "proponents", 0)
        _check_int(self, "opponents", 0)
        if not isinstance(self.label, str):
            raise _bad(self, "label", self.label, "expected text")


# --------------------------------------------------------------------------- runtime


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Values that change speed and memory, never results: the batch size, the device, the
    number of threads and where progress is written (a text stream, the job's log; the
    feature kernels also take a callback ``progress(done, total)``).

    ``device`` is also a param of every rule that has one (``config["device"]``), so that a new
    device reruns those jobs; the batch sizes are not params."""

    batch_size: int
    device: str = _default("device")
    threads: int = 1
    progress: IO[str] | Callable[[int, int], Any] | None = field(
        default=None, compare=False, repr=False
    )

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


@dataclass(frozen=True, kw_only=True)
class TrainingRuntime:
    """What a training job needs that never changes its model: the folder of its resume
    checkpoint, the folder where ``train_main`` stages its snapshots (both rule params outside
    the declared outputs, removed after success), the threads and the progress stream.

    A run resumed from its checkpoint ends with the same weights (bit-identical on CPU). The
    device is a :class:`TrainingSettings` value: it is part of the checkpoint's fingerprint."""

    checkpoint_dir: str
    staging_dir: str | None = None
    threads: int = 1
    progress: IO[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("checkpoint_dir", "staging_dir"):
            value = getattr(self, name)
            if not (value is None and name == "staging_dir") and not _is_path(value):
                raise _bad(self, name, value, "expected a folder path")
        _check_int(self, "threads", 1)

    @classmethod
    def from_snakemake(cls, snakemake: Any) -> TrainingRuntime:
        """The rule's params ``checkpoint_dir`` and (``train_main``) ``snapshot_staging``, and
        its threads."""
        params = snakemake.params
        staging = None
        if _has_param(params, "snapshot_staging"):
            staging = _param(params, "snapshot_staging")
        return cls(
            checkpoint_dir=_param(params, "checkpoint_dir"),
            staging_dir=staging,
            threads=snakemake.threads,
        )

    def logging_to(self, progress: IO[str] | None) -> TrainingRuntime:
        """This runtime, writing progress to ``progress`` (the job's log)."""
        return dataclasses.replace(self, progress=progress)


def _is_path(value: Any) -> bool:
    return isinstance(value, os.PathLike) or (isinstance(value, str) and bool(value))


#: Every settings class with a ``from_params``.
SETTINGS_CLASSES: tuple[type, ...] = (
    ProjectionSettings,
    FeatureSettings,
    TrajectoryFeatureSettings,
    SplitRows,
    MeasureSettings,
    GenerationSettings,
    LdsSettings,
    SubsetSettings,
    FeatureNoiseSettings,
    ResidualSettings,
    EkfacFactorSettings,
    ScoreSettings,
    ScoreGridSettings,
    CounterfactualLambdaSettings,
    RemovalSettings,
    CounterfactualMetricSettings,
    CounterfactualFigureSettings,
    SummarySettings,
    AgreementSettings,
    FindingsSettings,
    AttributionGridSettings,
)

__all__ = [
    "AgreementSettings",
    "AttributionGridSettings",
    "CounterfactualFigureSettings",
    "CounterfactualLambdaSettings",
    "CounterfactualMetricSettings",
    "EkfacFactorSettings",
    "FeatureNoiseSettings",
    "FeatureSettings",
    "FindingsSettings",
    "GenerationSettings",
    "LdsSettings",
    "MeasureSettings",
    "ProjectionSettings",
    "RemovalSettings",
    "ResidualSettings",
    "Runtime",
    "SETTINGS_CLASSES",
    "ScoreGridSettings",
    "ScoreSettings",
    "SplitRows",
    "SubsetSettings",
    "SummarySettings",
    "TrainingRecipe",
    "TrainingRuntime",
    "TrainingSettings",
    "TrajectoryFeatureSettings",
]
