"""Per-layer capture of inputs and output gradients, for projections of per-sample gradients.

For every module that owns trainable parameters, a forward hook keeps a reference to its input
and registers a tensor hook on its output; the tensor hook receives the output gradient δ of the
batched loss during the backward pass and hands (module, input, δ) to a callback. Because the
evaluations of a batch are independent (eval mode; GroupNorm/LayerNorm/attention act within one
evaluation), row e of δ is the gradient of evaluation e's own output f_e.

The backward pass is :func:`backward_to_outputs`: ``torch.autograd.grad`` of the summed loss with
respect to the model input and to the outputs of tracked modules whose input does not require
grad (the time-embedding MLP, LoRA factors on text conditioning), so every tracked output is
reached and no parameter gradient is ever computed.

Supported modules (their own trainable parameters): ``nn.Linear`` (also peft's ``lora_A`` /
``lora_B``), ``nn.Conv2d`` (zero padding, groups = 1), ``nn.GroupNorm`` and ``nn.LayerNorm``.
Any other module with trainable parameters is an error that names it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from diffattr.errors import ConfigError

SUPPORTED_MODULES: tuple[str, ...] = ("Linear", "Conv2d", "GroupNorm", "LayerNorm")


@dataclass(frozen=True)
class TrackedModule:
    """A module with trainable parameters and how its per-sample gradients are formed.

    ``kind`` is ``linear``, ``conv2d`` or ``norm``; ``weight`` / ``bias`` are the full names of
    the trainable parameters (or None); ``d_out`` × ``d_in`` is the weight's matrix shape
    (``d_in`` = C_in·kh·kw for a convolution; 0 for norms).
    """

    name: str
    kind: str
    module: nn.Module
    weight: str | None
    bias: str | None
    d_out: int
    d_in: int


def tracked_modules(model: nn.Module) -> list[TrackedModule]:
    """Every module with trainable parameters of its own, in ``named_modules`` order."""
    found = []
    for name, module in model.named_modules():
        own = {k: p for k, p in module.named_parameters(recurse=False) if p.requires_grad}
        if not own:
            continue
        prefix = f"{name}." if name else ""
        unknown = sorted(set(own) - {"weight", "bias"})
        weight = f"{prefix}weight" if "weight" in own else None
        bias = f"{prefix}bias" if "bias" in own else None
        if isinstance(module, nn.Linear) and not unknown:
            found.append(
                TrackedModule(
                    name, "linear", module, weight, bias, module.out_features, module.in_features
                )
            )
        elif isinstance(module, nn.Conv2d) and not unknown:
            if module.groups != 1 or module.padding_mode != "zeros":
                raise ConfigError(
                    f"module {name!r} is a Conv2d with groups={module.groups}, "
                    f"padding_mode={module.padding_mode!r}; the structured projection supports "
                    "groups=1 with zero padding (use features.projection: dense)"
                )
            kh, kw = module.kernel_size
            found.append(
                TrackedModule(
                    name,
                    "conv2d",
                    module,
                    weight,
                    bias,
                    module.out_channels,
                    module.in_channels * kh * kw,
                )
            )
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)) and not unknown:
            found.append(TrackedModule(name, "norm", module, weight, bias, 0, 0))
        else:
            raise ConfigError(
                f"module {name!r} ({type(module).__name__}) has trainable parameters "
                f"{sorted(own)}; the structured projection supports the own parameters "
                f"weight/bias of: {', '.join(SUPPORTED_MODULES)} (use features.projection: dense)"
            )
    return found


def normalized_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The norm's input normalised without its affine transform (x̂ of y = x̂·w + b)."""
    if isinstance(module, nn.GroupNorm):
        return torch.nn.functional.group_norm(x, module.num_groups, None, None, module.eps)
    return torch.nn.functional.layer_norm(x, module.normalized_shape, None, None, module.eps)


Callback = Callable[[TrackedModule, torch.Tensor, torch.Tensor], None]


@contextlib.contextmanager
def capture(tracked: list[TrackedModule], callback: Callback) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward of a tracked module arranges ``callback(t, input, δ)``.

    Yields the list of "source" outputs (outputs of tracked modules whose input does not require
    grad), to be passed to :func:`backward_to_outputs`. A tracked module's input or output that is
    modified in place before the backward pass is an error.
    """
    sources: list[torch.Tensor] = []
    handles = []

    def make_hook(entry: TrackedModule):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return
            x = inputs[0]
            version = x._version

            def on_grad(delta, x=x, version=version):
                if x._version != version:
                    raise ConfigError(
                        f"the input of module {entry.name!r} was modified in place after its "
                        "forward; the structured projection cannot use it"
                    )
                callback(entry, x.detach(), delta.detach())

            output.register_hook(on_grad)
            if not x.requires_grad:
                sources.append(output)

        return hook

    try:
        for entry in tracked:
            handles.append(entry.module.register_forward_hook(make_hook(entry)))
        yield sources
    finally:
        for handle in handles:
            handle.remove()


def backward_to_outputs(loss: torch.Tensor, x: torch.Tensor, sources: list[torch.Tensor]) -> None:
    """Run the backward pass of ``loss`` down to ``x`` (which requires grad) and ``sources``."""
    torch.autograd.grad(loss, [x, *sources], allow_unused=True)


__all__ = [
    "SUPPORTED_MODULES",
    "TrackedModule",
    "backward_to_outputs",
    "capture",
    "normalized_input",
    "tracked_modules",
]
