"""The typed readers and writers of diffattr.files: documented keys, refusals, round trips, and
one score layout whoever writes it."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from diffattr import files, scoring, spectral, store
from diffattr.errors import CorruptFileError, FeatureMismatchError

FEATURE_ATTRS = {
    "proj_kind": "normal",
    "proj_seed": 0,
    "output_fn": "loss",
    "timesteps": [0, 10],
    "noise_seed": 0,
    "noise": "common",
    "noise_batch_size": 0,
    "noise_shard_rows": 0,
    "model_digest": "abc",
}
N_TRAIN, N_TEST, DIM = 12, 3, 5
LAMBDAS = [0.1, 1.0, 10.0]


def _features(tmp_path):
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(N_TRAIN, DIM)), rng.normal(size=(N_TEST, DIM))
    files.write_features(tmp_path / "train.h5", train, np.arange(N_TRAIN), FEATURE_ATTRS)
    files.write_features(tmp_path / "test.h5", test, np.arange(N_TEST) + 50, FEATURE_ATTRS)
    return train, test


def _strip(path, attr):
    with h5py.File(path, "r+") as handle:
        del handle.attrs[attr]


def _refuses(path, attr, read):
    with pytest.raises(CorruptFileError) as error:
        read(path)
    assert str(path) in str(error.value) and repr(attr) in str(error.value)


def test_the_docstring_documents_every_required_key():
    doc = files.__doc__
    for key in (
        *files.SCORE_ATTRS,
        *files.GROUNDTRUTH_ATTRS,
        *files.GENERATION_ATTRS,
        *files.REMOVAL_ATTRS,
        *files.REGENERATION_ATTRS,
        *files.MEASURED_ATTRS,
        *files.TARGETS_ATTRS,
        *files.TRAJECTORY_ATTRS,
        *files.SCORE_DATASETS,
        "guidance_scale",
    ):
        assert key in doc, key


# --------------------------------------------------------------------------- scores


def _score_job(tmp_path, name):
    from diffattr.methods.base import ScoreJob

    return ScoreJob("m", "trak", {}, 0, "val", {}, str(tmp_path / name))


def _producers(tmp_path, grid):
    """The same [L, n, N] grid written by every producer of score files."""
    from diffattr.api import Attribution
    from diffattr.attribute import write_scores
    from diffattr.methods import get_method

    train_ids, test_ids = np.arange(N_TRAIN), np.arange(N_TEST) + 50
    paths = {}
    paths["write_scores"] = tmp_path / "plain.h5"
    files.write_scores(
        paths["write_scores"], files.Scores(grid, LAMBDAS, train_ids, test_ids, {"lds_sign": -1})
    )
    job = _score_job(tmp_path, "grid.h5")
    get_method("trak").write_score_grid(job, grid, LAMBDAS, train_ids, test_ids)
    paths["write_score_grid"] = tmp_path / "grid.h5"
    attribution = Attribution(
        scores=grid[1],
        train_paths=[f"t{i}.png" for i in range(N_TRAIN)],
        query_paths=[f"q{i}.png" for i in range(N_TEST)],
        train_ids=train_ids,
        query_ids=test_ids,
        lambda_=LAMBDAS[1],
        attrs={"method": "dtrak"},
    )
    write_scores(attribution, tmp_path / "cli.h5")
    paths["attribute"] = tmp_path / "cli.h5"
    return paths


def test_every_producer_writes_one_score_layout(tmp_path):
    train, test = _features(tmp_path)
    expected = scoring.trak_scores(train, test, LAMBDAS)
    scoring.write_trak_scores(
        tmp_path / "train.h5", tmp_path / "test.h5", tmp_path / "trak.h5", LAMBDAS, {}
    )
    paths = {"write_trak_scores": tmp_path / "trak.h5", **_producers(tmp_path, expected)}
    with spectral.open_scores(tmp_path / "trak.h5") as grid:
        spectral.write_selected_scores(grid, tmp_path / "selected.h5", [1])
    paths["write_selected_scores"] = tmp_path / "selected.h5"
    for name, path in paths.items():
        scores = files.read_scores(path)
        one_lambda = name in ("attribute", "write_selected_scores")
        want = expected[1:2] if one_lambda else expected
        np.testing.assert_allclose(scores.scores, want, rtol=1e-5, atol=1e-6, err_msg=name)
        assert scores.scores.dtype == np.float32, name
        assert scores.lambdas.dtype == np.float64 and scores.train_ids.dtype == np.int64, name
        assert scores.train_ids.tolist() == list(range(N_TRAIN)), name
        assert scores.test_ids.tolist() == [50, 51, 52], name
        assert scores.lds_sign == -1, name
        attrs = store.read_attrs(path)
        assert all(key in attrs for key in files.SCORE_ATTRS), name
        with h5py.File(path) as handle:
            assert {"scores", "lambdas", "train_ids", "test_ids"} <= set(handle), name
    assert store.read_attrs(paths["write_score_grid"])["kind"] == "trak"


def test_the_command_line_score_file_states_its_sign(tmp_path):
    paths = _producers(tmp_path, np.ones((len(LAMBDAS), N_TEST, N_TRAIN), np.float32))
    attrs = store.read_attrs(paths["attribute"])
    assert attrs["lds_sign"] == -1 and attrs["score_kind"] == "dtrak"
    from diffattr.attribute import read_attribution

    assert read_attribution(paths["attribute"]).train_paths[2] == "t2.png"


def test_score_readers_refuse_a_file_without_lds_sign(tmp_path):
    grid = np.zeros((1, N_TEST, N_TRAIN), np.float32)
    path = tmp_path / "s.h5"
    files.write_scores(
        path, files.Scores(grid, [1.0], np.arange(N_TRAIN), np.arange(N_TEST), {"lds_sign": 1})
    )
    assert files.read_scores(path).lds_sign == 1
    _strip(path, "lds_sign")
    _refuses(path, "lds_sign", files.read_scores)
    _refuses(path, "lds_sign", files.ScoreFile)
    _refuses(path, "lds_sign", spectral.open_scores)


def test_a_spectra_file_without_lds_sign_is_refused(tmp_path):
    _features(tmp_path)
    path = tmp_path / "spectra.h5"
    spectral.write_spectra(tmp_path / "train.h5", tmp_path / "test.h5", path, {"method": "m"})
    assert store.read_attrs(path)["lds_sign"] == -1  # the TRAK writer states it
    _strip(path, "lds_sign")
    _refuses(path, "lds_sign", lambda p: spectral.open_scores(p, LAMBDAS))


def test_score_writers_refuse_attrs_without_lds_sign(tmp_path):
    grid = np.zeros((1, N_TEST, N_TRAIN), np.float32)
    for attrs in ({}, {"lds_sign": 0}):
        with pytest.raises(CorruptFileError, match="lds_sign"):
            files.write_scores(
                tmp_path / "s.h5",
                files.Scores(grid, [1.0], np.arange(N_TRAIN), np.arange(N_TEST), attrs),
            )
    assert not (tmp_path / "s.h5").exists()
    with pytest.raises(CorruptFileError, match="lds_sign"):
        spectral.write_spectra_members(tmp_path / "x.h5", [], np.arange(2), np.arange(2), {})


def test_score_file_reads_rows_in_the_order_asked(tmp_path):
    grid = np.random.default_rng(1).normal(size=(2, 5, N_TRAIN)).astype(np.float32)
    path = tmp_path / "s.h5"
    files.write_scores(
        path, files.Scores(grid, [1.0, 2.0], np.arange(N_TRAIN), np.arange(5), {"lds_sign": -1})
    )
    with files.ScoreFile(path) as score:
        np.testing.assert_array_equal(score.read_rows(1, [4, 0, 2]), grid[1, [4, 0, 2]])
        assert score.lambda_index(2.0) == 1
        np.testing.assert_array_equal(score.read_block([0, 1], 3, 7), grid[:, :, 3:7])


# --------------------------------------------------------------------------- ground truth


def test_groundtruth_round_trip_and_missing_split(tmp_path):
    rng = np.random.default_rng(2)
    masks = rng.random((4, N_TRAIN)) < 0.5
    by_seed = rng.normal(size=(2, 4, N_TEST))
    path = tmp_path / "gt.h5"
    attrs = {"pool": "lds", "num_subsets": 4, "num_seeds": 2, "splits": ["val"]}
    files.write_groundtruth(
        path, masks, np.arange(N_TRAIN), {"val": (by_seed, np.arange(3))}, attrs
    )
    truth = files.read_groundtruth(path, "val", by_seed=True)
    np.testing.assert_array_equal(truth.masks, masks)
    np.testing.assert_array_equal(truth.measured, by_seed.mean(axis=0))
    np.testing.assert_array_equal(truth.measured_by_seed, by_seed)
    assert truth.ids.tolist() == [0, 1, 2] and truth.train_ids.tolist() == list(range(N_TRAIN))
    assert files.read_groundtruth(path, "val").measured_by_seed is None
    assert {k: store.read_attrs(path)[k] for k in attrs} == attrs
    with pytest.raises(FeatureMismatchError, match="split 'gen'"):
        files.read_groundtruth(path, "gen")
    with pytest.raises(CorruptFileError, match="num_subsets"):
        files.write_groundtruth(tmp_path / "x.h5", masks, np.arange(N_TRAIN), {}, {"pool": "p"})


# --------------------------------------------------------------------------- features


def test_feature_file_round_trip_and_streaming(tmp_path):
    train, _ = _features(tmp_path)
    stored = files.read_features(tmp_path / "train.h5")
    np.testing.assert_array_equal(stored.features, train.astype(np.float32).astype(np.float64))
    assert stored.attrs["n_rows"] == N_TRAIN and stored.attrs["proj_dim"] == DIM
    assert "complete" not in stored.attrs
    with files.FeatureFile(tmp_path / "train.h5", "train") as feature_file:
        np.testing.assert_array_equal(feature_file.rows(3, 7), stored.features[3:7])
        assert list(feature_file.chunks(5)) == [(0, 5), (5, 10), (10, 12)]
        with files.FeatureFile(tmp_path / "test.h5", "test") as other:
            feature_file.require_same(other, list(store.FEATURE_CHECK_KEYS))
    files.write_features(tmp_path / "odd.h5", train, np.arange(N_TRAIN),
                         {**FEATURE_ATTRS, "model_digest": "zzz"})  # fmt: skip
    with pytest.raises(FeatureMismatchError, match="model_digest"):
        files.read_feature_pair(tmp_path / "odd.h5", tmp_path / "test.h5", ["model_digest"])


# --------------------------------------------------------------------------- samples


def _samples(path, prompts=None, **attrs):
    record = {"model_digest": "d", "steps": 3, "eta": 0.0, "gen_seed": 0, "batch_size": 2}
    record.update(attrs)
    arrays = {"images": np.zeros((3, 1, 4, 4), np.float32), "seeds": np.arange(3),
              "ids": np.arange(3)}  # fmt: skip
    if prompts is not None:
        arrays["prompts"] = np.array(prompts, dtype=object)
    store.write_h5(path, arrays, {k: v for k, v in record.items() if v is not None})


def test_samples_generation_record(tmp_path):
    _samples(tmp_path / "u.h5")
    samples = files.read_samples(tmp_path / "u.h5")
    generation = samples.generation()
    assert (generation.steps, generation.batch_size, generation.guidance_scale) == (3, 2, None)
    assert samples.prompts is None and samples.position(2) == 2
    _samples(tmp_path / "c.h5", ["a", "json:b", "c"], guidance_scale=3.0)
    conditional = files.read_samples(tmp_path / "c.h5", images=False)
    assert conditional.prompts == ["a", "json:b", "c"] and conditional.images is None
    assert conditional.generation().guidance_scale == 3.0


@pytest.mark.parametrize("missing", ["batch_size", "steps", "model_digest", "guidance_scale"])
def test_samples_without_a_generation_attribute_are_refused(tmp_path, missing):
    path = tmp_path / "s.h5"
    _samples(path, ["a", "b", "c"], **{"guidance_scale": 7.5, missing: None})
    _refuses(path, missing, lambda p: files.read_samples(p).generation())


# --------------------------------------------------------------------------- counterfactual


def test_removal_and_regeneration_round_trip(tmp_path):
    attrs = {"kind": "counterfactual_removal", "method": "m", "target": 3, "top_k": 2,
             "n_train": 5, "size": 3}  # fmt: skip
    files.write_removal(tmp_path / "r.h5", np.array([0, 2, 4]), np.array([3, 1]), np.ones(5), attrs)
    removal = files.read_removal(tmp_path / "r.h5")
    assert (removal.method, removal.target) == ("m", 3)
    assert removal.removed.tolist() == [3, 1] and removal.scores.dtype == np.float32
    with pytest.raises(CorruptFileError, match="'top_k'"):
        files.write_removal(tmp_path / "x.h5", np.array([0]), np.array([1]), np.ones(2),
                            {k: v for k, v in attrs.items() if k != "top_k"})  # fmt: skip
    regenerated = {"kind": "counterfactual_regeneration", "method": "m", "target": 3, "seed": 3,
                   "prompt": None, "steps": 3, "eta": 0.0, "batch_size": 2,
                   "model_digest": "x", "gen_model_digest": "y"}  # fmt: skip
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    files.write_regeneration(tmp_path / "g.h5", image, regenerated)
    back = files.read_regeneration(tmp_path / "g.h5")
    np.testing.assert_array_equal(back.image, image)
    assert back.attrs["prompt"] is None and back.target == 3


# --------------------------------------------------------------------------- measured outputs

MEASURED = {
    "model_digest": "abc",
    "splits": ["val"],
    "timesteps": [0, 10],
    "noise_seeds": [0, 1],
    "output_fn": "loss",
}


def _measured(path, outputs, ids, **attrs):
    files.write_measured(path, {"val": (outputs, ids)}, {**MEASURED, **attrs})


def test_measured_round_trip_is_the_mean_over_noise_draws(tmp_path):
    by_noise = np.arange(8, dtype=np.float32).reshape(2, 4)
    _measured(tmp_path / "m.h5", by_noise, np.arange(4) + 7)
    measured = files.read_measured(tmp_path / "m.h5", "val")
    np.testing.assert_array_equal(measured.outputs, [2, 3, 4, 5])
    assert measured.ids.tolist() == [7, 8, 9, 10] and measured.output_fn == "loss"
    with h5py.File(tmp_path / "m.h5") as handle:  # the documented layout
        assert {"val/loss", "val/loss_by_noise", "val/ids"} <= {
            f"val/{name}" for name in handle["val"]
        }
    with pytest.raises(FeatureMismatchError, match="'gen'"):
        files.read_measured(tmp_path / "m.h5", "gen")


def test_a_measured_file_that_does_not_say_its_output_is_refused(tmp_path):
    _measured(tmp_path / "m.h5", np.ones((1, 3), np.float32), np.arange(3))
    _strip(tmp_path / "m.h5", "output_fn")
    _refuses(tmp_path / "m.h5", "output_fn", lambda p: files.read_measured(p, "val"))
    with pytest.raises(CorruptFileError, match="output_fn"):
        files.write_measured(tmp_path / "n.h5", {}, {k: 0 for k in MEASURED if k != "output_fn"})


def test_one_ground_truth_holds_one_measured_output(tmp_path):
    from diffattr.data import prepare_dataset, write_subset
    from diffattr.jobs.lds import collect_groundtruth

    dataset = str(tmp_path / "dataset.h5")
    digits = {"source": "digits", "resolution": 8, "channels": 1, "stratify": False}
    prepare_dataset({**digits, "train_size": 4, "val_size": 3}, dataset)
    subsets = []
    for k in range(2):
        subsets.append(str(tmp_path / f"s{k}.h5"))
        attrs = {"pool": "p", "k": k, "alpha": 0.5, "pool_seed": 0, "n_train": 4}
        write_subset(subsets[-1], np.array([k, k + 2]), attrs)
    measured = []
    for k, fn in enumerate(["loss", "square_norm"]):
        measured.append(str(tmp_path / f"m{k}.h5"))
        _measured(measured[-1], np.ones((1, 3), np.float32), np.arange(3), output_fn=fn)
    with pytest.raises(FeatureMismatchError, match="square_norm") as error:
        collect_groundtruth(
            dataset, subsets, [measured], str(tmp_path / "gt.h5"), pool="p", splits=["val"]
        )
    assert measured[1] in str(error.value) and not (tmp_path / "gt.h5").exists()
    _measured(measured[1], np.ones((1, 3), np.float32), np.arange(3))  # both measure the loss
    collect_groundtruth(
        dataset, subsets, [measured], str(tmp_path / "gt.h5"), pool="p", splits=["val"]
    )
    truth = files.read_groundtruth(tmp_path / "gt.h5", "val")
    assert truth.masks.tolist() == [[1, 0, 1, 0], [0, 1, 0, 1]]
    assert files.groundtruth_splits(tmp_path / "gt.h5") == ["val"]


def test_targets_round_trip_in_their_drawn_order(tmp_path):
    attrs = {
        "kind": "counterfactual_targets",
        "target_seed": 0,
        "num_targets": 3,
        "num_samples": 9,
        "gen_model_digest": "abc",
    }
    files.write_targets(tmp_path / "t.h5", [5, 1, 3], attrs)
    assert files.read_targets(tmp_path / "t.h5") == [5, 1, 3]
    with pytest.raises(CorruptFileError, match="target_seed"):
        files.write_targets(
            tmp_path / "u.h5", [1], {k: v for k, v in attrs.items() if k != "target_seed"}
        )


def test_samples_round_trip_and_prompts_need_their_guidance(tmp_path):
    attrs = {"model_digest": "abc", "steps": 4, "eta": 0.0, "gen_seed": 1, "batch_size": 2}
    images = np.arange(3 * 4, dtype=np.float32).reshape(3, 1, 2, 2)
    files.write_samples(tmp_path / "gen.h5", images, np.array([7, 8, 9]), None, attrs)
    samples = files.read_samples(tmp_path / "gen.h5")
    np.testing.assert_array_equal(samples.images, images)
    assert samples.ids.tolist() == [0, 1, 2] and samples.seeds.tolist() == [7, 8, 9]
    assert samples.prompts is None and samples.generation().guidance_scale is None
    with pytest.raises(CorruptFileError, match="guidance_scale"):
        files.write_samples(tmp_path / "c.h5", images, np.arange(3), ["a", "b", "c"], attrs)
    assert not (tmp_path / "c.h5").exists()
    conditional = {**attrs, "guidance_scale": 7.5}
    files.write_samples(tmp_path / "c.h5", images, np.arange(3), ["a", "b", "c"], conditional)
    assert files.read_samples(tmp_path / "c.h5", images=False).prompts == ["a", "b", "c"]


def test_a_trajectory_round_trips_and_states_its_model(tmp_path):
    attrs = {"split": "gen", "model_digest": "abc", "steps": 3, "eta": 0.0, "gen_seed": 1,
             "max_image_difference": 0.0}  # fmt: skip
    x0 = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 1, 2, 2)
    files.write_trajectory(tmp_path / "t.h5", x0, np.array([900, 500, 0]), np.array([4, 5]),
                           np.array([7, 8]), attrs)  # fmt: skip
    trajectory = files.read_trajectory(tmp_path / "t.h5")
    np.testing.assert_array_equal(trajectory.x0, x0)
    assert trajectory.timesteps.tolist() == [900, 500, 0] and trajectory.ids.tolist() == [4, 5]
    assert trajectory.attrs["model_digest"] == "abc"
    with pytest.raises(CorruptFileError, match="model_digest"):
        bad = {k: v for k, v in attrs.items() if k != "model_digest"}
        files.write_trajectory(tmp_path / "u.h5", x0, np.arange(3), np.arange(2), np.arange(2), bad)
