"""Build, save and load diffusion models of every kind behind one small handle.

Two kinds (``model.kind``):

* ``unet``: a :class:`diffusers.UNet2DModel` trained from scratch on pixels. Its directory is a
  diffusers ``DDPMPipeline`` layout (``model_index.json``, ``unet/``, ``scheduler/``), so users
  can open it with ``DDPMPipeline.from_pretrained``.
* ``sd_lora``: a Stable Diffusion base (``model.base``: a local pipeline directory or a hub id
  already in the Hugging Face cache) whose UNet carries peft LoRA adapters; only the adapters
  train. Its directory holds the adapter alone (``lora/adapter_config.json`` and
  ``lora/adapter_model.safetensors``, peft's layout), the DDPM training schedule taken from the
  base (``scheduler/``) and ``diffattr_model.json``, which names the base model.

Every stage works through :class:`DiffusionModel`: ``denoiser`` (whose trainable parameters are
the features' parameters), ``scheduler``, ``encode`` (images → x0: identity, or the VAE latent
× scaling factor), ``condition`` (captions → ``encoder_hidden_states`` or None) and ``decode``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffattr.base_model import (
    DEFAULT_BASE,
    SD_COMPONENTS,
    check_base_model,
    resolve_base_model,
)
from diffattr.diffusers_imports import DDPMScheduler, UNet2DModel
from diffattr.errors import ConfigError, CorruptFileError
from diffattr.store import atomic_dir

logger = logging.getLogger(__name__)

MODEL_KINDS: tuple[str, ...] = ("unet", "sd_lora")
MODEL_FILE = "diffattr_model.json"
TRAINING_FILE = "diffattr_training.json"  # which weights were saved (EMA or last step), and how
LORA_DIR = "lora"
DEFAULT_LORA = {
    "rank": 128,
    "alpha": None,
    "target_modules": ["to_q", "to_k", "to_v", "to_out.0"],
    "dropout": 0.0,
}
PRECISIONS = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------- building blocks


def build_unet(unet_config: dict[str, Any], dropout: float = 0.0) -> UNet2DModel:
    """A randomly initialised UNet2DModel from a config block; every ``nn.Dropout`` set to ``dropout``.

    The reference code forces p=0.1 on every dropout module (resnets and attention alike), which
    ``UNet2DModel(dropout=...)`` alone does not reach; we do the same explicitly.
    """
    try:
        model = UNet2DModel(**unet_config)
    except TypeError as error:
        raise ConfigError(
            f"model.unet: {error}; see diffusers.UNet2DModel for valid keys"
        ) from error
    set_dropout(model, dropout)
    return model


def set_dropout(model: torch.nn.Module, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"model.dropout = {p} is invalid; it must lie in [0, 1)")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def build_scheduler(scheduler_config: dict[str, Any]) -> DDPMScheduler:
    """The training noise schedule (linear β, ε-prediction by default)."""
    return DDPMScheduler(**scheduler_config)


def load_scheduler(folder: str | os.PathLike) -> DDPMScheduler:
    """``DDPMScheduler.from_pretrained(folder)`` without importing every scheduler diffusers
    calls compatible with it (``from_config`` does, to drop their keys from the config; one of
    them imports ``scipy.stats``). A saved DDPM config whose keys the constructor takes is
    built directly (the same schedule; only the private ``_class_name`` / ``_diffusers_version``
    entries are not copied into ``.config``); any other goes through ``from_pretrained``."""
    import inspect

    folder = Path(folder)
    try:
        saved = json.loads((folder / "scheduler_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return DDPMScheduler.from_pretrained(folder)  # its own, clearer, errors
    public = {k: v for k, v in saved.items() if not k.startswith("_")}
    accepted = set(inspect.signature(DDPMScheduler.__init__).parameters) - {"self"}
    if saved.get("_class_name", "DDPMScheduler") != "DDPMScheduler" or not set(public) <= accepted:
        return DDPMScheduler.from_pretrained(folder)
    return DDPMScheduler(**public)


def save_model(
    model: UNet2DModel,
    scheduler: DDPMScheduler,
    path: str | os.PathLike,
    training: dict[str, Any] | None = None,
) -> None:
    """Save atomically as a DDPMPipeline directory (safetensors weights); ``training`` (which
    weights these are, see :func:`diffattr.training.train_diffusion_model`) goes to
    ``diffattr_training.json`` beside them."""
    with atomic_dir(path) as tmp:
        write_pipeline_layout(model, scheduler, tmp)
        write_training_record(tmp, training)


def write_training_record(path: Path, training: dict[str, Any] | None) -> None:
    if training is not None:
        (path / TRAINING_FILE).write_text(json.dumps(training, indent=2, sort_keys=True) + "\n")


def training_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The training record of a saved model directory (None for models saved without one)."""
    file = Path(path) / TRAINING_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CorruptFileError(f"{file}: unreadable ({error})") from error


def write_pipeline_layout(model: UNet2DModel, scheduler: DDPMScheduler, path: Path) -> None:
    """What ``DDPMPipeline(unet=model, scheduler=scheduler).save_pretrained(path)`` writes.

    Written here so that a training job does not import the pipeline machinery (diffusers'
    loaders and ``scipy.stats``: about a second of CPU per job); ``DDPMPipeline.from_pretrained``
    reads it (tests/test_training.py compares the two layouts).
    """
    import diffusers

    path = Path(path)
    model.save_pretrained(path / "unet", safe_serialization=True)
    scheduler.save_pretrained(path / "scheduler")
    index = {
        "_class_name": "DDPMPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", type(scheduler).__name__],
        "unet": ["diffusers", type(model).__name__],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def resolve_device(name: str = "auto", gpu_requested: bool | None = None) -> torch.device:
    """``auto`` picks CUDA when present; an explicit device that is absent is an error.

    In a job that requested a GPU (``gpu_requested``; by default
    :func:`diffattr.jobenv.gpu_requested`: a cluster job of a rule with ``resources: gpu=1``,
    which every GPU rule has unless ``device: cpu``), ``auto`` without a visible CUDA device is
    an error too, instead of a silent run on the CPU.
    """
    from diffattr.jobenv import gpu_requested as job_requested_gpu

    available = torch.cuda.is_available()
    if gpu_requested is None:
        gpu_requested = name != "cpu" and job_requested_gpu()
    if gpu_requested and not available and (name == "auto" or name.startswith("cuda")):
        raise ConfigError(
            f"device = {name!r}: this job requested a GPU (resources gpu=1) but torch "
            f"{torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); check "
            "the GPU partition / --gpus of the cluster profile and the CUDA build of torch, or "
            "set device: cpu to run on the CPU on purpose"
        )
    if name == "auto":
        if not available:
            logger.info("device auto: no CUDA device, using the CPU")
        return torch.device("cuda" if available else "cpu")
    if name.startswith("cuda") and not available:
        raise ConfigError(f"device = {name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def precision_dtype(mixed_precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of ``training.mixed_precision``; half precision needs a CUDA device."""
    if mixed_precision not in PRECISIONS:
        raise ConfigError(
            f"training.mixed_precision = {mixed_precision!r}; choose one of {sorted(PRECISIONS)}"
        )
    if mixed_precision != "no" and torch.device(device).type != "cuda":
        raise ConfigError(
            f"training.mixed_precision = {mixed_precision!r} needs a CUDA device, but this job "
            f"runs on {device}; set training.mixed_precision: 'no' to train in fp32 on the CPU"
        )
    return PRECISIONS[mixed_precision]


# --------------------------------------------------------------------------- the handle


def move_module(module: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """``module`` on ``device``, through ``torch.nn.Module.to`` itself.

    diffusers' ``ModelMixin.to`` adds two checks (bitsandbytes quantisation, group offloading)
    that a UNet of this project never needs, and its first call imports ``diffusers.hooks``:
    peft, transformers and ``torch._dynamo``, about 4 s of CPU in every job that builds or
    loads a model (``python benchmarks/run.py --only startup``). Moving the tensors is the same
    either way."""
    return torch.nn.Module.to(module, device)


class DiffusionModel:
    """A UNet2DModel on pixels: the ``unet`` kind, and the interface of every kind.

    x0 is the image itself, there is no condition, and the denoiser's parameters all train.
    """

    kind = "unet"
    conditional = False
    uses_latents = False

    def __init__(self, denoiser: torch.nn.Module, scheduler: DDPMScheduler) -> None:
        self.denoiser = denoiser
        self.scheduler = scheduler

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def to(self, device: str | torch.device) -> DiffusionModel:
        move_module(self.denoiser, device)
        return self

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one x0 (and of the generation noise): [C, H, W]."""
        config = self.denoiser.config
        return (config.in_channels, config.sample_size, config.sample_size)

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.denoiser.named_parameters() if p.requires_grad}

    def encode(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 32, scaled: bool = True
    ) -> torch.Tensor:
        """x0 of float images [n, C, H, W] in [-1, 1], float32 on the CPU (here: the images)."""
        return torch.as_tensor(np.asarray(images, dtype=np.float32))

    def condition(self, captions: Sequence[str] | None) -> torch.Tensor | None:
        """``encoder_hidden_states`` for these captions, or None for an unconditional model."""
        return None

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from x0."""
        return x0.clamp(-1, 1)

    def cast_frozen(self, dtype: torch.dtype) -> None:
        """Cast the frozen weights to ``dtype`` for mixed precision (none here)."""

    def training_state(self) -> dict[str, torch.Tensor]:
        """What a resume checkpoint must hold of the model."""
        return self.denoiser.state_dict()

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        self.denoiser.load_state_dict(state)

    def describe(self) -> dict[str, Any]:
        """Everything that defines the untrained model (part of the training fingerprint)."""
        return {"kind": self.kind, "unet": _public(self.denoiser.config), **self._schedule()}

    def _schedule(self) -> dict[str, Any]:
        return {"scheduler": _public(self.scheduler.config)}

    def save(self, path: str | os.PathLike, training: dict[str, Any] | None = None) -> None:
        save_model(self.denoiser, self.scheduler, path, training)


class LoRAStableDiffusion(DiffusionModel):
    """Stable Diffusion with peft LoRA adapters on the UNet (the ``sd_lora`` kind).

    x0 is the VAE latent × ``scaling_factor``: the latent *mode* for measurement and features,
    a sample of the latent distribution for training (protocol §2.2, §3). Captions are encoded by
    the CLIP text encoder; the empty caption is the unconditional input of classifier-free
    guidance. Only the LoRA weights require gradients.
    """

    kind = "sd_lora"
    conditional = True
    uses_latents = True

    def __init__(
        self,
        base: str,
        lora: dict[str, Any],
        components: dict[str, Any],
        scheduler: DDPMScheduler,
    ) -> None:
        super().__init__(components["unet"], scheduler)
        self.base = base
        self.lora = lora
        self.vae = components["vae"]
        self.text_encoder = components["text_encoder"]
        self.tokenizer = components["tokenizer"]
        self.latent_scale = float(self.vae.config.scaling_factor)
        self._caption_cache: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------- construction

    @classmethod
    def build(
        cls,
        base: str,
        lora: dict[str, Any] | None = None,
        dropout: float = 0.0,
        device: str | torch.device = "cpu",
    ) -> LoRAStableDiffusion:
        """Base weights from ``base`` plus freshly initialised adapters (seed torch beforehand).

        ``dropout`` is set on the attention modules' dropout (protocol §2.2: 0.1); the adapters'
        own input dropout is ``lora["dropout"]``.
        """
        lora = lora_settings(lora)
        components = _load_base(base)
        set_attention_dropout(components["unet"], dropout)
        model = cls(base, lora, components, _base_scheduler(base))
        model._add_adapter()
        return model.to(device)

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> LoRAStableDiffusion:
        from peft import LoraConfig, set_peft_model_state_dict
        from safetensors.torch import load_file

        record = _read_model_file(path)
        lora_dir = path / LORA_DIR
        weights = lora_dir / "adapter_model.safetensors"
        if not weights.is_file() or not (lora_dir / "adapter_config.json").is_file():
            raise CorruptFileError(
                f"{path}: no LoRA adapter in {lora_dir} (expected adapter_config.json and "
                "adapter_model.safetensors); rerun the training job that writes it"
            )
        base = record["base"]
        components = _load_base(base)
        scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
        model = cls(base, record["lora"], components, scheduler)
        config = LoraConfig.from_pretrained(str(lora_dir))
        model.denoiser.add_adapter(config)
        result = set_peft_model_state_dict(model.denoiser, load_file(str(weights)))
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
        if unexpected or missing:
            raise CorruptFileError(
                f"{weights}: adapter weights do not fit the base {base!r} "
                f"(unexpected {unexpected[:5]}, missing {missing[:5]})"
            )
        model._freeze_base()
        model.denoiser.eval()
        return model.to(device)

    def _add_adapter(self) -> None:
        from peft import LoraConfig

        config = LoraConfig(
            r=self.lora["rank"],
            lora_alpha=self.lora["alpha"] or self.lora["rank"],
            target_modules=list(self.lora["target_modules"]),
            lora_dropout=self.lora["dropout"],
            init_lora_weights="gaussian",  # A ~ N(0, 1/r), B = 0, as diffusers' LoRA layers
        )
        try:
            self.denoiser.add_adapter(config)
        except ValueError as error:
            raise ConfigError(
                f"model.lora.target_modules = {self.lora['target_modules']!r} cannot be "
                f"applied to the base UNet of {self.base!r}: {error}"
            ) from error
        self._freeze_base()

    def _freeze_base(self) -> None:
        for module in (self.vae, self.text_encoder):
            module.requires_grad_(False).eval()
        for name, param in self.denoiser.named_parameters():
            param.requires_grad_("lora_" in name)

    def to(self, device: str | torch.device) -> LoRAStableDiffusion:
        for module in (self.denoiser, self.vae, self.text_encoder):
            module.to(device)
        return self

    # ----------------------------------------------------------------- the interface

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        config = self.denoiser.config
        return (config.in_channels, config.sample_size, config.sample_size)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def latent_distribution(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the VAE posterior (unscaled), float32 on the CPU."""
        means, stds = [], []
        for batch in self._image_batches(images, batch_size):
            dist = self.vae.encode(batch).latent_dist
            means.append(dist.mean.float().cpu())
            stds.append(dist.std.float().cpu())
        return torch.cat(means), torch.cat(stds)

    def encode(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 32, scaled: bool = True
    ) -> torch.Tensor:
        """The VAE latent mode (× ``scaling_factor`` unless ``scaled=False``), float32, CPU.

        ``scaled=False`` gives the raw latent the reference uses for its "raw pixel" baseline and
        the counterfactual ℓ2 distance (protocol §5, §6).
        """
        mean, _ = self.latent_distribution(images, batch_size)
        return mean * self.latent_scale if scaled else mean

    def _image_batches(self, images: np.ndarray | torch.Tensor, batch_size: int):
        images = torch.as_tensor(np.asarray(images, dtype=np.float32))
        if images.ndim != 4 or images.shape[1] != self.vae.config.in_channels:
            raise ConfigError(
                f"images must be [n, {self.vae.config.in_channels}, H, W] for the VAE of "
                f"{self.base!r}, got {tuple(images.shape)}; check data.channels"
            )
        dtype = next(self.vae.parameters()).dtype
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size].to(self.device, dtype)

    @torch.no_grad()
    def condition(self, captions: Sequence[str] | None) -> torch.Tensor:
        """CLIP text embeddings [n, L, D], float32 on the CPU.

        Each distinct caption is encoded once, alone, so its embedding does not depend on the
        other captions of the call (no batch-dependent rounding).
        """
        if captions is None:
            raise ConfigError(
                f"a {self.kind} model is conditioned on captions, but these samples have none; "
                "set data.caption_template (or data.caption_column) and rebuild the dataset"
            )
        captions = [str(c) for c in captions]
        for caption in dict.fromkeys(captions):
            if caption not in self._caption_cache:
                tokens = self.tokenizer(
                    [caption],
                    padding="max_length",
                    max_length=self.tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                )
                hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
                self._caption_cache[caption] = hidden[0].float().cpu()
        if not captions:
            length = self.tokenizer.model_max_length
            return torch.empty(0, length, self.text_encoder.config.hidden_size)
        return torch.stack([self._caption_cache[c] for c in captions])

    @torch.no_grad()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        images = self.vae.decode(x0.to(self.device, dtype) / self.latent_scale).sample
        return images.float().clamp(-1, 1)

    def cast_frozen(self, dtype: torch.dtype) -> None:
        """Frozen VAE, text encoder and base UNet weights in ``dtype``; adapters stay fp32."""
        self.vae.to(dtype)
        self.text_encoder.to(dtype)
        for param in self.denoiser.parameters():
            if not param.requires_grad:
                param.data = param.data.to(dtype)
        self._caption_cache.clear()

    def training_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.trainable_parameters().items()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        params = self.trainable_parameters()
        if set(state) != set(params):
            raise CorruptFileError("checkpoint holds other LoRA parameters than this model")
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "base": self.base, "lora": self.lora, **self._schedule()}

    def save(self, path: str | os.PathLike, training: dict[str, Any] | None = None) -> None:
        """The adapter only (peft layout, safetensors), the schedule and the base's name."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        state = get_peft_model_state_dict(self.denoiser)
        state = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
        with atomic_dir(path) as tmp:
            (tmp / LORA_DIR).mkdir()
            self.denoiser.peft_config["default"].save_pretrained(str(tmp / LORA_DIR))
            save_file(state, str(tmp / LORA_DIR / "adapter_model.safetensors"))
            self.scheduler.save_pretrained(tmp / "scheduler")
            record = {"kind": self.kind, "base": self.base, "lora": self.lora}
            (tmp / MODEL_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            write_training_record(tmp, training)


def _public(config: Any) -> dict[str, Any]:
    """A diffusers config without its private keys (library version, defaults used, ...)."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


# --------------------------------------------------------------------------- LoRA details


def lora_settings(lora: dict[str, Any] | None) -> dict[str, Any]:
    """``model.lora`` with defaults filled and checked."""
    settings = {**DEFAULT_LORA, **(lora or {})}
    unknown = sorted(set(settings) - set(DEFAULT_LORA))
    if unknown:
        raise ConfigError(f"model.lora: unknown keys {unknown}; valid: {sorted(DEFAULT_LORA)}")
    if not isinstance(settings["rank"], int) or settings["rank"] < 1:
        raise ConfigError(f"model.lora.rank = {settings['rank']!r} must be a positive integer")
    if not 0 <= settings["dropout"] < 1:
        raise ConfigError(f"model.lora.dropout = {settings['dropout']!r} must lie in [0, 1)")
    if not settings["target_modules"]:
        raise ConfigError("model.lora.target_modules is empty; e.g. [to_q, to_k, to_v, to_out.0]")
    settings["target_modules"] = list(settings["target_modules"])
    return settings


def set_attention_dropout(unet: torch.nn.Module, p: float) -> None:
    """Set p of the dropout inside every diffusers ``Attention`` module (its ``to_out``)."""
    from diffusers.models.attention_processor import Attention

    if not 0.0 <= p < 1.0:
        raise ConfigError(f"model.dropout = {p} is invalid; it must lie in [0, 1)")
    for module in unet.modules():
        if isinstance(module, Attention):
            set_dropout(module, p)


# --------------------------------------------------------------------------- base model


def _load_base(base: str) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    directory = resolve_base_model(base)
    return {
        "unet": UNet2DConditionModel.from_pretrained(directory / "unet"),
        "vae": AutoencoderKL.from_pretrained(directory / "vae"),
        "text_encoder": CLIPTextModel.from_pretrained(directory / "text_encoder"),
        "tokenizer": CLIPTokenizer.from_pretrained(directory / "tokenizer"),
    }


def _base_scheduler(base: str) -> DDPMScheduler:
    """The base's own noise schedule as a DDPM scheduler (the reference's training schedule)."""
    return DDPMScheduler.from_pretrained(resolve_base_model(base) / "scheduler")


# --------------------------------------------------------------------------- entry points


def build_model(
    model_cfg: dict[str, Any],
    scheduler_cfg: dict[str, Any],
    device: str | torch.device = "cpu",
) -> DiffusionModel:
    """An untrained model of ``model.kind``; seed torch first for a reproducible init.

    ``scheduler_cfg`` is the ``unet`` kind's schedule; an ``sd_lora`` model uses its base's.
    """
    kind = model_cfg.get("kind", "unet")
    dropout = model_cfg.get("dropout", 0.0)
    if kind == "unet":
        if "unet" not in model_cfg:
            raise ConfigError("model.kind 'unet' needs a model.unet block (UNet2DModel keywords)")
        unet = move_module(build_unet(model_cfg["unet"], dropout), device)
        return DiffusionModel(unet, build_scheduler(scheduler_cfg))
    if kind == "sd_lora":
        base = model_cfg.get("base", DEFAULT_BASE)
        return LoRAStableDiffusion.build(base, model_cfg.get("lora"), dropout, device)
    raise ConfigError(f"model.kind = {kind!r}; choose one of {list(MODEL_KINDS)}")


def model_kind(path: str | os.PathLike) -> str:
    """The kind of a saved model directory."""
    path = Path(path)
    return _read_model_file(path)["kind"] if (path / MODEL_FILE).is_file() else "unet"


def _read_model_file(path: Path) -> dict[str, Any]:
    try:
        record = json.loads((path / MODEL_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CorruptFileError(f"{path / MODEL_FILE}: unreadable ({error})") from error
    if record.get("kind") not in MODEL_KINDS or "base" not in record:
        raise CorruptFileError(f"{path / MODEL_FILE}: not a diffattr model record: {record}")
    return record


def load_diffusion_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> DiffusionModel:
    """Load a saved model directory of any kind; eval mode, on ``device``."""
    path = Path(path)
    if model_kind(path) == "sd_lora":
        return LoRAStableDiffusion.load(path, device)
    if not (path / "unet").is_dir() or not (path / "scheduler").is_dir():
        raise CorruptFileError(
            f"{path}: not a diffattr model directory (expected unet/ and scheduler/, or "
            f"{MODEL_FILE}, inside)"
        )
    try:
        model = move_module(UNet2DModel.from_pretrained(path / "unet"), device)
        scheduler = load_scheduler(path / "scheduler")
    except (OSError, ValueError, RuntimeError) as error:  # bad JSON, truncated safetensors
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CorruptFileError(
            f"{path}: the saved model cannot be loaded ({first}); expected a complete diffusers "
            "DDPMPipeline directory (unet/config.json + weights, scheduler/). Delete it and "
            "rerun the rule that trains it (or save the pipeline again)."
        ) from error
    model.eval()
    return DiffusionModel(model, scheduler)


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, DDPMScheduler]:
    """(denoiser, scheduler) of a saved model directory; eval mode, on ``device``.

    For an ``sd_lora`` directory the denoiser is the base UNet with the trained adapters; use
    :func:`load_diffusion_model` to also get the VAE and the text encoder.
    """
    model = load_diffusion_model(path, device)
    return model.denoiser, model.scheduler


__all__ = [
    "MODEL_KINDS",
    "SD_COMPONENTS",
    "DiffusionModel",
    "LoRAStableDiffusion",
    "build_model",
    "build_scheduler",
    "build_unet",
    "check_base_model",
    "load_diffusion_model",
    "load_model",
    "model_kind",
    "resolve_base_model",
    "resolve_device",
    "save_model",
]
