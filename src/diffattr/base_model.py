"""Where the Stable Diffusion base of an ``sd_lora`` model lives, checked before any job runs.

``model.base`` is a local diffusers pipeline directory or a hub id whose snapshot is already in
the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``); nothing is ever downloaded. This module
imports neither torch nor diffusers, so the workflow can call :func:`check_base_model` while it
parses the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffattr.errors import ConfigError

DEFAULT_BASE = "lambdalabs/miniSD-diffusers"
#: Sub-directories of a diffusers Stable Diffusion pipeline that an sd_lora model needs.
SD_COMPONENTS: tuple[str, ...] = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def resolve_base_model(base: str) -> Path:
    """The local directory of a Stable Diffusion base: a path, or a hub id in the HF cache.

    Raises :class:`ConfigError` saying where to put the model when it is not on disk.
    """
    if not isinstance(base, str) or not base:
        raise ConfigError(f"model.base = {base!r}; expected a directory or a hub id")
    local = Path(base).expanduser()
    if local.is_dir():
        directory = local
    elif base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise ConfigError(
            f"model.base = {base!r}: directory {str(local.absolute())!r} does not exist. "
            f"{_placement_hint(base)}"
        )
    else:
        directory = _cached_snapshot(base)
    missing = [name for name in SD_COMPONENTS if not (directory / name).is_dir()]
    if missing:
        raise ConfigError(
            f"model.base = {base!r} resolves to {str(directory)!r}, which lacks {missing}: it is "
            f"not a complete Stable Diffusion pipeline directory. {_placement_hint(base)}"
        )
    return directory


def _cached_snapshot(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, HFValidationError) as error:
        raise ConfigError(
            f"model.base = {repo_id!r} is neither a local directory nor in the Hugging Face "
            f"cache {constants.HF_HUB_CACHE!r} (set by HF_HOME or HF_HUB_CACHE); nothing is "
            f"downloaded during a run. {_placement_hint(repo_id)}"
        ) from error


def _placement_hint(base: str) -> str:
    is_hub_id = base.count("/") == 1 and not base.startswith((".", "/", "~"))
    example = base if is_hub_id else DEFAULT_BASE
    return (
        f"Either download it once into the cache the jobs see (`hf download {example}` with "
        "the same HF_HOME), or copy a diffusers Stable Diffusion directory (model_index.json, "
        "unet/, vae/, text_encoder/, tokenizer/, scheduler/) and set model.base to its path. "
        "See docs/artbench.md."
    )


def check_base_model(config: dict[str, Any]) -> Path | None:
    """Fail before any job runs when an ``sd_lora`` config's base model is not on disk.

    Returns the resolved directory, or None for a model kind without a base.
    """
    model = config.get("model", {})
    if model.get("kind", "unet") != "sd_lora":
        return None
    if "unet" in model:
        raise ConfigError(
            "model.unet is only for model.kind 'unet'; an 'sd_lora' model takes its UNet from "
            f"model.base ({model.get('base', DEFAULT_BASE)!r}), so remove the model.unet block"
        )
    return resolve_base_model(model.get("base", DEFAULT_BASE))
