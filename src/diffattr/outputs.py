"""Output functions f whose per-sample gradients become attribution features (protocol §4).

Each function maps the UNet prediction to one scalar per sample::

    f(eps_pred [B, ...], eps [B, ...], timesteps [B], scheduler) -> [B]   (float32)

``eps_pred`` is ε̂ = ε_θ(x_t, t[, c]) and ``eps`` the noise that produced x_t. The result is computed
in float32 whatever the model dtype (the reference casts the fp16 loss to fp32), except that a
float64 input stays float64 so that gradient checks can run in double precision.

Canonical names and the reference's ``--f`` spellings:

========== ====================== ===================================== ============
name       alias                  definition                            paper name
========== ====================== ===================================== ============
loss                              mean_d (ε̂ − ε)²                       TRAK
square     mean-squared-l2-norm   mean_d ε̂²                             D-TRAK
mean                              mean_d ε̂                              L_Avg
l1         l1-norm                ‖ε̂‖₁                                  L_1-norm
l2         l2-norm                ‖ε̂‖₂                                  L_2-norm
linf       linf-norm              ‖ε̂‖∞                                  L_∞-norm
elbo_loss  weighted-mse           mean_d w_t (ε̂ − ε)²                   ELBO-weighted
========== ====================== ===================================== ============

with w_t = β_t / (2 α_t (1 − ᾱ_t)) and α_t = 1 − β_t. The reference silently used ``loss`` for
any unknown name; :func:`get_output_fn` refuses instead.

A new function is one decorated function::

    @register("name", aliases=("other-name",), description="what it is, in ASCII")
    def _name(eps_pred, eps, timesteps, scheduler):
        return ...

The same registry serves the measured outputs of the LDS ground truth (``measure.output``,
:func:`diffattr.measure.measure_losses`); measured files record the canonical name
(``output_fn``) and the description (``output``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffattr.errors import ConfigError

OutputFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]

_REGISTRY: dict[str, OutputFn] = {}
_ALIASES: dict[str, str] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(
    name: str, aliases: tuple[str, ...] = (), description: str = ""
) -> Callable[[OutputFn], OutputFn]:
    """Decorator: register an output function under ``name`` and optional ``aliases``, with a
    one-line ASCII ``description`` (recorded in measured files)."""

    def decorate(fn: OutputFn) -> OutputFn:
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise ConfigError(f"output function name {key!r} is registered twice")
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description or name
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return decorate


def canonical_name(name: str) -> str:
    """The canonical name of an output function, resolving aliases; ConfigError if unknown."""
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    valid = ", ".join(sorted(_REGISTRY))
    aliases = ", ".join(f"{a} (= {c})" for a, c in sorted(_ALIASES.items()))
    raise ConfigError(
        f"unknown output function f = {name!r}; valid names are: {valid}; aliases: {aliases}"
    )


def get_output_fn(name: str) -> OutputFn:
    """The output function registered under ``name`` or one of its aliases."""
    return _REGISTRY[canonical_name(name)]


def describe(name: str) -> str:
    """The registered description of an output function (aliases resolved)."""
    return _DESCRIPTIONS[canonical_name(name)]


def _flat(x: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> [B, d] in float32 (float64 stays float64)."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.to(dtype).reshape(x.shape[0], -1)


def elbo_weights(scheduler: Any, timesteps: torch.Tensor) -> torch.Tensor:
    """w_t = β_t / (2 α_t (1 − ᾱ_t)) for each timestep, as a float64 CPU tensor.

    ᾱ_t is recomputed in float64 as Π_{s≤t} (1 − β_s) from the scheduler's betas: the scheduler's
    own float32 ``alphas_cumprod`` loses most digits of 1 − ᾱ_t at small t (relative error ~1e-3).
    """
    t = torch.as_tensor(timesteps).long().cpu()
    betas = torch.as_tensor(scheduler.betas).to(device="cpu", dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= len(betas)):
        raise ConfigError(
            f"timesteps {t.tolist()} out of range for a scheduler with {len(betas)} steps"
        )
    beta = betas[t]
    weight = beta / (2.0 * (1.0 - beta) * (1.0 - alphas_cumprod[t]))
    return weight


@register("loss", description="diffusion loss mean_d (eps_hat - eps)^2")
def _loss(eps_pred, eps, timesteps, scheduler):
    return (_flat(eps_pred) - _flat(eps)).pow(2).mean(dim=1)


@register("square", aliases=("mean-squared-l2-norm",), description="mean_d eps_hat^2")
def _square(eps_pred, eps, timesteps, scheduler):
    return _flat(eps_pred).pow(2).mean(dim=1)


@register("mean", description="mean_d eps_hat")
def _mean(eps_pred, eps, timesteps, scheduler):
    return _flat(eps_pred).mean(dim=1)


@register("l1", aliases=("l1-norm",), description="||eps_hat||_1")
def _l1(eps_pred, eps, timesteps, scheduler):
    return _flat(eps_pred).abs().sum(dim=1)


@register("l2", aliases=("l2-norm",), description="||eps_hat||_2")
def _l2(eps_pred, eps, timesteps, scheduler):
    return torch.linalg.vector_norm(_flat(eps_pred), ord=2, dim=1)


@register("linf", aliases=("linf-norm",), description="||eps_hat||_inf")
def _linf(eps_pred, eps, timesteps, scheduler):
    return _flat(eps_pred).abs().amax(dim=1)


@register(
    "elbo_loss",
    aliases=("weighted-mse",),
    description="ELBO-weighted loss w_t mean_d (eps_hat - eps)^2",
)
def _elbo_loss(eps_pred, eps, timesteps, scheduler):
    per_sample = (_flat(eps_pred) - _flat(eps)).pow(2).mean(dim=1)
    weight = elbo_weights(scheduler, timesteps).reshape(-1)
    weight = weight.to(device=per_sample.device, dtype=per_sample.dtype)
    return weight * per_sample


OUTPUT_FUNCTIONS: tuple[str, ...] = tuple(_REGISTRY)
OUTPUT_ALIASES: dict[str, str] = dict(_ALIASES)

__all__ = [
    "OUTPUT_ALIASES",
    "OUTPUT_FUNCTIONS",
    "canonical_name",
    "describe",
    "elbo_weights",
    "get_output_fn",
    "register",
]
