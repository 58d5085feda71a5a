"""Per-sample gradient features: the mean over K timesteps of ∇_θ f, projected once (protocol §4).

For a sample x0 with id i and each timestep t of the K selected ones:

* ε = ``sample_noise("features", noise_seed, t, key_i)``: a function of the sample's noise key
  only, so features do not depend on batch size or order (the reference re-seeded per batch
  instead). The key comes from the method's noise scheme
  (:func:`diffattr.noise.feature_noise_keys`: ``independent``, ``reference`` or ``common``,
  docs/noise.md); without ``noise_keys`` it is the sample id itself, unique only within one call;
* x_t = ``scheduler.add_noise(x0, ε, t)`` and ε̂ = ε_θ(x_t, t[, c]);
* g_t = ∇_θ f(ε̂, ε, t) over the **trainable** parameters only (the LoRA adapters for SD-LoRA),
  computed per sample with ``torch.func`` (``vmap(grad(...))`` over ``functional_call``).

The feature is ``projector.project((1/K) Σ_t g_t)``. The model runs in eval mode (no dropout).
:func:`mean_gradients` forms the sum over t inside one ``vmap`` call per chunk of timesteps (the
model sees each sample at several timesteps as one batch), instead of one call and one [B, P]
gradient matrix per timestep as the reference did; ``benchmarks/run.py --only features`` measures
the difference.

diffusers' default attention processor calls ``scaled_dot_product_attention``, which torch.func
batches only through a slow per-sample fallback on some backends. While gradients are taken, the
model's own ``Attention`` modules are switched to the plain matmul ``AttnProcessor`` and restored
afterwards; nothing in torch is patched.

Feature files (HDF5, written atomically by :func:`write_features`):

* ``features``: float32 [n, Z], row r belongs to sample ``ids[r]``;
* ``ids``: int64 [n];
* attributes: the provenance the caller passes (output_fn, timesteps, K, noise_seed, noise
  scheme and its reference geometry, projection,
  model digest, split, ...) plus ``n_rows`` and ``proj_dim``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from diffattr.errors import ConfigError, FeatureMismatchError
from diffattr.files import write_features
from diffattr.noise import sample_noise
from diffattr.outputs import OutputFn, get_output_fn
from diffattr.projection import Projector
from diffattr.queries import QueryRows
from diffattr.store import decode_attr, h5_writer, open_h5, require_same

NOISE_PURPOSE = "features"
TIMESTEP_STRATEGIES: tuple[str, ...] = ("uniform", "cumulative")
#: (sample, timestep) pairs per vmap call in :func:`mean_gradients` (bounds activation memory).
DEFAULT_MAX_EVALUATIONS = 512
#: Added to each per-timestep gradient norm before dividing (as DAS's code does).
TIMESTEP_NORM_EPS = 1e-8
#: Largest [pairs, P] gradient block (elements) one call forms when timesteps are normalised.
MAX_NORMALIZED_ELEMENTS = 1 << 27

#: Attributes that legitimately differ between the shards of one feature matrix.
SHARD_ATTRS: frozenset[str] = frozenset(
    {"split", "shard", "n_rows", "row_start", "row_stop", "ids_digest", "complete"}
)


def select_timesteps(K: int, strategy: str, num_train_timesteps: int = 1000) -> list[int]:
    """The K timesteps whose gradients are averaged.

    ``uniform``: ``range(0, T, T // K)`` (K = 10 gives 0, 100, …, 900); K must divide T, since
    otherwise that range holds more than K timesteps. ``cumulative``: 0, 1, …, K − 1.
    """
    if (
        isinstance(num_train_timesteps, bool)
        or not isinstance(num_train_timesteps, int)
        or (num_train_timesteps < 1)
    ):
        raise ConfigError(
            f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}"
        )
    T = num_train_timesteps
    if isinstance(K, bool) or not isinstance(K, int) or not 1 <= K <= T:
        raise ConfigError(f"K (number of timesteps) must be an integer in 1..{T}, got {K!r}")
    if strategy == "uniform":
        if T % K:
            divisors = [d for d in range(1, T + 1) if T % d == 0]
            raise ConfigError(
                f"uniform timesteps need K to divide T = {T}, got K = {K}; "
                f"valid K: {', '.join(map(str, divisors))}"
            )
        return list(range(0, T, T // K))
    if strategy == "cumulative":
        return list(range(K))
    raise ConfigError(
        f"unknown timestep strategy {strategy!r}; valid strategies are: "
        f"{', '.join(TIMESTEP_STRATEGIES)}"
    )


#: Suffix of a feature name (the ``fn`` of its path) whose per-timestep gradients are normalised.
TIMESTEP_NORM_SUFFIX = "_tnorm"


def feature_name(output_fn: str, normalize_timesteps: bool = False) -> str:
    """The name a feature file is stored under: the output function, ``_tnorm`` if normalised."""
    return f"{output_fn}{TIMESTEP_NORM_SUFFIX}" if normalize_timesteps else output_fn


def parse_feature_name(name: str) -> tuple[str, bool]:
    """(output function, per-timestep normalisation) of a feature name (:func:`feature_name`)."""
    if name.endswith(TIMESTEP_NORM_SUFFIX):
        return name[: -len(TIMESTEP_NORM_SUFFIX)], True
    return name, False


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Name → parameter for every parameter with ``requires_grad`` (the LoRA adapters for LoRA)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def num_trainable_parameters(model: torch.nn.Module) -> int:
    """P, the gradient dimension: the number of trainable scalars."""
    return sum(p.numel() for p in trainable_parameters(model).values())


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


@contextlib.contextmanager
def vmap_safe_attention(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, this model's attention modules use diffusers' plain ``AttnProcessor``.

    Only processors of the SDPA class ``AttnProcessor2_0`` are swapped; others (custom or
    trainable ones) are left alone. The original processors are restored on exit.
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    swapped = []
    for module in model.modules():
        if hasattr(module, "get_processor") and hasattr(module, "set_processor"):
            processor = module.get_processor()
            if type(processor) is AttnProcessor2_0:
                swapped.append((module, processor))
                module.set_processor(AttnProcessor())
    try:
        yield
    finally:
        for module, processor in swapped:
            module.set_processor(processor)


def _resolve_output_fn(output_fn: str | OutputFn) -> OutputFn:
    return get_output_fn(output_fn) if isinstance(output_fn, str) else output_fn


def _num_train_timesteps(scheduler: Any) -> int:
    return int(scheduler.config.num_train_timesteps)


@dataclass(frozen=True, kw_only=True)
class GradientOptions:
    """What the gradient kernels average, per sample: ∇_θ ``output_fn`` (a name of
    :mod:`diffattr.outputs` or the function itself) at each of ``timesteps``, with the
    feature noise of ``noise_seed``.

    ``normalize_timesteps`` scales each per-timestep gradient to unit norm before the mean
    (DAS, :func:`mean_gradients`); ``max_evaluations`` bounds the (sample, timestep) pairs one
    call evaluates (activation memory; chunking changes only float rounding). The timesteps are
    checked against the scheduler by the kernels."""

    output_fn: str | OutputFn
    timesteps: Sequence[int]
    noise_seed: int
    normalize_timesteps: bool = False
    max_evaluations: int = DEFAULT_MAX_EVALUATIONS

    def __post_init__(self) -> None:
        if isinstance(self.output_fn, str):
            get_output_fn(self.output_fn)  # ConfigError naming the valid functions
        elif not callable(self.output_fn):
            raise ConfigError(
                f"output_fn must be an output function or its name, got {self.output_fn!r}"
            )
        if len(self.timesteps) == 0:
            raise ConfigError("timesteps is empty; give at least one (see select_timesteps)")
        if not _is_int(self.noise_seed):
            raise ConfigError(f"noise_seed must be an integer, got {self.noise_seed!r}")
        if not isinstance(self.normalize_timesteps, bool):
            raise ConfigError(
                f"normalize_timesteps must be True or False, got {self.normalize_timesteps!r}"
            )
        if not _is_int(self.max_evaluations) or self.max_evaluations < 1:
            raise ConfigError(
                f"max_evaluations must be a positive integer, got {self.max_evaluations!r}"
            )


class BatchRuntime(Protocol):
    """What :func:`extract_features` reads of a :class:`diffattr.settings.Runtime` (which
    imports this module, so it is not named here): the batch size and the progress."""

    @property
    def batch_size(self) -> int: ...

    @property
    def progress(self) -> Callable[[int, int], Any] | Any | None: ...


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _prepared(
    model: torch.nn.Module, scheduler: Any, inputs: QueryRows, options: GradientOptions
) -> tuple[dict[str, torch.Tensor], QueryRows, GradientOptions]:
    """(trainable params, inputs on the model's device with their noise keys, options with the
    output function resolved and the timesteps as a list of ints), checked."""
    fn = _resolve_output_fn(options.output_fn)
    params, ids, x0, cond, timesteps = _prepare_batch(
        model, scheduler, inputs.x0, inputs.ids, options.timesteps, inputs.cond
    )
    keys = _noise_keys(ids, inputs.noise_keys)
    resolved = dataclasses.replace(options, output_fn=fn, timesteps=timesteps)
    return params, QueryRows(x0, ids, cond, keys), resolved


def _prepare_batch(
    model: torch.nn.Module,
    scheduler: Any,
    x0: torch.Tensor,
    sample_ids: Sequence[int] | np.ndarray,
    timesteps: Sequence[int],
    cond: torch.Tensor | None,
) -> tuple[dict[str, torch.Tensor], np.ndarray, torch.Tensor, torch.Tensor | None, list[int]]:
    """Checked (trainable params, ids, x0, cond, timesteps), tensors on the model's device."""
    params = trainable_parameters(model)
    if not params:
        raise ConfigError(
            f"{type(model).__name__} has no trainable parameters (requires_grad=True); "
            "features need at least one"
        )
    first = next(iter(params.values()))
    device, dtype = first.device, first.dtype
    T = _num_train_timesteps(scheduler)
    for timestep in timesteps:
        if (
            isinstance(timestep, bool)
            or not isinstance(timestep, (int, np.integer))
            or not (0 <= timestep < T)
        ):
            raise ConfigError(f"timestep must be an integer in 0..{T - 1}, got {timestep!r}")
    ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
    x0 = torch.as_tensor(x0)
    if x0.ndim != 4 or x0.shape[0] != len(ids):
        raise ConfigError(
            f"x0 must be [B, C, H, W] with B = len(sample_ids) = {len(ids)}, "
            f"got shape {tuple(x0.shape)}"
        )
    if cond is not None and (cond.ndim != 3 or cond.shape[0] != len(ids)):
        raise ConfigError(
            f"cond must be [B, L, D] with B = {len(ids)} (or None), got {tuple(cond.shape)}"
        )
    x0 = x0.to(device=device, dtype=dtype)
    if cond is not None:
        cond = cond.to(device=device, dtype=dtype)
    return params, ids, x0, cond, [int(t) for t in timesteps]


def _noise_keys(ids: np.ndarray, noise_keys: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """The per-sample noise keys: ``noise_keys`` (checked against the batch), else the ids."""
    if noise_keys is None:
        return ids
    keys = np.asarray(noise_keys, dtype=np.uint64).reshape(-1)
    if keys.shape != ids.shape:
        raise ConfigError(
            f"noise_keys must hold one key per sample ({len(ids)}), got {keys.shape[0]}"
        )
    return keys


def _noisy_samples(
    scheduler: Any, x0: torch.Tensor, ids: np.ndarray, timesteps: Sequence[int], noise_seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, ε), each [B, len(timesteps), C, H, W]: sample b at timestep timesteps[k].

    ``ids`` are the samples' noise keys: samples with equal keys share ε at every timestep."""
    batch, shape = x0.shape[0], tuple(x0.shape[1:])
    eps = torch.stack(
        [sample_noise(NOISE_PURPOSE, noise_seed, t, ids, shape) for t in timesteps], dim=1
    ).to(device=x0.device, dtype=x0.dtype)
    count = len(timesteps)
    flat_t = torch.tensor(list(timesteps) * batch, dtype=torch.long)
    x_t = scheduler.add_noise(
        x0.repeat_interleave(count, dim=0), eps.reshape(batch * count, *shape), flat_t
    )
    return x_t.reshape(batch, count, *shape), eps


def per_sample_gradients(
    model: torch.nn.Module,
    scheduler: Any,
    inputs: QueryRows,
    timestep: int,
    output_fn: str | OutputFn,
    noise_seed: int,
) -> torch.Tensor:
    """∇_θ f for each sample at one timestep: [B, P], P = number of trainable parameters.

    Columns follow :func:`trainable_parameters` order, each parameter flattened. ``inputs`` as
    in :class:`QueryRows`. Gradients are in the model's dtype, on the model's device.
    """
    options = GradientOptions(output_fn=output_fn, timesteps=[timestep], noise_seed=noise_seed)
    return mean_gradients(model, scheduler, inputs, options)


def timesteps_per_call(
    batch: int,
    max_evaluations: int,
    probe_bytes: int | None = None,
    available_bytes: int | None = None,
) -> int:
    """Timesteps per ``vmap`` call for a batch of ``batch`` samples.

    At most ``max_evaluations`` (sample, timestep) pairs; when ``probe_bytes`` (the peak memory
    of a one-timestep call) and ``available_bytes`` are known, also at most half of the
    available memory, counting ``probe_bytes`` per timestep (an overestimate: the [B, P] output
    does not grow with the timesteps).
    """
    per_call = max(1, max_evaluations // batch)
    if probe_bytes and available_bytes is not None:
        per_call = min(per_call, max(1, available_bytes // (2 * probe_bytes)))
    return per_call


def _available_cuda_bytes(device: torch.device) -> int:
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def mean_gradients(
    model: torch.nn.Module,
    scheduler: Any,
    inputs: QueryRows,
    options: GradientOptions,
) -> torch.Tensor:
    """(1/K) Σ_t ∇_θ f at the K ``options.timesteps``, per sample: [B, P], columns as
    :func:`per_sample_gradients`.

    With ``options.normalize_timesteps`` each per-timestep gradient is first scaled to unit
    norm, g_t / (‖g_t‖₂ + 1e-8) (DAS, Lin et al. 2025), so the mean is (1/K) Σ_t g_t / ‖g_t‖;
    the per-(sample, timestep) gradients are then formed, in blocks of at most
    :data:`MAX_NORMALIZED_ELEMENTS` elements (:func:`_normalized_gradient_sum`).
    Sample b's noise at t is ``sample_noise("features", noise_seed, t, noise_keys[b])``, the
    keys of ``inputs`` (:class:`QueryRows`; its ids without them).

    One ``vmap`` over the samples evaluates the model on a chunk of timesteps of each sample at
    once, so a call handles up to ``options.max_evaluations`` (sample, timestep) pairs and
    returns the chunk's summed gradient directly; per-timestep gradient vectors are never
    formed. That is about twice as fast as one ``vmap`` per timestep for the demo UNet on a CPU
    and equal to it up to float rounding. On a CUDA device the first call takes one timestep and
    its peak memory bounds the chunk size (:func:`timesteps_per_call`), so large models keep the
    memory of one timestep per call. Lower ``max_evaluations`` to bound activation memory
    further.
    """
    params, inputs, options = _prepared(model, scheduler, inputs, options)
    if options.normalize_timesteps:
        return _normalized_gradient_sum(model, scheduler, params, inputs, options).mul_(
            1.0 / len(options.timesteps)
        )
    fn, timesteps, noise_seed = options.output_fn, options.timesteps, options.noise_seed
    max_evaluations = options.max_evaluations
    ids, keys, x0, cond = inputs.ids, inputs.noise_keys, inputs.x0, inputs.cond
    batch, device = len(ids), x0.device
    probe = device.type == "cuda" and len(timesteps) > 1
    per_call = 1 if probe else timesteps_per_call(batch, max_evaluations)
    detached = {name: p.detach() for name, p in params.items()}
    in_dims = (None, 0, 0, None if cond is None else 0)
    total: dict[str, torch.Tensor] = {}
    start = 0
    with _eval_mode(model), vmap_safe_attention(model):
        while start < len(timesteps):
            chunk = timesteps[start : start + per_call]
            x_t, eps = _noisy_samples(scheduler, x0, keys, chunk, noise_seed)
            t_chunk = torch.tensor(chunk, dtype=torch.long, device=device)

            def f_sum(p, x, e, c, t_chunk=t_chunk):
                kwargs = {} if c is None else {"encoder_hidden_states": c.expand(len(x), *c.shape)}
                eps_pred = functional_call(model, p, (x, t_chunk), kwargs).sample
                return fn(eps_pred, e, t_chunk, scheduler).sum()

            if probe:
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            grads = vmap(grad(f_sum), in_dims=in_dims)(detached, x_t, eps, cond)
            for name, value in grads.items():
                total[name] = total[name].add_(value) if name in total else value
            start += len(chunk)
            if probe:
                probe_bytes = torch.cuda.max_memory_allocated(device) - before
                per_call = timesteps_per_call(
                    batch, max_evaluations, probe_bytes, _available_cuda_bytes(device)
                )
                probe = False
    scale = 1.0 / len(timesteps)
    return torch.cat([total[name].reshape(batch, -1) for name in params], dim=1).mul_(scale)


def projected_mean_gradients(
    model: torch.nn.Module,
    scheduler: Any,
    inputs: QueryRows,
    options: GradientOptions,
    projector: Any,
) -> torch.Tensor:
    """The features of one batch: ``projector`` applied to (1/K) Σ_t ∇_θ f, [B, Z] float32.

    The one code path of every feature producer. A dense projector (:mod:`diffattr.projection`)
    projects :func:`mean_gradients`; a structured one
    (:mod:`diffattr.projection_structured`) goes through :func:`structured_mean_features`, which
    never forms the [B, P] gradient. ``inputs`` and ``options`` as in :func:`mean_gradients`
    (``normalize_timesteps`` structured: see :func:`structured_mean_features`).
    """
    if getattr(projector, "projection", "dense") == "structured":
        return structured_mean_features(model, scheduler, inputs, options, projector).float()
    mean_grad = mean_gradients(model, scheduler, inputs, options)
    mean_grad = mean_grad.to(torch.float64 if mean_grad.dtype == torch.float64 else torch.float32)
    return projector.project(mean_grad).float()


def structured_mean_features(
    model: torch.nn.Module,
    scheduler: Any,
    inputs: QueryRows,
    options: GradientOptions,
    projector: Any,
) -> torch.Tensor:
    """(1/K) Σ_t of the structured projections of ∇_θ f at (x0, t), [B, Z] in the model dtype.

    The (sample, timestep) pairs are evaluated as one plain batch per chunk of timesteps (up to
    ``options.max_evaluations`` pairs); one backward pass down to the layer outputs gives every
    per-evaluation projected gradient (``evaluation``, [B, k, Z] below) before the average.

    ``options.normalize_timesteps``: the full ‖g_t‖ is never formed, so each projected φ_t is
    divided by its Johnson-Lindenstrauss estimate ‖φ_t‖/√Z (E‖φ_t‖² = Z‖g_t‖², see
    :mod:`diffattr.projection_structured`) plus 1e-8: an approximation of g_t/(‖g_t‖ + 1e-8)
    projected, with the dense path's scale. With mixing, φ_t is the block sketch of
    ``projector.sketch_dim`` dimensions (Z there), and ``projector.finish`` maps the mean to Z.
    """
    _, inputs, options = _prepared(model, scheduler, inputs, options)
    fn, timesteps, noise_seed = options.output_fn, options.timesteps, options.noise_seed
    ids, keys, x0, cond = inputs.ids, inputs.noise_keys, inputs.x0, inputs.cond
    batch, device = len(ids), x0.device
    most = max(1, options.max_evaluations // batch)
    per_call = 1 if len(timesteps) > 1 else most  # the first call measures the activations
    total = None
    start = 0
    with _eval_mode(model):
        while start < len(timesteps):
            chunk = timesteps[start : start + per_call]
            count = len(chunk)
            x_t, eps = _noisy_samples(scheduler, x0, keys, chunk, noise_seed)
            shape = tuple(x0.shape[1:])
            x_flat = x_t.reshape(batch * count, *shape).detach().requires_grad_(True)
            eps_flat = eps.reshape(batch * count, *shape)
            t_flat = torch.tensor(chunk, dtype=torch.long, device=device).repeat(batch)
            kwargs = {}
            if cond is not None:
                kwargs["encoder_hidden_states"] = cond.repeat_interleave(count, dim=0)

            def run_loss(x_flat=x_flat, eps_flat=eps_flat, t_flat=t_flat, kwargs=kwargs):
                eps_pred = model(x_flat, t_flat, **kwargs).sample
                return fn(eps_pred, eps_flat, t_flat, scheduler).sum(), x_flat

            evaluation = projector.evaluation_features(model, run_loss, batch * count)
            evaluation = evaluation.reshape(batch, count, -1)
            if options.normalize_timesteps:
                norms = torch.linalg.vector_norm(evaluation, dim=2, keepdim=True)
                scale = math.sqrt(evaluation.shape[2])
                evaluation = evaluation / (norms / scale + TIMESTEP_NORM_EPS)
            chunk_sum = evaluation.sum(dim=1)
            total = chunk_sum if total is None else total.add_(chunk_sum)
            start += count
            per_evaluation = projector.last_input_bytes / (batch * count)
            per_call = structured_timesteps_per_call(batch, most, per_evaluation, device)
    return projector.finish(total.mul_(1.0 / len(timesteps)))


#: Bytes of captured layer inputs per structured call on a CPU (activations are about 1.6× that:
#: 80 evaluations of the CIFAR-2 UNet capture 3.1 GB and peak at 5.5 GB RSS).
STRUCTURED_CPU_INPUT_BYTES = 3 << 30
STRUCTURED_ACTIVATION_FACTOR = 1.6


def structured_timesteps_per_call(
    batch: int, most: int, input_bytes_per_evaluation: float, device: torch.device
) -> int:
    """Timesteps per structured call: at most ``most``, and the captured layer inputs within
    :data:`STRUCTURED_CPU_INPUT_BYTES` on a CPU or, with the activation factor, half of the
    free memory of a CUDA device."""
    if input_bytes_per_evaluation <= 0:
        return most
    if device.type == "cuda":
        budget = _available_cuda_bytes(device) / (2 * STRUCTURED_ACTIVATION_FACTOR)
    else:
        budget = STRUCTURED_CPU_INPUT_BYTES
    return max(1, min(most, int(budget // (input_bytes_per_evaluation * batch))))


def _normalized_gradient_sum(
    model: torch.nn.Module,
    scheduler: Any,
    params: dict[str, torch.Tensor],
    inputs: QueryRows,
    options: GradientOptions,
) -> torch.Tensor:
    """Σ_t g_t / (‖g_t‖₂ + ε) per sample, [B, P]: one ``vmap`` over (sample, timestep) pairs.

    ``inputs`` and ``options`` as :func:`_prepared` returns them."""
    fn, timesteps, noise_seed = options.output_fn, options.timesteps, options.noise_seed
    keys, x0, cond = inputs.noise_keys, inputs.x0, inputs.cond
    batch, device = len(keys), x0.device
    grad_dim = sum(p.numel() for p in params.values())
    per_call = timesteps_per_call(batch, options.max_evaluations)
    per_call = max(1, min(per_call, MAX_NORMALIZED_ELEMENTS // max(1, batch * grad_dim)))
    detached = {name: p.detach() for name, p in params.items()}
    in_dims = (None, 0, 0, None if cond is None else 0, 0)
    total = torch.zeros(batch, grad_dim, dtype=x0.dtype, device=device)

    def f_one(p, x, e, c, t):
        kwargs = {} if c is None else {"encoder_hidden_states": c[None]}
        eps_pred = functional_call(model, p, (x[None], t[None]), kwargs).sample
        return fn(eps_pred, e[None], t[None], scheduler).sum()

    with _eval_mode(model), vmap_safe_attention(model):
        for start in range(0, len(timesteps), per_call):
            chunk = timesteps[start : start + per_call]
            count = len(chunk)
            x_t, eps = _noisy_samples(scheduler, x0, keys, chunk, noise_seed)
            pairs = batch * count
            t_pairs = torch.tensor(chunk * batch, dtype=torch.long, device=device)
            c_pairs = None if cond is None else cond.repeat_interleave(count, dim=0)
            grads = vmap(grad(f_one), in_dims=in_dims)(
                detached,
                x_t.reshape(pairs, *x_t.shape[2:]),
                eps.reshape(pairs, *eps.shape[2:]),
                c_pairs,
                t_pairs,
            )
            flat = torch.cat([grads[name].reshape(pairs, -1) for name in params], dim=1)
            del grads
            norms = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
            flat.div_(norms + TIMESTEP_NORM_EPS)
            total += flat.reshape(batch, count, grad_dim).sum(dim=1)
    return total


def _progress_reporter(
    progress: Callable[[int, int], Any] | Any | None, total: int
) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(update(n_done), close()) for a callback ``progress(done, total)`` or a text stream."""
    if progress is None:
        return (lambda done: None), (lambda: None)
    if hasattr(progress, "write"):
        from tqdm import tqdm

        bar = tqdm(total=total, file=progress, unit="sample", desc="features")

        def update(done: int) -> None:
            bar.update(done - bar.n)

        return update, bar.close
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    raise ConfigError(
        f"progress must be None, a callable(done, total) or a writable stream, got {progress!r}"
    )


def extract_features(
    model: torch.nn.Module,
    scheduler: Any,
    inputs: QueryRows,
    options: GradientOptions,
    projector: Projector,
    runtime: BatchRuntime | None = None,
) -> np.ndarray:
    """Projected mean-over-timesteps gradient features, float32 [n, Z]; row r is
    ``inputs.ids[r]``.

    ``inputs``: the images [n, C, H, W] (a tensor or an array), ids, condition and noise keys
    (:class:`QueryRows`; without keys the noise is keyed by the ids). ``options``: the
    output function, timesteps, noise seed, per-timestep normalisation and evaluations per call
    (:class:`GradientOptions`, :func:`mean_gradients`).

    For each batch: g = (1/K) Σ_t ∇_θ f at t (:func:`mean_gradients`), then
    ``projector.project(g)`` (:func:`projected_mean_gradients`). ``runtime``
    (:class:`diffattr.settings.Runtime`; None: batches of 32, no progress) gives the batch size
    and the progress: None, a callable ``progress(done, total)`` or a text stream for a tqdm
    bar, updated after each batch; its device is not read (the model is already on one). Rows
    do not depend on the batch size or on the order of the samples.
    """
    batch_size = 32 if runtime is None else runtime.batch_size
    progress = None if runtime is None else runtime.progress
    fn = _resolve_output_fn(options.output_fn)
    ids = np.asarray(inputs.ids, dtype=np.int64).reshape(-1)
    images, cond = inputs.x0, inputs.cond
    images = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    if images.ndim != 4 or images.shape[0] != len(ids):
        raise ConfigError(
            f"images must be [n, C, H, W] with n = len(sample_ids) = {len(ids)}, "
            f"got shape {tuple(images.shape)}"
        )
    if cond is not None and (cond.ndim != 3 or cond.shape[0] != len(ids)):
        raise ConfigError(
            f"cond must be [n, L, D] with n = {len(ids)} (or None), got {tuple(cond.shape)}"
        )
    timesteps = [int(t) for t in options.timesteps]
    grad_dim = num_trainable_parameters(model)
    if projector.grad_dim != grad_dim:
        raise ConfigError(
            f"projector was built for grad_dim={projector.grad_dim} but the model has "
            f"{grad_dim} trainable parameters"
        )

    rows = QueryRows(images, ids, cond, _noise_keys(ids, inputs.noise_keys))
    batch_options = dataclasses.replace(options, output_fn=fn, timesteps=timesteps)
    n = len(ids)
    out = np.empty((n, batch_width(projector)), dtype=np.float32)
    update, close = _progress_reporter(progress, n)
    try:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch = rows.rows(start, stop)
            feats = projected_mean_gradients(model, scheduler, batch, batch_options, projector)
            out[start:stop] = feats.cpu().numpy()
            update(stop)
    finally:
        close()
    return finish_rows(projector, out, next(model.parameters()).device)


def batch_width(projector: Any) -> int:
    """Columns of :func:`projected_mean_gradients`' output: Z, or a structured projector's
    sketch width while its mixing is deferred to :func:`finish_rows`."""
    return getattr(projector, "batch_dim", projector.proj_dim)


def finish_rows(projector: Any, rows: np.ndarray, device: Any = "cpu") -> np.ndarray:
    """A job's [n, :func:`batch_width`] rows → its [n, Z] features (the deferred mixing of a
    structured projector whose mixing matrix is too large to hold; otherwise ``rows``)."""
    finish = getattr(projector, "finish_rows", None)
    return rows if finish is None else finish(rows, device)


def merge_feature_shards(
    shard_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike
) -> None:
    """Concatenate feature shards in the given order into one file.

    Every attribute except the shard-specific ones (:data:`SHARD_ATTRS`) must agree, otherwise
    :class:`FeatureMismatchError`. Ids must be unique across shards. The merged file keeps the
    common attributes and records ``shard_splits`` (each shard's ``split``) and ``merged_from``.
    """
    if not shard_paths:
        raise ConfigError("merge_feature_shards needs at least one shard path, got none")
    shards = []
    for path in shard_paths:
        with open_h5(path) as handle:
            attrs = {key: decode_attr(value) for key, value in handle.attrs.items()}
            shape = handle["features"].shape
        shards.append((Path(path), attrs, shape))
    first_path, first_attrs, first_shape = shards[0]
    for path, attrs, shape in shards[1:]:
        keys = sorted((set(first_attrs) | set(attrs)) - SHARD_ATTRS)
        require_same(first_attrs, attrs, keys, f"feature shards {first_path} and {path}")
        if shape[1] != first_shape[1]:
            raise FeatureMismatchError(
                f"feature shards {first_path} and {path} have {first_shape[1]} and {shape[1]} "
                "columns; they cannot be concatenated"
            )
    all_ids = []
    for path, _, _ in shards:
        with open_h5(path) as handle:
            all_ids.append(handle["ids"][()].astype(np.int64))
    ids = np.concatenate(all_ids)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise FeatureMismatchError(
            f"sample ids {unique[counts > 1][:10].tolist()} occur in more than one shard of "
            f"{[str(p) for p, _, _ in shards]}"
        )
    n = len(ids)
    merged = {k: v for k, v in first_attrs.items() if k not in SHARD_ATTRS}
    merged["shard_splits"] = [attrs.get("split") for _, attrs, _ in shards]
    merged["merged_from"] = [p.name for p, _, _ in shards]
    merged["n_rows"] = n
    with h5_writer(out_path, merged) as out:
        dataset = out.create_dataset("features", shape=(n, first_shape[1]), dtype=np.float32)
        row = 0
        for path, _, shape in shards:
            with open_h5(path) as handle:
                source = handle["features"]
                for start in range(0, shape[0], 4096):
                    stop = min(start + 4096, shape[0])
                    dataset[row + start : row + stop] = source[start:stop]
            row += shape[0]
        out.create_dataset("ids", data=ids)


__all__ = [
    "DEFAULT_MAX_EVALUATIONS",
    "TIMESTEP_NORM_EPS",
    "NOISE_PURPOSE",
    "SHARD_ATTRS",
    "TIMESTEP_STRATEGIES",
    "BatchRuntime",
    "QueryRows",
    "GradientOptions",
    "extract_features",
    "feature_name",
    "parse_feature_name",
    "mean_gradients",
    "merge_feature_shards",
    "num_trainable_parameters",
    "per_sample_gradients",
    "projected_mean_gradients",
    "batch_width",
    "finish_rows",
    "select_timesteps",
    "structured_mean_features",
    "timesteps_per_call",
    "trainable_parameters",
    "vmap_safe_attention",
    "write_features",
]
