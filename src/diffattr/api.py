"""Python API: attribute generated (or any) images to the training set of a diffusers model.

In the spirit of TRAK's ``TRAKer``: build one :class:`Attributor` for a model and a training set;
it computes the projected training features once (caching them in an HDF5 file with provenance
attributes, when given a ``cache_dir``), and then scores any number of query batches against
them::

    from diffattr.api import AttributionSettings, Attributor, Runtime

    attributor = Attributor("google/ddpm-cifar10-32", "train_images/", cache_dir="attr-cache")
    result = attributor.score("generated/")          # an Attribution: scores [n_query, n_train]
    result.top_k(10)                                  # training columns, best first
    attributor.score(more_images_array)               # reuses the cached training features

    # what is computed (method, K, projection, noise seed, λ) is one AttributionSettings;
    # batch size, device and the progress stream are a Runtime
    trak = Attributor(
        "google/ddpm-cifar10-32",
        "train_images/",
        AttributionSettings(method="trak", K=100, proj_dim=8192),
        runtime=Runtime(batch_size=64, device="cuda"),
    )

The model is a diffusers checkpoint of a pixel-space DDPM: a folder in the
``DDPMPipeline.save_pretrained`` layout (``model_index.json``, ``unet/``, ``scheduler/``; this
project's own models are saved that way too) or a hub id read from the local hub cache (and
downloaded into it when the hub is reachable and ``HF_HUB_OFFLINE`` is not set). Its scheduler
config (``num_train_timesteps``, β schedule) defines the noising of the features.

Training and query images can be a folder (recursively), a CSV with a path column, a list of
paths or PIL images, an array, or a Hugging Face ``datasets`` dataset (its image column).
Arrays are either the model's input already (float [n, C, H, W] in [-1, 1] at the UNet's size
and channels) or images to preprocess (uint8 0..255 or float [0, 1]; [n, H, W], [n, H, W, C] or
[n, C, H, W]); everything else goes through the workflow's preprocessing (resize the short side,
centre crop, [-1, 1]).

The features are the workflow's (:func:`diffattr.features.extract_features` with a projector
from :func:`diffattr.projection.make_projector`, as
:func:`diffattr.jobs.features.extract_features` builds it); the noise of each image is keyed by
a hash of its preprocessed pixels (:func:`content_ids`), so an image has the same features in
the training set and among the queries. Scores are τ = Ψ(ΦᵀΦ + λI)⁻¹Φᵀ
(:func:`diffattr.scoring.trak_scores`) at one λ (default: the mean non-zero eigenvalue of ΦᵀΦ,
see :func:`default_lambda`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffattr import store
from diffattr.errors import ConfigError, CorruptFileError, DataError
from diffattr.settings import Runtime, _check_choice, _check_int

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Output function of each method (the workflow's ``methods`` block uses the same pairs).
METHOD_OUTPUT_FNS = {"trak": "loss", "dtrak": "square"}
#: Pipelines whose ``unet/`` + ``scheduler/`` are a pixel-space DDPM the features understand.
PIXEL_PIPELINES = ("DDPMPipeline", "DDIMPipeline", "PNDMPipeline", "ScoreSdeVePipeline")
TRAIN_FEATURES_VERSION = 1


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, kw_only=True)
class AttributionSettings:
    """What an :class:`Attributor` computes, checked when built.

    ``method``: ``dtrak`` (output ‖ε̂‖²/d) or ``trak`` (the training loss); ``K`` timesteps by
    ``t_strategy`` (``uniform``: K must divide the scheduler's ``num_train_timesteps``); the
    projection ``proj_kind`` / ``proj_dim`` / ``proj_seed`` (:class:`diffattr.settings.
    ProjectionSettings` with ``projection: auto``; a structured ``energy`` layout is calibrated
    on the first training images); the features' ``noise_seed``; the ridge
    ``lambda_`` (None: the mean non-zero eigenvalue of ΦᵀΦ, :func:`default_lambda`).
    """

    method: str = "dtrak"
    K: int = 10
    t_strategy: str = "uniform"
    proj_kind: str = "normal"
    proj_dim: int = 4096
    proj_seed: int = 42
    noise_seed: int = 0
    lambda_: float | None = None

    def __post_init__(self) -> None:
        from diffattr.features import TIMESTEP_STRATEGIES
        from diffattr.projection_structured import FEATURE_PROJECTION_KINDS
        from diffattr.scoring import validate_lambdas

        _check_choice(self, "method", sorted(METHOD_OUTPUT_FNS))
        _check_int(self, "K", 1)
        _check_choice(self, "t_strategy", TIMESTEP_STRATEGIES)
        _check_choice(self, "proj_kind", FEATURE_PROJECTION_KINDS)
        _check_int(self, "proj_dim", 1)
        _check_int(self, "proj_seed")
        _check_int(self, "noise_seed")
        if self.lambda_ is not None:
            validate_lambdas([self.lambda_])

    @property
    def output_fn(self) -> str:
        return METHOD_OUTPUT_FNS[self.method]


@dataclass(frozen=True)
class ImageColumns:
    """Where a CSV or a ``datasets`` dataset keeps its images: the CSV's ``path`` column, the
    dataset's ``image`` column (None: its one ``Image`` feature)."""

    path: str = "path"
    image: str | None = None

    def __post_init__(self) -> None:
        for name in ("path", "image"):
            value = getattr(self, name)
            if not (isinstance(value, str) and value) and not (name == "image" and value is None):
                raise ConfigError(f"ImageColumns.{name} = {value!r} is not valid; expected a name")


# --------------------------------------------------------------------------- results


@dataclass
class Attribution:
    """Scores of every training image (columns) for every query image (rows) at one λ."""

    scores: np.ndarray  # float32 [n_query, n_train]
    train_paths: list[str]
    query_paths: list[str]
    train_ids: np.ndarray
    query_ids: np.ndarray
    lambda_: float
    attrs: dict[str, Any]

    def top_k(self, k: int) -> np.ndarray:
        """[n_query, k] training columns ranked by score, highest first (ties by column)."""
        k = min(int(k), self.scores.shape[1])
        return np.argsort(-self.scores, axis=1, kind="stable")[:, :k]

    def rank_of(self, query: int, train: int) -> int:
        """1-based rank of training image ``train`` among query ``query``'s scores."""
        row = self.scores[query]
        return int(np.sum(row > row[train]) + 1)


@dataclass
class ImageSet:
    """Preprocessed images: float32 [n, C, H, W] in [-1, 1], their noise keys and names."""

    images: np.ndarray
    ids: np.ndarray
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


# --------------------------------------------------------------------------- inputs


def list_images(
    source: str | os.PathLike, path_column: str = "path", role: str = "train"
) -> list[Path]:
    """Image files of a folder (recursively, sorted) or of a CSV's ``path_column``.

    CSV paths are relative to the CSV's folder unless absolute.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(
            p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"--{role} {str(source)!r}: the folder holds no image files "
                f"({', '.join(IMAGE_SUFFIXES)})"
            )
        return files
    if source.is_file() and source.suffix.lower() == ".csv":
        with open(source, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
        if path_column not in columns:
            raise DataError(
                f"--{role} {str(source)!r}: the CSV has no column {path_column!r} "
                f"(--path-column); its columns are {columns}"
            )
        files = [Path(row[path_column]) for row in rows]
        files = [p if p.is_absolute() else source.parent / p for p in files]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DataError(
                f"--{role} {str(source)!r}: {len(missing)} listed image(s) do not exist, "
                f"e.g. {missing[:3]}"
            )
        if not files:
            raise DataError(f"--{role} {str(source)!r}: the CSV lists no images")
        return files
    if source.is_file():
        raise DataError(f"--{role} {str(source)!r}: expected an image folder or a .csv file")
    raise DataError(f"--{role} {str(source)!r}: no such image folder or CSV file")


def load_images(paths: Sequence[Path], resolution: int, channels: int) -> np.ndarray:
    """Read and preprocess images to float32 [n, channels, resolution, resolution] in [-1, 1]."""
    from PIL import Image

    from diffattr.data import preprocess_images

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image.convert("L" if channels == 1 else "RGB"))
        except OSError as error:
            raise DataError(f"{path}: cannot be read as an image ({error})") from error
    return preprocess_images(images, resolution, channels)


def content_ids(images: np.ndarray) -> np.ndarray:
    """A 63-bit id per image from a hash of its preprocessed pixels (keys the feature noise)."""
    ids = np.empty(len(images), dtype=np.int64)
    for row, image in enumerate(images):
        digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=8).digest()
        ids[row] = int.from_bytes(digest, "little") >> 1
    return ids


def _dataset_images(dataset: Any, image_column: str | None, role: str) -> list[Any]:
    """The images of a ``datasets.Dataset``: ``image_column``, else its one Image feature."""
    columns = list(dataset.column_names)
    if image_column is None:
        from datasets import Image as ImageFeature

        found = [c for c, f in dataset.features.items() if isinstance(f, ImageFeature)]
        found = found or [c for c in ("image", "img") if c in columns]
        if len(found) != 1:
            raise DataError(
                f"{role}: cannot tell the image column of the dataset (columns {columns}); "
                "pass image_column="
            )
        image_column = found[0]
    if image_column not in columns:
        raise DataError(f"{role}: the dataset has no column {image_column!r}; it has {columns}")
    return list(dataset[image_column])


def as_image_set(
    source: Any,
    resolution: int,
    channels: int,
    role: str = "train",
    path_column: str = "path",
    image_column: str | None = None,
) -> ImageSet:
    """Any supported image source (see the module docstring) → an :class:`ImageSet`."""
    from diffattr.data import preprocess_images

    if isinstance(source, ImageSet):
        return source
    if isinstance(source, (str, os.PathLike)):
        paths = list_images(source, path_column, role)
        images = load_images(paths, resolution, channels)
        return ImageSet(images, content_ids(images), [str(p) for p in paths])
    if hasattr(source, "column_names") and hasattr(source, "features"):  # datasets.Dataset
        pil = _dataset_images(source, image_column, role)
        images = preprocess_images(pil, resolution, channels)
        return ImageSet(images, content_ids(images), [f"{role}[{i}]" for i in range(len(pil))])
    if isinstance(source, np.ndarray) or _is_tensor(source):
        array = np.asarray(source.detach().cpu() if _is_tensor(source) else source)
        if len(array) == 0:
            raise DataError(f"{role}: the image array is empty")
        model_space = array.ndim == 4 and array.shape[1:] == (channels, resolution, resolution)
        if model_space and np.issubdtype(array.dtype, np.floating) and array.min() < 0:
            if array.min() < -1 or array.max() > 1 or not np.isfinite(array).all():
                raise DataError(f"{role}: model-space images must lie in [-1, 1]")
            images = np.ascontiguousarray(array, dtype=np.float32)
        else:
            if array.ndim == 4 and array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3, 4):
                array = array.transpose(0, 2, 3, 1)  # [n, C, H, W] → [n, H, W, C]
            if array.ndim not in (3, 4):
                raise DataError(
                    f"{role}: image array has shape {array.shape}; expected [n, H, W], "
                    "[n, H, W, C] or [n, C, H, W]"
                )
            images = preprocess_images(array, resolution, channels)
        return ImageSet(images, content_ids(images), [f"{role}[{i}]" for i in range(len(images))])
    if isinstance(source, Sequence) and len(source) > 0:
        if all(isinstance(s, (str, os.PathLike)) for s in source):
            paths = [Path(s) for s in source]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise DataError(f"{role}: {len(missing)} image file(s) missing, e.g. {missing[:3]}")
            images = load_images(paths, resolution, channels)
            return ImageSet(images, content_ids(images), [str(p) for p in paths])
        images = preprocess_images(list(source), resolution, channels)  # PIL images or arrays
        return ImageSet(images, content_ids(images), [f"{role}[{i}]" for i in range(len(images))])
    raise DataError(
        f"{role}: unsupported image source {type(source).__name__}; give a folder, a CSV, a list "
        "of paths or PIL images, an array or a datasets.Dataset"
    )


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


# --------------------------------------------------------------------------- the checkpoint


def checkpoint_folder(model: str | os.PathLike) -> Path:
    """The local folder of a checkpoint: the folder itself, or a hub snapshot (cache first)."""
    path = Path(model)
    if path.is_dir():
        return path
    text = str(model)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise CorruptFileError(
            f"model {text!r}: no such model folder (expected a DDPMPipeline folder with unet/ "
            "and scheduler/, or a hub id such as google/ddpm-cifar10-32)"
        )
    from huggingface_hub import snapshot_download

    patterns = ["model_index.json", "unet/*", "scheduler/*"]
    try:
        return Path(snapshot_download(text, allow_patterns=patterns))
    except Exception as error:  # offline, unknown id, no access: one readable message
        raise CorruptFileError(
            f"model {text!r} is not a local folder and could not be read from the hub or its "
            f"cache ({type(error).__name__}: {error})"
        ) from None


def load_checkpoint(model: str | os.PathLike, device: str = "auto") -> tuple[Any, Any, Path]:
    """(UNet2DModel, DDPMScheduler, folder) of a pixel-space DDPM checkpoint, in eval mode.

    The scheduler is read from ``scheduler/scheduler_config.json`` as a ``DDPMScheduler`` (the
    training noise schedule: ``num_train_timesteps``, β schedule), whatever sampler class the
    folder names.
    """
    from diffattr.diffusers_imports import UNet2DModel
    from diffattr.models import load_scheduler, model_kind, move_module, resolve_device

    folder = checkpoint_folder(model)
    if model_kind(folder) != "unet":
        raise ConfigError(
            f"model {str(model)!r} is a {model_kind(folder)!r} model; the attribution API scores "
            "pixel-space DDPM pipelines (UNet2DModel + scheduler)"
        )
    index = folder / "model_index.json"
    if index.is_file():
        name = json.loads(index.read_text()).get("_class_name")
        if name not in PIXEL_PIPELINES:
            raise ConfigError(
                f"model {str(model)!r}: model_index.json names a {name!r}; the attribution API "
                f"scores pixel-space pipelines ({', '.join(PIXEL_PIPELINES)})"
            )
    for part in ("unet", "scheduler"):
        if not (folder / part).is_dir():
            raise CorruptFileError(
                f"model {str(model)!r}: no {part}/ folder (a DDPMPipeline.save_pretrained "
                "layout has model_index.json, unet/ and scheduler/)"
            )
    torch_device = resolve_device(device)
    try:
        unet = move_module(UNet2DModel.from_pretrained(folder / "unet"), torch_device).eval()
        scheduler = load_scheduler(folder / "scheduler")
    except (OSError, ValueError, RuntimeError) as error:  # bad JSON, truncated safetensors
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CorruptFileError(
            f"model {str(model)!r}: the saved model cannot be loaded ({first}); expected a "
            "complete DDPMPipeline.save_pretrained folder (unet/config.json + weights, "
            "scheduler/). Save or download it again."
        ) from error
    return unet, scheduler, folder


def model_image_shape(model: Any, where: str | os.PathLike) -> tuple[int, int]:
    """(resolution, channels) the UNet expects, from its config."""
    size = model.config.sample_size
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ConfigError(f"{where}: non-square sample_size {list(size)} is not supported")
        size = size[0]
    channels = int(model.config.in_channels)
    if size is None or channels not in (1, 3):
        raise ConfigError(
            f"{where}: the UNet has sample_size={size!r}, in_channels={channels}; expected a "
            "square image size and 1 or 3 channels"
        )
    return int(size), channels


def default_lambda(train_features: np.ndarray) -> float:
    """The mean non-zero eigenvalue of ΦᵀΦ: ‖Φ‖²_F / min(N, Z).

    It sets the ridge to the typical scale of the spectrum, so directions with much less energy
    than average are damped and the dominant ones are kept. A heuristic with no held-out check;
    the workflow chooses λ on held-out subsets instead.
    """
    phi = np.asarray(train_features, dtype=np.float64)
    value = float(np.sum(phi * phi) / min(phi.shape))
    if not np.isfinite(value) or value <= 0:
        raise DataError(
            f"cannot derive λ from training features with squared norm {value}; pass lambda_"
        )
    return value


# --------------------------------------------------------------------------- the attributor


class Attributor:
    """TRAK / D-TRAK attribution of query images to one model's training set.

    The training features are computed on first use (``train_features``) and kept, in memory and,
    with ``cache_dir``, in ``cache_dir/train-<key>.h5`` (the workflow's feature layout, with
    provenance attributes that are checked when the file is read back: another model, other
    training images or other feature settings never reuse it). ``calls`` counts the images
    featurised per role, so a caller (or a test) can see that a second query batch recomputed no
    training feature.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        train: Any,
        settings: AttributionSettings | None = None,
        *,
        runtime: Runtime | None = None,
        cache_dir: str | os.PathLike | None = None,
        columns: ImageColumns | None = None,
    ) -> None:
        """``model``: a checkpoint folder or hub id; ``train``: any image source (module
        docstring); ``settings``: what is computed (default :class:`AttributionSettings`());
        ``runtime``: batch size, device and progress stream (default ``Runtime(batch_size=16)``,
        device ``auto``; its ``threads`` is not used here); ``cache_dir``: where the training
        features are kept; ``columns``: the image columns of CSV and ``datasets`` sources.

        Changed in the settings redesign: the options that were keyword arguments of this
        constructor (``method``, ``K``, ``t_strategy``, ``proj_kind``, ``proj_dim``,
        ``proj_seed``, ``noise_seed``, ``lambda_``; ``batch_size``, ``device``, ``progress``;
        ``path_column``, ``image_column``) are fields of ``settings``, ``runtime`` and
        ``columns``; passing them as keywords is a ``TypeError``. Values are checked, not
        converted: ``K=10.0`` is refused where it used to be rounded.
        """
        from diffattr import features

        settings = AttributionSettings() if settings is None else settings
        runtime = Runtime(batch_size=16) if runtime is None else runtime
        columns = ImageColumns() if columns is None else columns
        self.settings, self.runtime, self.columns = settings, runtime, columns
        self.method, self.output_fn = settings.method, settings.output_fn
        self.K, self.t_strategy = int(settings.K), settings.t_strategy
        self.noise_seed = int(settings.noise_seed)
        self.lambda_ = settings.lambda_
        self.batch_size, self.progress = runtime.batch_size, runtime.progress
        self.path_column, self.image_column = columns.path, columns.image
        self.model_ref = str(model)
        self.unet, self.scheduler, self.folder = load_checkpoint(model, runtime.device)
        self.resolution, self.channels = model_image_shape(self.unet, model)
        self.timesteps = features.select_timesteps(
            self.K, settings.t_strategy, int(self.scheduler.config.num_train_timesteps)
        )
        self.grad_dim = features.num_trainable_parameters(self.unet)
        self.train = self.images(train, "train")
        self.projector = self._make_projector(settings)
        self.model_digest = store.digest_directory(self.folder)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.calls = {"train": 0, "query": 0}
        self._train_features: np.ndarray | None = None

    # ----------------------------------------------------------------- features

    def _make_projector(self, settings: AttributionSettings) -> Any:
        """The projector of the workflow's feature jobs, built by the same factory
        (:meth:`diffattr.settings.ProjectionSettings.projector`, which
        :func:`diffattr.jobs.features.extract_features` calls), with ``projection: auto``; an
        ``energy`` layout is calibrated on the first training images (their content ids key the
        noise, :mod:`diffattr.calibration`)."""
        from diffattr.calibration import train_calibration
        from diffattr.models import DiffusionModel
        from diffattr.settings import ProjectionSettings

        projection = ProjectionSettings(
            proj_kind=settings.proj_kind,
            proj_dim=settings.proj_dim,
            proj_seed=settings.proj_seed,
            projection="auto",
        )
        calibrate = train_calibration(
            DiffusionModel(self.unet, self.scheduler),
            self.train.images,
            self.train.ids,
            self.output_fn,
            settings.proj_seed,
        )
        return projection.projector(self.unet, calibrate)

    def images(self, source: Any, role: str = "query") -> ImageSet:
        """Preprocess any supported image source to the model's size and channels."""
        return as_image_set(
            source, self.resolution, self.channels, role, self.path_column, self.image_column
        )

    def feature_attrs(self) -> dict[str, Any]:
        """The provenance of this attributor's features (``store.FEATURE_CHECK_KEYS`` and more)."""
        return {
            "output_fn": self.output_fn,
            "K": self.K,
            "t_strategy": self.t_strategy,
            "timesteps": self.timesteps,
            "noise_seed": self.noise_seed,
            "noise_key": "content hash of the preprocessed image",
            "model_digest": self.model_digest,
            "model_kind": "unet",
            "grad_dim": self.grad_dim,
            "resolution": self.resolution,
            "channels": self.channels,
            **{
                f"proj_{k}" if not k.startswith("proj") else k: v
                for k, v in self.projector.describe().items()
            },
        }

    def featurize(self, images: ImageSet, role: str = "query") -> np.ndarray:
        """Projected gradient features [n, Z] of preprocessed images (the workflow's function)."""
        from diffattr import features
        from diffattr.settings import Runtime

        self.calls[role] = self.calls.get(role, 0) + len(images)
        logger.info("%s: %d images, features ...", role, len(images))
        return features.extract_features(
            self.unet,
            self.scheduler,
            features.QueryRows(images.images, images.ids),
            features.GradientOptions(
                output_fn=self.output_fn, timesteps=self.timesteps, noise_seed=self.noise_seed
            ),
            self.projector,
            Runtime(batch_size=self.batch_size, progress=self.progress),
        )

    def _train_attrs(self) -> dict[str, Any]:
        ids = np.ascontiguousarray(self.train.ids, dtype=np.int64)
        train_digest = hashlib.sha256(ids.tobytes()).hexdigest()[:16]
        return {
            **self.feature_attrs(),
            "split": "train",
            "train_digest": train_digest,
            "api_version": TRAIN_FEATURES_VERSION,
        }

    @property
    def cache_path(self) -> Path | None:
        """``cache_dir/train-<key>.h5``; the key is a digest of the provenance attributes."""
        if self.cache_dir is None:
            return None
        text = json.dumps(self._train_attrs(), sort_keys=True, default=str)
        return self.cache_dir / f"train-{hashlib.sha256(text.encode()).hexdigest()[:16]}.h5"

    @property
    def train_features(self) -> np.ndarray:
        """Φ [N, Z]: computed once, then served from memory or from the cache file."""
        if self._train_features is not None:
            return self._train_features
        from diffattr.files import read_features, write_features

        expected, path = self._train_attrs(), self.cache_path
        if path is not None and path.is_file():
            cached = read_features(path, dtype=np.float32)
            matrix = cached.features
            store.require_attrs(cached.attrs, expected, str(path))
            if not np.array_equal(cached.ids, self.train.ids):
                raise CorruptFileError(f"{path}: its row ids are not the training images'")
            logger.info("training features read from %s", path)
        else:
            matrix = self.featurize(self.train, "train")
            if path is not None:
                write_features(path, matrix, self.train.ids, expected)
        self._train_features = matrix
        return matrix

    # ----------------------------------------------------------------- scores

    def score(self, queries: Any, lambda_: float | None = None) -> Attribution:
        """Scores of every training image for every query image (one λ)."""
        from diffattr.scoring import trak_scores, validate_lambdas

        query = self.images(queries, "query")
        psi = self.featurize(query, "query")
        phi = self.train_features
        chosen = lambda_ if lambda_ is not None else self.lambda_
        if chosen is not None:
            validate_lambdas([chosen])
        rule = "given" if chosen is not None else "mean non-zero eigenvalue of the kernel"
        chosen = default_lambda(phi) if chosen is None else float(chosen)
        scores = trak_scores(phi, psi, [chosen])[0]
        attrs = {
            "method": self.method,
            **self.feature_attrs(),
            "model_path": self.model_ref,
            "lambda_rule": rule,
        }
        return Attribution(
            scores=scores,
            train_paths=list(self.train.names),
            query_paths=list(query.names),
            train_ids=self.train.ids,
            query_ids=query.ids,
            lambda_=chosen,
            attrs=attrs,
        )


__all__ = [
    "Attribution",
    "AttributionSettings",
    "Attributor",
    "ImageColumns",
    "ImageSet",
    "METHOD_OUTPUT_FNS",
    "Runtime",
    "as_image_set",
    "content_ids",
    "default_lambda",
    "list_images",
    "load_checkpoint",
]
