"""The few diffusers classes a pixel-UNet job uses, imported without the rest of diffusers.

``from diffusers import UNet2DModel`` runs ``diffusers.models.unets/__init__`` (every UNet of the
library) and, through ``unet_2d_blocks``, ``diffusers.models.transformers/__init__`` (about a
hundred transformer models, diffusers' hooks, peft); ``DDPMPipeline`` adds the pipeline loaders
and ``scipy.stats``. A job that trains, samples or measures the digits UNet needs none of it,
and it cost about 2 s of CPU per job, in a workflow of a hundred short jobs. Here the two
package ``__init__`` files are deferred: the package module exists (so its submodules import
normally), and its ``__init__`` runs the first time code asks the package for a name it does not
have, e.g. ``from diffusers.models.transformers import SD3Transformer2DModel``. Nothing else of
diffusers changes: a process that later needs the full library (Stable Diffusion + LoRA) gets it.

``torch._dynamo`` (1.5 s of CPU) is hidden while diffusers imports: diffusers then decorates its
attention blocks with a no-op instead of ``torch._dynamo.allow_in_graph``, a hint for
``torch.compile`` only, which diffattr does not use. torch imports ``torch._dynamo`` normally
afterwards, whenever something needs it.

``python -X importtime -c "import diffattr.models"`` shows what a job imports.
"""

from __future__ import annotations

import importlib.util
import sys
import types

# Package __init__ files that import much more than a UNet2DModel needs.
DEFERRED_PACKAGES = ("diffusers.models.unets", "diffusers.models.transformers", "diffusers.hooks")


def defer_package_init(name: str) -> None:
    """Register package ``name`` with its ``__init__`` not yet run (no-op if already imported).

    Submodule imports (``import name.sub``) work at once; the first lookup of a name the
    package module lacks runs the real ``__init__`` in the same module object.
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    module = importlib.util.module_from_spec(spec)
    state = {"initialised": False}

    def __getattr__(attribute: str) -> object:
        if state["initialised"] or attribute.startswith("__"):
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        state["initialised"] = True
        del module.__dict__["__getattr__"]
        spec.loader.exec_module(module)
        return getattr(module, attribute)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[name] = module
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules.get(parent_name)
    if isinstance(parent, types.ModuleType):
        setattr(parent, child, module)


def _import_lean() -> None:
    import torch  # noqa: F401  (before the window below: torch's own imports stay as they are)

    hide_dynamo = "torch._dynamo" not in sys.modules
    if hide_dynamo:
        sys.modules["torch._dynamo"] = None  # type: ignore[assignment]
    try:
        import diffusers.models  # noqa: F401  (diffusers' own lazy top-level modules)

        for name in DEFERRED_PACKAGES:
            defer_package_init(name)
        import diffusers.models.unets.unet_2d  # noqa: F401
        import diffusers.optimization  # noqa: F401
        import diffusers.schedulers.scheduling_ddim  # noqa: F401
        import diffusers.schedulers.scheduling_ddpm  # noqa: F401
    finally:
        if hide_dynamo and sys.modules.get("torch._dynamo", 0) is None:
            del sys.modules["torch._dynamo"]


_import_lean()

from diffusers.models.unets.unet_2d import UNet2DModel  # noqa: E402
from diffusers.optimization import get_cosine_schedule_with_warmup  # noqa: E402
from diffusers.schedulers.scheduling_ddim import DDIMScheduler  # noqa: E402
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler  # noqa: E402

__all__ = [
    "DDIMScheduler",
    "DDPMScheduler",
    "UNet2DModel",
    "defer_package_init",
    "get_cosine_schedule_with_warmup",
]
