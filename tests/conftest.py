"""Shared fixtures: tiny models and configs with random weights (nothing is downloaded)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY_UNET = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4,
    "attention_head_dim": 4,
}

SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "linear"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run on a shared 2-core machine: keep torch on one thread, restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_unet_config() -> dict:
    return copy.deepcopy(TINY_UNET)


@pytest.fixture
def tiny_config() -> dict:
    with open(ROOT / "tests" / "config-tiny.yaml") as handle:
        return yaml.safe_load(handle)
