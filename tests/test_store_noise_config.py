"""Storage (atomic writes, provenance checks, corrupt files), keyed noise, and config validation."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from diffattr import store
from diffattr.config import load_config, validate_config
from diffattr.errors import ConfigError, CorruptFileError, FeatureMismatchError
from diffattr.noise import NOISE_SCHEMES, feature_noise_keys, sample_noise, split_noise_tag
from tests.conftest import ROOT

# --------------------------------------------------------------------------- store


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with store.h5_writer(target, {"a": 1}) as handle:
            handle.create_dataset("x", data=np.zeros(3))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_h5_roundtrip_with_structured_attrs(tmp_path):
    path = tmp_path / "m.h5"
    store.write_h5(path, {"x": np.arange(4)}, {"timesteps": [0, 10], "cfg": {"a": 1}, "none": None})
    attrs = store.read_attrs(path)
    assert attrs["timesteps"] == [0, 10] and attrs["cfg"] == {"a": 1} and attrs["none"] is None
    assert attrs["complete"] is True or attrs["complete"] == 1
    assert store.read_h5(path, "x").tolist() == [0, 1, 2, 3]


def test_truncated_file_is_refused_with_its_path(tmp_path):
    path = tmp_path / "m.h5"
    store.write_h5(path, {"x": np.zeros(1000)}, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptFileError, match="m.h5"):
        store.read_attrs(path)


def test_unfinished_file_is_refused(tmp_path):
    import h5py

    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.zeros(2))
    with pytest.raises(CorruptFileError, match="complete"):
        store.open_h5(path)


def test_require_same_lists_every_difference():
    with pytest.raises(FeatureMismatchError) as error:
        store.require_same({"a": 1, "b": 2}, {"a": 1, "b": 3}, ["a", "b"], "features")
    assert "b: 2 vs 3" in str(error.value)
    store.require_same({"t": [1, 2]}, {"t": np.array([1, 2])}, ["t"], "ok")


# --------------------------------------------------------------------------- noise


def test_noise_is_keyed_per_sample_and_timestep():
    a = sample_noise("p", 0, 5, [1, 2, 3], (2, 2))
    b = sample_noise("p", 0, 5, [3], (2, 2))
    assert np.array_equal(a[2].numpy(), b[0].numpy())
    assert not np.array_equal(a[0].numpy(), sample_noise("p", 0, 6, [1], (2, 2))[0].numpy())
    assert not np.array_equal(a[0].numpy(), sample_noise("p", 1, 5, [1], (2, 2))[0].numpy())
    assert not np.array_equal(a[0].numpy(), sample_noise("q", 0, 5, [1], (2, 2))[0].numpy())
    per_sample_t = sample_noise("p", 0, [5, 7], [1, 1], (2, 2))
    assert np.array_equal(per_sample_t[0].numpy(), a[0].numpy())


def test_noise_is_standard_normal():
    x = sample_noise("p", 0, 0, np.arange(4000), (25,)).numpy().ravel()
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    from scipy import stats

    assert stats.kstest(x[:20000], "norm").pvalue > 1e-3


def _split_noise(scheme, split, n, t, **geometry):
    keys = feature_noise_keys(scheme, split, np.arange(n), np.arange(n), **geometry)
    return sample_noise("features", 0, t, keys, (3,)).numpy()


def test_independent_feature_noise_never_shared_across_splits():
    """Training row i and query i (same id) must not share noise: the split is in the key."""
    for t in (0, 500):
        draws = np.concatenate(
            [_split_noise("independent", s, 200, t) for s in ("train", "val", "gen")]
        )
        assert len(np.unique(draws, axis=0)) == len(draws) == 600


def test_common_feature_noise_is_one_draw_per_timestep():
    for t in (0, 999):
        draws = np.concatenate([_split_noise("common", s, 50, t) for s in ("train", "val", "gen")])
        assert (draws == draws[0]).all()
    assert not np.array_equal(
        _split_noise("common", "val", 1, 0), _split_noise("common", "val", 1, 1)
    )


def test_reference_feature_noise_follows_batch_positions():
    """Slow model of the reference loop: shards of ``shard_rows`` rows processed in batches of
    ``batch_size``, one batch-wide draw per timestep, so noise is a function of batch position."""
    batch, shard, n = 7, 30, 100
    position = []
    for start in range(0, n, shard):
        rows = range(start, min(start + shard, n))
        for b in range(0, len(rows), batch):
            position.extend(range(len(rows[b : b + batch])))
    train = _split_noise("reference", "train", n, 3, batch_size=batch, shard_rows=shard)
    val = _split_noise("reference", "val", 40, 3, batch_size=batch, shard_rows=shard)
    for i in range(n):
        for j in range(n):
            assert np.array_equal(train[i], train[j]) == (position[i] == position[j])
        for j in range(40):  # splits share the batch-position draws
            assert np.array_equal(train[i], val[j]) == (position[i] == position[j])
    assert len(np.unique(train, axis=0)) == batch


def test_feature_noise_schemes_do_not_overlap_and_are_checked():
    keys = [feature_noise_keys(s, "train", np.arange(60), np.arange(60)) for s in NOISE_SCHEMES]
    assert len(np.unique(np.concatenate(keys))) == 60 + 52 + 1
    with pytest.raises(ConfigError, match="valid: \\['independent', 'reference', 'common'\\]"):
        feature_noise_keys("shared", "train", [0], [0])
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        feature_noise_keys("reference", "train", [0], [0], batch_size=0)


# --------------------------------------------------------------------------- config


def test_default_and_experiment_configs_validate():
    load_config(ROOT / "config.yaml")
    load_config(ROOT / "tests" / "config-tiny.yaml")
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        load_config(path)


@pytest.mark.parametrize("overlay", sorted((ROOT / "experiments" / "overlays").glob("*.yaml")))
def test_overlays_validate_on_the_embedded_default(overlay):
    """Each overlay, given after config.yaml as Snakemake merges them, is a valid config that
    keeps the default's methods and adds its own."""
    config = load_config(ROOT / "config.yaml", overlay)
    added = yaml.safe_load(overlay.read_text()).get("methods", {})
    assert set(added) <= set(config["methods"]), overlay.name


def test_defaults_are_filled():
    config = load_config(ROOT / "tests" / "config-tiny.yaml")
    assert config["scheduler"]["num_train_timesteps"] == 1000
    assert config["subsets"]["heldout"]["train_seeds"] == [0]
    assert len(config["scoring"]["lambdas"]) == 4


@pytest.mark.parametrize(
    "override,message",
    [
        ({"trainig": {}}, "unknown key 'trainig' (did you mean 'training'?)"),
        ({"data": {"sorce": "digits"}}, "did you mean 'source'"),
        ({"data": {"source": "imagenet"}}, "data.source = 'imagenet' is not valid; choose one of"),
        (
            {"scoring": {"lambdas": [1, -2]}},
            "scoring.lambdas.1 = -2 is out of range; it must be > 0",
        ),
        ({"subsets": {"alpha": 1.5}}, "subsets.alpha = 1.5 is out of range"),
        ({"features": {"K": "ten"}}, "features.K = 'ten' has the wrong type"),
        ({"methods": {"x": {"kind": "trak", "output_fn": "lossy"}}}, "methods.x.output_fn"),
        ({"methods": {"x": {"kind": "trak", "noise": "shared"}}}, "methods.x.noise = 'shared'"),
        ({"features": {"noise": "per_batch"}}, "features.noise = 'per_batch' is not valid"),
        ({"methods": {"x": {"kind": "raw_cos", "noise": "common"}}}, "key 'noise' is not a"),
    ],
)
def test_bad_values_are_named(override, message):
    with open(ROOT / "tests" / "config-tiny.yaml") as handle:
        config = yaml.safe_load(handle)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert message in str(error.value)


def test_missing_required_key():
    with pytest.raises(ConfigError, match="required"):
        validate_config({"experiment": "x"})


def test_noise_scheme_is_a_method_parameter_and_part_of_the_feature_path():
    from diffattr.methods import method_needs
    from diffattr.methods.base import DEFAULT_NOISE

    schema = yaml.safe_load(
        (ROOT / "src" / "diffattr" / "schemas" / "config.schema.yaml").read_text()
    )
    assert schema["properties"]["features"]["properties"]["noise"]["default"] == DEFAULT_NOISE
    with open(ROOT / "tests" / "config-tiny.yaml") as handle:
        config = yaml.safe_load(handle)
    config["features"]["noise"] = "independent"
    config["methods"] = {
        "a": {"kind": "trak", "output_fn": "square"},
        "b": {"kind": "trak", "output_fn": "square", "noise": "reference"},
        "c": {"kind": "raw_cos"},
        "d": {"kind": "trak", "output_fn": "square", "noise_seed": 3},
    }
    config = validate_config(config)
    assert config["methods"]["a"]["noise"] == "independent"
    assert config["methods"]["b"]["noise"] == "reference"
    assert "noise" not in config["methods"]["c"]
    K = config["features"]["K"][0]
    fields = [method_needs(config, m, K, "val")["test"][0].fields for m in ("a", "b", "d")]
    assert [f["noise"] for f in fields] == ["independent", "reference", "independent-s3"]
    assert split_noise_tag("independent-s3") == ("independent", 3)
    assert split_noise_tag("common") == ("common", None)
    with pytest.raises(ConfigError, match="not a feature-noise tag"):
        split_noise_tag("shared-s1")
    config["methods"]["d"]["noise_seed"] = -1
    with pytest.raises(ConfigError, match="methods.d.noise_seed"):
        validate_config(config)
