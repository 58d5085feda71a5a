"""Lean diffusers imports: what a UNet job imports, and that the rest of diffusers still works."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from safetensors.torch import load_file

from diffattr.models import build_scheduler, build_unet, save_model
from tests.conftest import SCHEDULER

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_unet_job_imports_neither_peft_nor_the_pipelines():
    out = _run(
        """
        import sys
        import diffattr.features, diffattr.measure, diffattr.models, diffattr.sampling
        import diffattr.training
        heavy = ["peft", "scipy.stats", "torch._dynamo", "diffusers.pipelines.pipeline_utils",
                 "diffusers.models.transformers.transformer_flux",
                 "diffusers.hooks.layerwise_casting"]
        print([name for name in heavy if sys.modules.get(name) is not None])
        """
    )
    assert out.strip() == "[]"


def test_building_moving_saving_and_loading_a_unet_stays_lean(tmp_path):
    """diffusers' ModelMixin.to and save_pretrained import diffusers.hooks, whose __init__ pulls
    in peft and torch._dynamo (about 4 s per job), and a scheduler's from_config every
    'compatible' scheduler (scipy.stats): a UNet job's model round trip must not."""
    out = _run(
        f"""
        import sys, torch
        from diffattr.models import build_model, load_diffusion_model
        model = build_model({{"kind": "unet", "unet": {{"sample_size": 8, "in_channels": 1,
            "out_channels": 1, "block_out_channels": [8, 16], "layers_per_block": 1,
            "norm_num_groups": 4, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}}}}, {{}}, torch.device("cpu"))
        model.to("cpu").save({str(tmp_path / "m")!r})
        loaded = load_diffusion_model({str(tmp_path / "m")!r}, "cpu")
        loaded.denoiser(torch.zeros(1, 1, 8, 8), torch.tensor([3]))
        from diffattr.sampling import ddim_scheduler
        ddim_scheduler(loaded.scheduler).set_timesteps(5)
        heavy = ["peft", "torch._dynamo", "diffusers.hooks.layerwise_casting",
                 "diffusers.hooks.first_block_cache", "scipy.stats"]
        print([name for name in heavy if sys.modules.get(name) is not None])
        """
    )
    assert out.strip() == "[]"


def test_the_deferred_packages_still_give_every_name_afterwards():
    out = _run(
        """
        import sys
        import diffattr.models
        from diffusers import UNet2DConditionModel, DDPMPipeline
        from diffusers.models.transformers import Transformer2DModel
        import diffusers.models.unets as unets
        import torch._dynamo
        print(UNet2DConditionModel.__name__, DDPMPipeline.__name__, Transformer2DModel.__name__,
              unets.UNet2DModel.__name__, "peft" in sys.modules)
        """
    )
    assert out.split() == [
        "UNet2DConditionModel",
        "DDPMPipeline",
        "Transformer2DModel",
        "UNet2DModel",
        "True",
    ]


def test_saved_layout_is_the_pipelines_own(tmp_path, tiny_unet_config):
    from diffusers import DDPMPipeline

    unet, scheduler = build_unet(tiny_unet_config), build_scheduler(SCHEDULER)
    save_model(unet, scheduler, tmp_path / "ours")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "theirs")
    files = sorted(p.relative_to(tmp_path / "ours") for p in (tmp_path / "ours").rglob("*"))
    assert files == sorted(
        p.relative_to(tmp_path / "theirs") for p in (tmp_path / "theirs").rglob("*")
    )
    for name in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json"):
        ours = json.loads((tmp_path / "ours" / name).read_text())
        assert ours == json.loads((tmp_path / "theirs" / name).read_text()), name
    weights = "unet/diffusion_pytorch_model.safetensors"
    ours, theirs = load_file(tmp_path / "ours" / weights), load_file(tmp_path / "theirs" / weights)
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours)
    loaded = DDPMPipeline.from_pretrained(tmp_path / "ours").unet.config
    assert {k: v for k, v in loaded.items() if not k.startswith("_")} == {
        k: v for k, v in unet.config.items() if not k.startswith("_")
    }


def test_lean_schedulers_equal_diffusers_own(tmp_path):
    """load_scheduler / ddim_scheduler build what from_pretrained / from_config build."""
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler

    from diffattr.models import load_scheduler
    from diffattr.sampling import ddim_scheduler

    build_scheduler({**SCHEDULER, "beta_schedule": "squaredcos_cap_v2"}).save_pretrained(tmp_path)
    theirs, ours = DDPMScheduler.from_pretrained(tmp_path), load_scheduler(tmp_path)

    def public(scheduler):
        return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}

    assert public(ours) == public(theirs)
    assert torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod)
    for train in (theirs, ours):
        reference, lean = DDIMScheduler.from_config(train.config), ddim_scheduler(train)
        reference.set_timesteps(7)
        lean.set_timesteps(7)
        assert torch.equal(reference.timesteps, lean.timesteps)
        assert torch.equal(reference.alphas_cumprod, lean.alphas_cumprod)
        assert {k: v for k, v in public(reference).items() if k in public(lean)} == public(lean)
