"""Settings objects (diffattr.settings): checked values, built from a rule's params, passed by
keyword only, with the schema's defaults and nowhere else's; the scripts build them."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import runpy
import types
from pathlib import Path

import pytest
from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params

from diffattr.config import schema_default
from diffattr.errors import ConfigError
from diffattr.settings import (
    SETTINGS_CLASSES,
    AgreementSettings,
    AttributionGridSettings,
    CounterfactualFigureSettings,
    CounterfactualLambdaSettings,
    CounterfactualMetricSettings,
    EkfacFactorSettings,
    FeatureNoiseSettings,
    FeatureSettings,
    FindingsSettings,
    GenerationSettings,
    LdsSettings,
    MeasureSettings,
    ProjectionSettings,
    RemovalSettings,
    ResidualSettings,
    Runtime,
    ScoreGridSettings,
    ScoreSettings,
    SplitRows,
    SubsetSettings,
    SummarySettings,
    TrainingRecipe,
    TrainingRuntime,
    TrainingSettings,
    TrajectoryFeatureSettings,
)
from tests.test_architecture import HEAVY, loaded_after_import

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- valid examples

FEATURE_PARAMS = {  # as rules/features.smk passes them (extract_query_features)
    "impl_version": 2,
    "split": "gen",
    "output_fn": "square",
    "K": 10,
    "t_strategy": "uniform",
    "proj_kind": "normal",
    "proj_dim": 64,
    "proj_seed": 7,
    "projection": "dense",
    "proj_allocation": "sqrt",
    "noise_seed": 3,
    "noise": "reference",
    "noise_geometry": {"batch_size": 52, "shard_rows": 1000},
    "device": "cpu",
    "shard": 0,
    "num_shards": 1,
}
VALID = {
    ProjectionSettings: {},
    FeatureSettings: {"output_fn": "loss", "K": 10},
    TrajectoryFeatureSettings: {"output_fn": "loss"},
    SplitRows: {"split": "val"},
    MeasureSettings: {"splits": ["val", "gen"]},
    GenerationSettings: {},
    LdsSettings: {"split": "gen"},
    SubsetSettings: {"pool": "lds", "k": 3, "pool_seed": 7},
    FeatureNoiseSettings: {},
    ResidualSettings: {"S": 10},
    EkfacFactorSettings: {"factor_timesteps": 5, "strategy": "ekfac"},
    CounterfactualLambdaSettings: {"method": "dtrak", "K": 10, "lambdas": [1.0, 10.0]},
    RemovalSettings: {"method": "random", "target": 3},
    CounterfactualMetricSettings: {},
    CounterfactualFigureSettings: {"methods": ["dtrak", "random"]},
    SummarySettings: {"experiment": "demo"},
    AgreementSettings: {"labels": [{"method": "dtrak", "K": 10, "split": "val"}]},
    FindingsSettings: {"method_kinds": {"dtrak": "trak"}, "run": {"n_train": 600}},
    AttributionGridSettings: {"split": "val", "label": "dtrak, K = 10"},
    ScoreSettings: {"method": "trak", "kind": "trak", "params": {}, "K": 10, "split": "val"},
    ScoreGridSettings: {},
    Runtime: {"batch_size": 4},
    TrainingRecipe: {
        "model": {"kind": "unet", "unet": {}},
        "scheduler": {},
        "training": TrainingSettings(epochs=1, batch_size=2),
    },
    TrainingRuntime: {"checkpoint_dir": ".checkpoints/main"},
}

# (class, field, bad value, words the message must contain)
BAD = [
    (ProjectionSettings, "proj_kind", "gaussian", "'normal'"),
    (ProjectionSettings, "proj_dim", 0, "integer >= 1"),
    (ProjectionSettings, "proj_dim", 4096.0, "integer"),
    (ProjectionSettings, "proj_seed", "42", "integer"),
    (ProjectionSettings, "projection", "sparse", "'structured'"),
    (ProjectionSettings, "allocation", "cube", "'proportional'"),
    (FeatureSettings, "output_fn", "los", "valid names are"),
    (FeatureSettings, "output_fn", 3, "output function"),
    (FeatureSettings, "K", 0, "integer >= 1"),
    (FeatureSettings, "K", True, "integer"),
    (FeatureSettings, "t_strategy", "random", "'uniform'"),
    (FeatureSettings, "noise_seed", "common", "integer"),
    (FeatureSettings, "noise", 3, "'independent'"),
    (FeatureSettings, "noise", "shared", "'common'"),
    (FeatureSettings, "noise_batch_size", -1, "integer >= 0"),
    (TrajectoryFeatureSettings, "output_fn", "loss_tnorm", "valid names are"),
    (TrajectoryFeatureSettings, "noise_seed", 1.5, "integer"),
    (SplitRows, "split", "test", "'train'"),
    (SplitRows, "num_shards", 0, "integer >= 1"),
    (SplitRows, "shard", -1, "integer >= 0"),
    (MeasureSettings, "splits", ["val", "test"], "splits among"),
    (MeasureSettings, "splits", "val", "list"),
    (MeasureSettings, "timesteps", 0, "integer >= 1"),
    (MeasureSettings, "noise_seeds", [], "non-empty list"),
    (MeasureSettings, "noise_seeds", [0, "1"], "non-empty list"),
    (MeasureSettings, "output", "mean-squared-l2-norm", "'square'"),  # canonical names only
    (GenerationSettings, "num_samples", 0, "integer >= 1"),
    (GenerationSettings, "steps", 2.5, "integer"),
    (GenerationSettings, "eta", -0.1, "number >= 0"),
    (GenerationSettings, "eta", None, "number"),
    (GenerationSettings, "seed", "0", "integer"),
    (GenerationSettings, "grid_columns", 0, "integer >= 1"),
    (GenerationSettings, "guidance_scale", -1, "number >= 0"),
    (GenerationSettings, "prompts", [], "non-empty list"),
    (GenerationSettings, "prompts", [1], "list of text"),
    (LdsSettings, "split", "train", "'val'"),
    (LdsSettings, "bootstrap_resamples", 1, "integer >= 2"),
    (LdsSettings, "bootstrap_seed", None, "integer"),
    (LdsSettings, "lambdas", [1.0, 0.0], "> 0"),
    (LdsSettings, "lambdas", [float("nan")], "> 0"),
    (LdsSettings, "sign", 2, "-1, +1"),
    (SubsetSettings, "pool", "", "name of a pool"),
    (SubsetSettings, "k", -1, "integer >= 0"),
    (SubsetSettings, "alpha", 1.0, "strictly between 0 and 1"),
    (SubsetSettings, "alpha", float("nan"), "strictly between 0 and 1"),
    (SubsetSettings, "pool_seed", 1.5, "integer >= 0"),
    (SubsetSettings, "stratify", "yes", "true or false"),
    (FeatureNoiseSettings, "noise", "shared", "'common'"),
    (FeatureNoiseSettings, "noise_seed", "0", "integer"),
    (ResidualSettings, "S", 0, "integer >= 1"),
    (ResidualSettings, "noise_batch_size", -1, "integer >= 0"),
    (EkfacFactorSettings, "factor_timesteps", 0, "integer >= 1"),
    (EkfacFactorSettings, "strategy", "fisher", "'kfac'"),
    (CounterfactualLambdaSettings, "method", "", "non-empty name"),
    (CounterfactualLambdaSettings, "K", -1, "integer >= 0"),
    (CounterfactualLambdaSettings, "lambdas", [0.0], "> 0"),
    (RemovalSettings, "target", -1, "integer >= 0"),
    (RemovalSettings, "top_k", 0, "integer >= 1"),
    (RemovalSettings, "top_fraction", 1.0, "(0, 1)"),
    (RemovalSettings, "random_seed", None, "integer"),
    (CounterfactualMetricSettings, "metrics", ["l2", "lpips"], "'ssim'"),
    (CounterfactualMetricSettings, "metrics", [], "non-empty list"),
    (CounterfactualMetricSettings, "clip_weights", 3, "checkpoint"),
    (CounterfactualFigureSettings, "methods", [], "non-empty list of names"),
    (CounterfactualFigureSettings, "figure_removed", -1, "integer >= 0"),
    (SummarySettings, "experiment", None, "non-empty name"),
    (SummarySettings, "pairs", [["dtrak"]], "method pairs"),
    (SummarySettings, "paired_resamples", 1, "integer >= 2"),
    (AgreementSettings, "labels", [{"method": "dtrak"}], "{method, K, split}"),
    (AgreementSettings, "top", 0, "integer >= 1"),
    (FindingsSettings, "method_kinds", {"dtrak": 1}, "{method name: kind}"),
    (FindingsSettings, "run", None, "mapping"),
    (AttributionGridSettings, "split", "train", "'gen'"),
    (AttributionGridSettings, "queries", 0, "integer >= 1"),
    (AttributionGridSettings, "opponents", -1, "integer >= 0"),
    (AttributionGridSettings, "label", None, "text"),
    (ScoreSettings, "method", "", "name"),
    (ScoreSettings, "kind", 3, "kind name"),
    (ScoreSettings, "params", [], "mapping"),
    (ScoreSettings, "K", -1, "integer >= 0"),
    (ScoreSettings, "split", "train", "'val'"),
    (ScoreSettings, "lambdas", [1.0, 0], "> 0"),
    (ScoreSettings, "chunk_rows", 0, "integer >= 1"),
    (ScoreSettings, "model_settings", None, "mapping"),
    (ScoreGridSettings, "lambdas", [], "non-empty"),
    (ScoreGridSettings, "lambdas", 1.0, "list"),
    (ScoreGridSettings, "chunk_rows", 2.5, "integer"),
    (Runtime, "batch_size", 0, "integer >= 1"),
    (Runtime, "threads", 0, "integer >= 1"),
    (Runtime, "device", "", "device"),
    (TrainingRecipe, "model", {"kind": "vae"}, "choose one of: unet, sd_lora"),
    (TrainingRecipe, "model", None, "the config's model block"),
    (TrainingRecipe, "scheduler", [], "the config's scheduler block"),
    (TrainingRecipe, "training", {"epochs": 1}, "TrainingSettings"),
    (TrainingRuntime, "checkpoint_dir", "", "folder path"),
    (TrainingRuntime, "staging_dir", 3, "folder path"),
    (TrainingRuntime, "threads", 0, "integer >= 1"),
]

#: the classes whose ``from_params`` reads the reference geometry from ``noise_geometry``
GEOMETRY_CLASSES = (FeatureSettings, FeatureNoiseSettings, ResidualSettings, EkfacFactorSettings)


def test_every_class_has_valid_and_bad_examples():
    assert set(VALID) == {*SETTINGS_CLASSES, Runtime, TrainingRecipe, TrainingRuntime}
    assert {cls for cls, *_ in BAD} == set(VALID)


@pytest.mark.parametrize(("cls", "name", "value", "valid"), BAD)
def test_a_bad_value_is_refused_with_its_name_and_what_is_valid(cls, name, value, valid):
    with pytest.raises(ConfigError) as caught:
        cls(**{**VALID[cls], name: value})
    message = str(caught.value)
    assert f"{cls.__name__}.{name} = {value!r}" in message
    assert valid in message


def test_cross_field_checks():
    with pytest.raises(ConfigError, match=r"SplitRows\.shard = 2 .* 0\.\.1"):
        SplitRows(split="train", shard=2, num_shards=2)
    with pytest.raises(ConfigError, match="samples_path = None .* generated samples"):
        SplitRows(split="gen")
    # the reference geometry must be positive where it is used, and may be 0 where it is not
    with pytest.raises(ConfigError, match="noise_shard_rows = 0 .* integer >= 1"):
        FeatureSettings(output_fn="loss", K=2, noise="reference", noise_shard_rows=0)
    FeatureSettings(output_fn="loss", K=2, noise="common", noise_batch_size=0, noise_shard_rows=0)


def test_values_are_checked_not_converted():
    """Provenance attributes are written from these values: a YAML int stays an int."""
    generation = GenerationSettings(eta=0, guidance_scale=7)
    assert type(generation.eta) is int and type(generation.guidance_scale) is int
    assert FeatureSettings(output_fn="l2-norm", K=2).output_fn == "l2-norm"  # aliases are kept
    measure = MeasureSettings(splits=["val"], noise_seeds=[0, 1])
    assert measure.noise_seeds == (0, 1) and measure.splits == ("val",)  # stored as tuples
    with pytest.raises(dataclasses.FrozenInstanceError):
        measure.timesteps = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- from params


@pytest.mark.parametrize("wrap", ["snakemake", "dict", "namespace"])
def test_feature_settings_from_params_round_trip(wrap):
    params = {
        "snakemake": lambda d: Params(fromdict=d),
        "dict": dict,
        "namespace": lambda d: types.SimpleNamespace(**d),
    }[wrap](FEATURE_PARAMS)
    settings = FeatureSettings.from_params(params)
    assert settings == FeatureSettings(
        output_fn="square", K=10, t_strategy="uniform", proj_kind="normal", proj_dim=64,
        proj_seed=7, projection="dense", allocation="sqrt", noise_seed=3, noise="reference",
        noise_batch_size=52, noise_shard_rows=1000,
    )  # fmt: skip
    back = {
        **{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)},
        "proj_allocation": settings.allocation,
        "noise_geometry": {"batch_size": 52, "shard_rows": 1000},
    }
    assert FeatureSettings.from_params(back) == settings
    rows = SplitRows.from_params(params, samples_path="gen.h5")
    assert rows == SplitRows(split="gen", samples_path="gen.h5", shard=0, num_shards=1)


@pytest.mark.parametrize("cls", [c for c in SETTINGS_CLASSES if c not in GEOMETRY_CLASSES])
def test_every_class_round_trips_through_params(cls):
    settings = cls(**VALID[cls]) if cls is not SplitRows else SplitRows(split="val", shard=1,
                                                                        num_shards=3)  # fmt: skip
    names = {f.name: cls._renames().get(f.name, f.name) for f in dataclasses.fields(cls)}
    params = Params(fromdict={names[k]: getattr(settings, k) for k in names})
    assert cls.from_params(params) == settings


@pytest.mark.parametrize("cls", GEOMETRY_CLASSES[1:])
def test_the_noise_geometry_comes_as_one_param(cls):
    settings = cls(**{**VALID[cls], "noise": "reference", "noise_batch_size": 52})
    names = {f.name: cls._renames().get(f.name, f.name) for f in dataclasses.fields(cls)}
    values = {names[k]: getattr(settings, k) for k in names if not k.startswith("noise_")}
    geometry = {"batch_size": 52, "shard_rows": settings.noise_shard_rows}
    params = Params(fromdict={**values, "noise_seed": 0, "noise_geometry": geometry})
    assert cls.from_params(params) == settings
    with pytest.raises(ConfigError, match=f"{cls.__name__}.from_params: param noise_geometry"):
        cls.from_params({**values, "noise_seed": 0, "noise_geometry": [52, 1000]})


def test_training_settings_from_params():
    training = {"epochs": 2, "batch_size": 4, "lr": 1e-3, "main_seed": 42}
    values = {"model": {"unet": {}}, "scheduler": {"beta_schedule": "linear"},
              "training": training, "seed": 3, "device": "cpu", "checkpoint_dir": "ck"}  # fmt: skip
    recipe = TrainingRecipe.from_params(Params(fromdict=values))
    assert recipe.training == TrainingSettings(
        epochs=2, batch_size=4, lr=1e-3, seed=3, device="cpu"
    )
    assert recipe.model == {"unet": {}} and recipe.scheduler == {"beta_schedule": "linear"}
    with pytest.raises(ConfigError, match="unknown training settings"):
        TrainingSettings.from_params({**values, "training": {**training, "lrr": 1}})


def test_training_runtime_from_snakemake():
    job = types.SimpleNamespace(params=Params(fromdict={"checkpoint_dir": "ck"}), threads=2)
    assert TrainingRuntime.from_snakemake(job) == TrainingRuntime(checkpoint_dir="ck", threads=2)
    job.params = Params(fromdict={"checkpoint_dir": "ck", "snapshot_staging": "st"})
    assert TrainingRuntime.from_snakemake(job).staging_dir == "st"
    stream = object()
    runtime = TrainingRuntime(checkpoint_dir="ck").logging_to(stream)  # type: ignore[arg-type]
    assert runtime.progress is stream and runtime == TrainingRuntime(checkpoint_dir="ck")


def test_a_missing_param_is_named():
    params = {k: v for k, v in FEATURE_PARAMS.items() if k != "proj_seed"}
    with pytest.raises(ConfigError, match="passes no param proj_seed; it needs .*noise_geometry"):
        FeatureSettings.from_params(params)
    with pytest.raises(ConfigError, match="noise_geometry"):
        FeatureSettings.from_params({**FEATURE_PARAMS, "noise_geometry": [52, 1000]})


def test_runtime_from_snakemake():
    config = {"device": "auto", "features": {"batch_size": 8}, "generation": {"batch_size": 5}}
    job = types.SimpleNamespace(config=config, params=Params(fromdict={"device": "cpu"}), threads=2)
    assert Runtime.from_snakemake(job, "features") == Runtime(batch_size=8, device="cpu", threads=2)
    job.params = Params(fromdict={})
    assert Runtime.from_snakemake(job, "generation").device == "auto"  # no param: the config's
    with pytest.raises(ConfigError, match="group 'training' has no batch size"):
        Runtime.from_snakemake(job, "training")
    stream = object()
    runtime = Runtime(batch_size=2).logging_to(stream)  # type: ignore[arg-type]
    assert runtime.progress is stream and runtime == Runtime(batch_size=2)


# --------------------------------------------------------------------------- keyword only


def _jobs():
    from diffattr.jobs import (
        checks,
        counterfactual,
        data,
        features,
        generate,
        lds,
        measure,
        report,
        residuals,
        scores,
        summary,
        train,
    )

    return {
        data.prepare_data: 1,
        lds.collect_groundtruth: 4,
        lds.noise_ceiling: 2,
        counterfactual.select_counterfactual_targets: 2,
        report.plot_lds: 3,
        report.write_overview: 3,
        report.dump_config: 1,
        scores.score_method: 2,
        scores.select_scores: 3,
        scores.score_grid: 2,
        data.draw_subset: 2,
        train.train_model: 3,
        train.train_main: 3,
        residuals.compute_residuals: 3,
        residuals.fit_ekfac_factors: 3,
        counterfactual.choose_counterfactual_lambda: 4,
        counterfactual.remove_top_examples: 2,
        counterfactual.compare_counterfactual: 3,
        counterfactual.collect_counterfactual: 4,
        counterfactual.plot_counterfactual: 4,
        summary.summarize: 4,
        checks.check_attributions: 4,
        checks.summarize_checks: 4,
        report.plot_attribution_grid: 5,
        features.extract_features: 3,
        features.extract_trajectory_features: 2,  # TrajectoryInputs, the output
        features.record_trajectory: 3,
        features.embed_clip: 3,
        measure.measure_outputs: 4,
        generate.generate_samples: 4,
        lds.evaluate_lds: 4,
        counterfactual.regenerate_counterfactual: 3,
    }


def test_jobs_take_settings_by_keyword_only_and_few_parameters():
    for job, paths in _jobs().items():
        parameters = list(inspect.signature(job).parameters.values())
        assert len(parameters) <= 6, job.__name__
        kinds = [p.kind for p in parameters]
        assert kinds[:paths] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * paths, job.__name__
        assert set(kinds[paths:]) == {inspect.Parameter.KEYWORD_ONLY}, job.__name__


def test_swapped_or_positional_settings_are_impossible():
    from diffattr.jobs.features import extract_features

    settings = FeatureSettings(output_fn="loss", K=2)
    rows, runtime = SplitRows(split="val"), Runtime(batch_size=2)
    with pytest.raises(TypeError, match="positional"):
        extract_features("model", "data.h5", "out.h5", rows, settings, runtime)  # type: ignore[misc]
    with pytest.raises(TypeError, match="positional"):
        FeatureSettings("loss", 2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected keyword argument 'seed'"):
        FeatureSettings(output_fn="loss", K=2, seed=3)  # type: ignore[call-arg]
    # a scheme where a seed belongs (or the reverse) is refused by its check
    with pytest.raises(ConfigError, match="noise_seed = 'common'"):
        FeatureSettings(output_fn="loss", K=2, noise_seed="common", noise=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="proj_seed = 'independent'"):
        FeatureSettings(output_fn="loss", K=2, proj_seed="independent")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- defaults live once

#: (class, field) -> the schema key it takes its default from
SCHEMA_KEYS = {
    (ProjectionSettings, "proj_kind"): "features.proj_kind",
    (ProjectionSettings, "proj_dim"): "features.proj_dim",
    (ProjectionSettings, "proj_seed"): "features.proj_seed",
    (ProjectionSettings, "projection"): "features.projection",
    (ProjectionSettings, "allocation"): "features.structured_allocation",
    (ProjectionSettings, "mixing"): "features.structured_mixing",
    (ProjectionSettings, "mixer"): "features.structured_mixer",
    (FeatureSettings, "t_strategy"): "features.t_strategy",
    (FeatureSettings, "noise_seed"): "features.noise_seed",
    (FeatureSettings, "noise"): "features.noise",
    (FeatureSettings, "noise_batch_size"): "features.reference_noise.batch_size",
    (FeatureSettings, "noise_shard_rows"): "features.reference_noise.shard_rows",
    (TrajectoryFeatureSettings, "noise_seed"): "features.noise_seed",
    (MeasureSettings, "timesteps"): "measure.timesteps",
    (MeasureSettings, "noise_seeds"): "measure.noise_seeds",
    (MeasureSettings, "output"): "measure.output",
    **{
        (GenerationSettings, f.name): f"generation.{f.name}"
        for f in dataclasses.fields(GenerationSettings)
    },  # fmt: skip
    (LdsSettings, "bootstrap_resamples"): "lds.bootstrap_resamples",
    (SubsetSettings, "alpha"): "subsets.alpha",
    (SubsetSettings, "stratify"): "data.stratify",
    (FeatureNoiseSettings, "noise_seed"): "features.noise_seed",
    (FeatureNoiseSettings, "noise"): "features.noise",
    (FeatureNoiseSettings, "noise_batch_size"): "features.reference_noise.batch_size",
    (FeatureNoiseSettings, "noise_shard_rows"): "features.reference_noise.shard_rows",
    (LdsSettings, "bootstrap_seed"): "lds.bootstrap_seed",
    (RemovalSettings, "top_k"): "counterfactual.top_k",
    (RemovalSettings, "top_fraction"): "counterfactual.top_fraction",
    (RemovalSettings, "random_seed"): "counterfactual.random_seed",
    (CounterfactualMetricSettings, "metrics"): "counterfactual.metrics",
    (CounterfactualMetricSettings, "clip_weights"): "clip.weights",
    (CounterfactualFigureSettings, "figure_removed"): "counterfactual.figure_removed",
    (SummarySettings, "pairs"): "lds.pairs",
    (SummarySettings, "paired_resamples"): "lds.paired_resamples",
    (SummarySettings, "paired_seed"): "lds.bootstrap_seed",
    (AgreementSettings, "top"): "report.proponents",
    (AttributionGridSettings, "queries"): "report.queries",
    (AttributionGridSettings, "proponents"): "report.proponents",
    (AttributionGridSettings, "opponents"): "report.opponents",
    (ScoreSettings, "chunk_rows"): "scoring.chunk_rows",
    (ScoreGridSettings, "lambdas"): "scoring.lambdas",
    (ScoreGridSettings, "chunk_rows"): "scoring.chunk_rows",
    (Runtime, "device"): "device",
    **{
        (TrainingSettings, f.name): f"training.{f.name}"
        for f in dataclasses.fields(TrainingSettings)
        if f.name not in ("seed", "device", "epochs", "batch_size")
    },
    (TrainingSettings, "seed"): "training.main_seed",
    (TrainingSettings, "device"): "device",
}
#: fields without a schema counterpart (derived, per job, or a wildcard)
NO_SCHEMA_KEY = {
    (FeatureSettings, "output_fn"),  # per method (a wildcard)
    (FeatureSettings, "K"),  # a wildcard
    (TrajectoryFeatureSettings, "output_fn"),
    (SplitRows, "split"),
    (SplitRows, "samples_path"),
    (SplitRows, "shard"),
    (SplitRows, "num_shards"),  # features.train_shards for the train split only
    (MeasureSettings, "splits"),  # the sorted set of lds.splits
    (LdsSettings, "split"),
    (LdsSettings, "lambdas"),  # scoring.lambdas for λ methods only
    (LdsSettings, "sign"),
    (SubsetSettings, "pool"),  # a wildcard
    (SubsetSettings, "k"),  # a wildcard
    (SubsetSettings, "pool_seed"),  # subsets.<pool>.seed, per pool
    (ResidualSettings, "S"),  # a wildcard
    (EkfacFactorSettings, "factor_timesteps"),  # a wildcard (T)
    (EkfacFactorSettings, "strategy"),  # a wildcard
    (CounterfactualLambdaSettings, "method"),  # a wildcard
    (CounterfactualLambdaSettings, "K"),  # the method's counterfactual K (plan)
    (CounterfactualLambdaSettings, "lambdas"),  # scoring.lambdas for λ methods only
    (RemovalSettings, "method"),  # a wildcard
    (RemovalSettings, "target"),  # a wildcard
    (CounterfactualFigureSettings, "methods"),  # counterfactual.methods, in config order
    (SummarySettings, "experiment"),  # required in the schema
    (AgreementSettings, "labels"),  # one per scored (method, K, split)
    (FindingsSettings, "method_kinds"),  # from methods
    (FindingsSettings, "run"),  # derived from the config
    (AttributionGridSettings, "split"),  # a wildcard
    (AttributionGridSettings, "label"),  # derived per grid
    (ScoreSettings, "method"),  # the method's wildcards and config entry
    (ScoreSettings, "kind"),
    (ScoreSettings, "params"),
    (ScoreSettings, "K"),
    (ScoreSettings, "split"),
    (ScoreSettings, "lambdas"),  # scoring.lambdas for λ methods only
    (ScoreSettings, "model_settings"),  # from features.* for kinds that run the model
    (Runtime, "batch_size"),  # <group>.batch_size, the group chosen by the script
    (Runtime, "threads"),
    (Runtime, "progress"),
    (TrainingSettings, "epochs"),  # required in the schema
    (TrainingSettings, "batch_size"),  # required in the schema
    (TrainingRuntime, "checkpoint_dir"),  # rule params, paths
    (TrainingRuntime, "staging_dir"),
    (TrainingRuntime, "threads"),
    (TrainingRuntime, "progress"),
}
DRIFT_CLASSES = [*SETTINGS_CLASSES, Runtime, TrainingSettings, TrainingRuntime]


def _default_of(item: dataclasses.Field):
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return dataclasses.MISSING


def drift(cls: type) -> list[str]:
    """Fields of ``cls`` whose default differs from the schema's (or that are unclassified)."""
    problems = []
    for item in dataclasses.fields(cls):
        owner = next(
            (c for c in cls.__mro__ if (c, item.name) in SCHEMA_KEYS or (c, item.name) in
             NO_SCHEMA_KEY),
            None,
        )  # fmt: skip
        if owner is None:
            problems.append(f"{cls.__name__}.{item.name}: in neither SCHEMA_KEYS nor NO_SCHEMA_KEY")
        elif (owner, item.name) in SCHEMA_KEYS:
            ours, schema = _default_of(item), schema_default(SCHEMA_KEYS[owner, item.name])
            if isinstance(ours, tuple):
                ours = list(ours)
            if ours != schema or type(ours) is not type(schema):
                problems.append(
                    f"{cls.__name__}.{item.name} = {ours!r}; the schema says {schema!r}"
                )
    return problems


@pytest.mark.parametrize("cls", DRIFT_CLASSES, ids=lambda c: c.__name__)
def test_defaults_are_the_schemas(cls):
    assert drift(cls) == []


def test_the_drift_check_catches_a_planted_default():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Planted(ProjectionSettings):
        proj_dim: int = 4096

    @dataclasses.dataclass(frozen=True)
    class PlantedTraining(TrainingSettings):
        checkpoint_every: int = 0

    assert drift(Planted) == ["Planted.proj_dim = 4096; the schema says 32768"]
    assert drift(PlantedTraining) == ["PlantedTraining.checkpoint_every = 0; the schema says 200"]


# --------------------------------------------------------------------------- scripts


def test_importing_settings_loads_nothing_heavy():
    loaded = loaded_after_import(["diffattr.settings"])
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def test_no_script_reads_the_config_but_through_runtime():
    for path in sorted((ROOT / "scripts").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "config"
                and isinstance(node.value, ast.Name)
                and node.value.id == "snakemake"
            ):
                raise AssertionError(f"{path.name}:{node.lineno} reads snakemake.config")


def _fake_job(tmp_path, params, inputs, outputs, config):
    return types.SimpleNamespace(
        params=Params(fromdict=params),
        input=InputFiles(fromdict=inputs),
        output=OutputFiles(fromdict=outputs),
        log=Log(fromdict={"log": str(tmp_path / "job.log")}),
        threads=1,
        config=config,
    )


CONFIG = {
    "device": "auto",
    "features": {"batch_size": 8},
    "measure": {"batch_size": 9},
    "generation": {"batch_size": 10},
    "clip": {"batch_size": 11},
}

TRAIN_PARAMS = {  # as rules/train.smk passes them (train_subset)
    "checkpoint_dir": "ck",
    "model": {"unet": {"layers_per_block": 1}},
    "scheduler": {"beta_schedule": "linear"},
    "training": {"epochs": 2, "batch_size": 4, "main_seed": 42},
    "seed": 3,
    "device": "cpu",
    "impl_version": 1,
}

SCRIPT_CASES = {
    "extract_features": (
        "diffattr.jobs.features",
        FEATURE_PARAMS,
        {"model": "m", "dataset": "d.h5", "samples": "gen.h5"},
        {"features": "f.h5"},
        lambda: {
            "rows": SplitRows(split="gen", samples_path="gen.h5"),
            "settings": FeatureSettings.from_params(FEATURE_PARAMS),
            "runtime": Runtime(batch_size=8, device="cpu"),
        },
    ),
    "extract_trajectory_features": (
        "diffattr.jobs.features",
        {"output_fn": "loss", "proj_kind": "normal", "proj_dim": 16, "proj_seed": 1,
         "projection": "auto", "proj_allocation": "equal", "noise_seed": 5, "device": "cpu",
         "impl_version": 2},
        {"model": "m", "dataset": "d.h5", "samples": "gen.h5", "trajectory": "t.h5"},
        {"features": "f.h5"},
        lambda: {
            "settings": TrajectoryFeatureSettings(output_fn="loss", proj_kind="normal",
                                                  proj_dim=16, proj_seed=1, allocation="equal",
                                                  noise_seed=5),
            "runtime": Runtime(batch_size=8, device="cpu"),
        },
    ),
    "measure_outputs": (
        "diffattr.jobs.measure",
        {"splits": ["gen", "val"], "timesteps": 10, "noise_seeds": [0, 1], "device": "cpu",
         "impl_version": 1},
        {"model": "m", "dataset": "d.h5", "samples": "gen.h5"},
        {"measured": "x.h5"},
        lambda: {
            "settings": MeasureSettings(splits=["gen", "val"], timesteps=10, noise_seeds=[0, 1]),
            "runtime": Runtime(batch_size=9, device="cpu"),
        },
    ),
    "generate_samples": (
        "diffattr.jobs.generate",
        {"num_samples": 6, "steps": 3, "eta": 0.0, "seed": 2, "grid_columns": 2,
         "guidance_scale": 7.5, "prompts": None, "device": "cpu", "impl_version": 1},
        {"model": "m", "dataset": "d.h5"},
        {"samples": "gen.h5", "grid": "gen.png"},
        lambda: {
            "settings": GenerationSettings(num_samples=6, steps=3, eta=0.0, seed=2,
                                           grid_columns=2, guidance_scale=7.5, prompts=None),
            "runtime": Runtime(batch_size=10, device="cpu"),
        },
    ),
    "evaluate_lds": (
        "diffattr.jobs.lds",
        {"split": "val", "bootstrap_resamples": 8, "bootstrap_seed": 1, "lambdas": [1, 2]},
        {"scores": "s.h5", "groundtruth": "g.h5", "heldout": "h.h5"},
        {"lds": "l.json"},
        lambda: {
            "settings": LdsSettings(split="val", bootstrap_resamples=8, bootstrap_seed=1,
                                    lambdas=[1, 2]),
            "train_paths": [],
        },
    ),
    "draw_subset": (
        "diffattr.jobs.data",
        {"pool": "lds", "k": 2, "alpha": 0.5, "pool_seed": 11, "stratify": False},
        {"dataset": "d.h5"},
        {"subset": "s.h5"},
        lambda: {
            "settings": SubsetSettings(pool="lds", k=2, alpha=0.5, pool_seed=11, stratify=False),
        },
    ),
    "train_model": (
        "diffattr.jobs.train",
        TRAIN_PARAMS,
        {"dataset": "d.h5", "subset": "s.h5"},
        {"model": "m"},
        lambda: {
            "settings": TrainingRecipe(
                model={"unet": {"layers_per_block": 1}}, scheduler={"beta_schedule": "linear"},
                training=TrainingSettings(epochs=2, batch_size=4, seed=3, device="cpu"),
            ),
            "runtime": TrainingRuntime(checkpoint_dir="ck"),
        },
    ),
    "train_main": (
        "diffattr.jobs.train",
        {**TRAIN_PARAMS, "snapshot_steps": [2, 4], "snapshot_staging": "st"},
        {"dataset": "d.h5"},
        {"model": "m", "snapshots": ["s25", "s50"]},
        lambda: {
            "snapshot_steps": [2, 4],
            "settings": TrainingRecipe(
                model={"unet": {"layers_per_block": 1}}, scheduler={"beta_schedule": "linear"},
                training=TrainingSettings(epochs=2, batch_size=4, seed=3, device="cpu"),
            ),
            "runtime": TrainingRuntime(checkpoint_dir="ck", staging_dir="st"),
        },
    ),
    "compute_residuals": (
        "diffattr.jobs.residuals",
        {"impl_version": 2, "S": 10, "noise_seed": 1, "noise": "reference",
         "noise_geometry": {"batch_size": 52, "shard_rows": 1000}, "device": "cpu"},
        {"model": "m", "dataset": "d.h5"},
        {"residuals": "r.h5"},
        lambda: {
            "settings": ResidualSettings(S=10, noise_seed=1, noise="reference",
                                         noise_batch_size=52, noise_shard_rows=1000),
            "runtime": Runtime(batch_size=8, device="cpu"),
        },
    ),
    "fit_ekfac_factors": (
        "diffattr.jobs.residuals",
        {"impl_version": 2, "T": 5, "strategy": "kfac", "noise_seed": 1, "noise": "common",
         "noise_geometry": {"batch_size": 0, "shard_rows": 0}, "device": "cpu"},
        {"model": "m", "dataset": "d.h5"},
        {"factors": "f"},
        lambda: {
            "settings": EkfacFactorSettings(factor_timesteps=5, strategy="kfac", noise_seed=1,
                                            noise="common", noise_batch_size=0,
                                            noise_shard_rows=0),
            "runtime": Runtime(batch_size=8, device="cpu"),
        },
    ),
    "remove_top_examples": (
        "diffattr.jobs.counterfactual",
        {"method": "random", "target": 4, "top_k": None, "top_fraction": 0.1, "random_seed": 9},
        {"dataset": "d.h5"},
        {"removal": "r.h5"},
        lambda: {
            "settings": RemovalSettings(method="random", target=4, top_k=None, top_fraction=0.1,
                                        random_seed=9),
            "scores_path": None,
            "lambda_path": None,
        },
    ),
    "compare_counterfactual": (
        "diffattr.jobs.counterfactual",
        {"metrics": ["l2", "clip"], "clip_weights": "clip-dir", "device": "cpu"},
        {"samples": "gen.h5", "regenerated": "g.h5"},
        {"metrics": "m.json"},
        lambda: {
            "settings": CounterfactualMetricSettings(metrics=["l2", "clip"],
                                                     clip_weights="clip-dir"),
            "runtime": Runtime(batch_size=11, device="cpu"),
            "latent_model_dir": None,
        },
    ),
    "plot_attribution_grid": (
        "diffattr.jobs.report",
        {"split": "gen", "queries": 2, "proponents": 3, "opponents": 1, "label": "m, K = 4"},
        {"scores": "s.h5", "lds": "l.json", "dataset": "d.h5", "samples": "gen.h5"},
        {"grid": "g.png"},
        lambda: {
            "settings": AttributionGridSettings(split="gen", queries=2, proponents=3,
                                                opponents=1, label="m, K = 4"),
        },
    ),
    "score_method": (
        "diffattr.jobs.scores",
        {"kind": "ekfac", "params": {"dampings": [0.1]}, "lambdas": [], "chunk_rows": 64,
         "method": "ekfac", "K": 10, "split": "gen",
         "settings": {"device": "cpu", "noise_seed": 0, "t_strategy": "uniform"}},
        {"model": "m", "dataset": "d.h5", "samples": "gen.h5"},
        {"scores": "s.h5"},
        lambda: {
            "settings": ScoreSettings(method="ekfac", kind="ekfac", params={"dampings": [0.1]},
                                      K=10, split="gen", lambdas=[], chunk_rows=64,
                                      model_settings={"device": "cpu", "noise_seed": 0,
                                                      "t_strategy": "uniform"}),
            "runtime": Runtime(batch_size=8, device="auto"),
        },
    ),
    "select_scores": (
        "diffattr.jobs.scores",
        {"split": "gen", "lambdas": [1, 2], "chunk_rows": 64},
        {"spectra": "sp.h5", "heldout": "h.h5", "chooser_scores": "v.h5", "chooser_train": ["t.h5"]},
        {"scores": "s.h5"},
        lambda: {
            "split": "gen",
            "grid": ScoreGridSettings(lambdas=[1, 2], chunk_rows=64),
            "train_paths": [],
        },
    ),
    "score_grid": (
        "diffattr.jobs.scores",
        {"lambdas": [1, 2], "chunk_rows": 64},
        {"spectra": "sp.h5"},
        {"scores": "s.h5"},
        lambda: {"grid": ScoreGridSettings(lambdas=[1, 2], chunk_rows=64), "train_paths": []},
    ),
}  # fmt: skip


@pytest.mark.parametrize("script", sorted(SCRIPT_CASES))
def test_scripts_build_settings_from_params(script, tmp_path, monkeypatch):
    """Run the script with a fake ``snakemake`` and the job replaced by a recorder: the job gets
    the settings the params describe, and the runtime of the config's batch size."""
    import importlib

    module_name, params, inputs, outputs, expected = SCRIPT_CASES[script]
    calls = []
    monkeypatch.setattr(
        importlib.import_module(module_name), script, lambda *a, **k: calls.append((a, k))
    )
    job = _fake_job(tmp_path, params, inputs, outputs, CONFIG)
    runpy.run_path(str(ROOT / "scripts" / f"{script}.py"), init_globals={"snakemake": job})
    ((args, kwargs),) = calls
    paths = [v for k, v in inputs.items() if not (script == "extract_features" and k == "samples")]
    if script == "score_method":  # the method kind reads its inputs by name
        paths = [inputs]
    if script in ("evaluate_lds", "select_scores"):  # the held-out pool and the val chooser
        from diffattr.jobs.lds import HeldoutChoice

        choice = HeldoutChoice(
            inputs["heldout"], inputs.get("chooser_scores"), tuple(inputs.get("chooser_train", ()))
        )
        chooser = ("chooser_scores", "chooser_train")
        paths = [choice if k == "heldout" else v for k, v in inputs.items() if k not in chooser]
    if script == "extract_trajectory_features":  # its inputs come as one bundle
        from diffattr.jobs.features import TrajectoryInputs

        paths = [TrajectoryInputs(*inputs.values())]
    assert args == (*paths, *outputs.values())
    assert kwargs == expected()
