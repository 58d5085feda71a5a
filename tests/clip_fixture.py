"""A tiny random CLIP saved with ``save_pretrained`` (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 32


def build_tiny_clip(folder: Path, seed: int = 0, vision_only: bool = False) -> Path:
    """A 2-layer ViT CLIP (16-dim embeddings) with its CLIPImageProcessor, written to folder."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    vision = {
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "projection_dim": 16,
    }
    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 64,
        "max_position_embeddings": 16,
        "projection_dim": 16,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    torch.manual_seed(seed)
    if vision_only:
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision))
    else:
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(folder)
    return Path(folder)
