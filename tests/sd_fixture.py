"""A tiny Stable Diffusion stack with random weights and a captioned imagefolder, for tests.

Nothing is downloaded: the UNet, VAE and CLIP text encoder are built from small configs, the
tokenizer from a byte-level vocabulary written here (no merges, so one token per character),
and everything is saved as a diffusers ``StableDiffusionPipeline`` directory that ``model.base``
can point at. ``python -m tests.sd_fixture DIR`` writes both fixtures under DIR.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

#: Styles of the fixture images; captions become "a ukiyo e painting", "a baroque painting".
STYLES = ("baroque", "ukiyo_e")
IMAGE_SIZE = 16  # pixels; the tiny VAE downsamples by 2, so latents are 4 x 8 x 8
MAX_TOKENS = 32


def _byte_level_vocabulary() -> dict[str, int]:
    """CLIP's byte-to-unicode alphabet, each symbol alone and as a word end, plus specials."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in codes]
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def build_tiny_sd(path: str | Path, seed: int = 0) -> Path:
    """Write a random-weight Stable Diffusion pipeline directory to ``path`` and return it."""
    import diffusers
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    vocabulary = _byte_level_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocabulary, merges=[], model_max_length=MAX_TOKENS)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocabulary),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=IMAGE_SIZE,
    )
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
    )
    # Stable Diffusion v1's schedule (scaled-linear β, steps_offset 1, no clipping).
    scheduler = DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
    )
    # The StableDiffusionPipeline layout, written part by part: importing diffusers' pipelines
    # costs more than building the whole stack.
    for name, part in (
        ("unet", unet),
        ("vae", vae),
        ("text_encoder", text_encoder),
        ("tokenizer", tokenizer),
        ("scheduler", scheduler),
    ):
        part.save_pretrained(path / name)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return path


def build_captioned_imagefolder(
    root: str | Path, per_style: int = 16, val_per_style: int = 6, seed: int = 0
) -> tuple[Path, Path]:
    """ArtBench-style fixture: ``root/{style}/{name}`` PNGs and ``root/artbench.csv``.

    Each style has its own colour cast and stripe direction, so the model has something to learn.
    Returns (image root, CSV path); the CSV has the columns name, label, split.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    grid = np.linspace(0, 2 * np.pi, IMAGE_SIZE)
    for index, style in enumerate(STYLES):
        (root / style).mkdir(parents=True, exist_ok=True)
        stripes = np.sin(grid)[None, :] if index == 0 else np.sin(grid)[:, None]
        for i in range(per_style + val_per_style):
            base = 127 + 80 * stripes * rng.uniform(0.5, 1.0)
            pixels = np.repeat(base[..., None], 3, axis=2) + rng.normal(0, 20, (16, 16, 3))
            pixels[..., index] += 40
            name = f"{style}_{i:03d}.png"
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / style / name)
            rows.append((name, style, "train" if i < per_style else "test"))
    csv_path = root / "artbench.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "label", "split"])
        writer.writerows(rows)
    return root, csv_path


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "sd-fixture")
    build_tiny_sd(target / "tiny-sd")
    build_captioned_imagefolder(target / "images")
    print(f"tiny Stable Diffusion in {target / 'tiny-sd'}, images in {target / 'images'}")
