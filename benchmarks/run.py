"""Performance benchmarks: each comparison times the pipeline's own code ("ours") against a
baseline written here the way the reference code does it, in the same process (or run) and on
the same inputs, so the ratio holds on a noisy machine.

Each comparison prints one line on stdout::

    <name>: ours <value> <unit>, baseline <value> <unit>, ratio <baseline/ours>

and the same, with targets and details, goes to ``benchmarks/latest.json``. Progress and
details go to stderr. All values are costs (seconds, ms/image, GB), so a ratio above 1 means
ours is better. See benchmarks/README.md for what each comparison measures.

    python benchmarks/run.py                      # everything (about 10 minutes on 2 cores)
    python benchmarks/run.py --only scores,lds    # some comparisons
    python benchmarks/run.py --quick              # small sizes, a smoke test (< 1 minute)
    python benchmarks/run.py --device cuda --only features,training
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "latest.json"
PAPER_LAMBDAS = [m * 10.0**p for p in range(-2, 7) for m in (1, 2, 5)]


@dataclass
class Comparison:
    """One line of the report: the cost of ours and of the baseline, in the same unit."""

    name: str
    ours: float
    baseline: float
    unit: str
    target: str = ""
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.baseline / self.ours if self.ours > 0 else math.inf

    def line(self) -> str:
        return (
            f"{self.name}: ours {self.ours:.4g} {self.unit}, "
            f"baseline {self.baseline:.4g} {self.unit}, ratio {self.ratio:.2f}"
        )


@dataclass
class Settings:
    quick: bool
    device: torch.device
    threads: int


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def best_of(runs: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict:
    """Minimum time of each named run over ``repeats`` interleaved rounds, and its last result."""
    times = {name: math.inf for name in runs}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            seconds, results[name] = timed(fn, device)
            times[name] = min(times[name], seconds)
    return {name: (times[name], results[name]) for name in runs}


def relative_error(ours: np.ndarray, baseline: np.ndarray) -> float:
    """max |ours − baseline| / max |baseline|."""
    ours, baseline = np.asarray(ours, np.float64), np.asarray(baseline, np.float64)
    return float(np.abs(ours - baseline).max() / max(np.abs(baseline).max(), 1e-300))


def demo_config() -> dict[str, Any]:
    from diffattr.config import validate_config

    return validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()))


# --------------------------------------------------------------------------- 1. features


def baseline_features(
    model: torch.nn.Module,
    scheduler: Any,
    inputs: Any,
    options: Any,
    matrix: torch.Tensor,
    batch_size: int,
) -> np.ndarray:
    """The reference's featurisation: per batch, K timesteps in sequence, each a per-sample
    ``vmap(grad)`` giving full [B, P] gradient vectors, summed, divided by K, then one dense
    Gaussian projection ``g @ matrix``. Noise keys are ours, so the output is comparable."""
    from torch.func import functional_call, grad, vmap

    from diffattr.features import NOISE_PURPOSE, vmap_safe_attention
    from diffattr.noise import sample_noise
    from diffattr.outputs import get_output_fn

    images, ids = inputs.x0, inputs.ids  # a queries.QueryRows
    timesteps, noise_seed = options.timesteps, options.noise_seed  # a features.GradientOptions
    fn = get_output_fn(options.output_fn)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    device = matrix.device
    rows = []
    model.eval()
    with vmap_safe_attention(model):
        for start in range(0, len(ids), batch_size):
            x0 = images[start : start + batch_size].to(device)
            batch_ids = ids[start : start + batch_size]
            total = None
            for t in timesteps:
                eps = sample_noise(NOISE_PURPOSE, noise_seed, t, batch_ids, tuple(x0.shape[1:]))
                eps = eps.to(device)
                x_t = scheduler.add_noise(x0, eps, torch.full((len(x0),), t, dtype=torch.long))
                t_one = torch.tensor([t], device=device)

                def f_single(p, x, e, t_one=t_one):
                    pred = functional_call(model, p, (x[None], t_one)).sample
                    return fn(pred, e[None], t_one, scheduler)[0]

                grads = vmap(grad(f_single), in_dims=(None, 0, 0))(params, x_t, eps)
                flat = torch.cat([grads[n].reshape(len(x0), -1) for n in params], dim=1)
                total = flat if total is None else total + flat
            rows.append(((total / len(timesteps)) @ matrix).cpu().numpy())
    return np.concatenate(rows)


#: features.structured_mixing and _mixer timed by the demo-size features benchmark (the defaults)
BENCH_MIXING, BENCH_MIXER = 16, "hadamard"


def bench_features(settings: Settings) -> list[Comparison]:
    from diffattr.features import (
        GradientOptions,
        extract_features,
        num_trainable_parameters,
        select_timesteps,
    )
    from diffattr.models import build_scheduler, build_unet
    from diffattr.projection import make_projector
    from diffattr.queries import QueryRows
    from diffattr.settings import Runtime

    config = demo_config()
    quick = settings.quick
    n = 8 if quick else 1000 if settings.device.type == "cuda" else 100
    batch = 4 if quick else config["features"]["batch_size"]
    K = 2 if quick else config["features"]["K"][0]
    dim = config["features"]["proj_dim"]
    output_fn = "square"
    torch.manual_seed(0)
    model = build_unet(config["model"]["unet"], config["model"]["dropout"]).to(settings.device)
    scheduler = build_scheduler(config["scheduler"])
    timesteps = select_timesteps(K, "uniform", scheduler.config.num_train_timesteps)
    grad_dim = num_trainable_parameters(model)
    images = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ids = np.arange(n, dtype=np.int64)
    log(f"features: demo UNet, P = {grad_dim}, Z = {dim}, K = {K}, n = {n}, batch {batch}")

    projector = make_projector("normal", grad_dim, dim, config["features"]["proj_seed"])
    generation, _ = timed(lambda: projector.project(torch.zeros(1, grad_dim)), settings.device)
    warm = torch.zeros(1, grad_dim, device=settings.device)
    generation_device, _ = timed(lambda: projector.project(warm), settings.device)
    matrix = projector.matrix().to(settings.device)  # the same Gaussian matrix, dense

    inputs = QueryRows(images, ids)
    options = GradientOptions(output_fn=output_fn, timesteps=timesteps, noise_seed=0)
    runtime = Runtime(batch_size=batch)

    def ours() -> np.ndarray:
        return extract_features(model, scheduler, inputs, options, projector, runtime)

    def baseline() -> np.ndarray:
        return baseline_features(model, scheduler, inputs, options, matrix, batch)

    from diffattr.projection_structured import Split, make_structured_projector

    seed = config["features"]["proj_seed"]
    mixed_projector = make_structured_projector(
        model, dim, seed, split=Split(mixing=BENCH_MIXING, mixer=BENCH_MIXER)
    )
    structured_runs = {
        name: functools.partial(extract_features, model, scheduler, inputs, options, p, runtime)
        for name, p in (
            ("structured", make_structured_projector(model, dim, seed)),
            ("mixed", mixed_projector),
        )
    }

    runs = best_of(
        {"baseline": baseline, "ours": ours, **structured_runs},
        1 if quick else 2,
        settings.device,
    )
    (t_ours, f_ours), (t_base, f_base) = runs["ours"], runs["baseline"]
    t_structured, t_mixed = runs["structured"][0], runs["mixed"][0]
    error = relative_error(f_ours, f_base)
    log(
        f"  projection matrix generated once in {generation + generation_device:.1f} s "
        f"(not timed); max relative difference of features {error:.1e}"
    )
    return [
        Comparison(
            "features",
            t_ours,
            t_base,
            "s",
            target=">= 3x at equal output",
            met=t_base / t_ours >= 3 and error <= 1e-4,
            details={
                "samples": n,
                "batch_size": batch,
                "K": K,
                "proj_dim": dim,
                "grad_dim": grad_dim,
                "output_fn": output_fn,
                "max_relative_difference": error,
                "projection_generation_s": generation + generation_device,
                "per_sample_ours_ms": 1e3 * t_ours / n,
                "per_sample_baseline_ms": 1e3 * t_base / n,
            },
        ),
        Comparison(
            "features_structured",
            t_structured,
            t_base,
            "s",
            target=">= 3x (a different projection: the demo default stays dense, see "
            "docs/projection.md)",
            met=t_base / t_structured >= 3,
            details={"samples": n, "batch_size": batch, "K": K, "proj_dim": dim},
        ),
        Comparison(
            "features_structured_mixed",
            t_mixed,
            t_base,
            "s",
            target=f">= 3x (structured_mixing: {BENCH_MIXING}, structured_mixer: {BENCH_MIXER}: "
            "the defaults, docs/projection.md)",
            met=t_base / t_mixed >= 3,
            details={
                "samples": n,
                "batch_size": batch,
                "K": K,
                "proj_dim": dim,
                "mixing": BENCH_MIXING,
                "mixer": BENCH_MIXER,
                "sketch_dim": mixed_projector.sketch_dim,
            },
        ),
    ]


# --------------------------------------------------------------------------- 1b. paper-size features

PAPER_CONFIG = ROOT / "experiments" / "cifar2.yaml"
PAPER_PROJ_DIM = 32768
#: Rows of the reference's dense projection timed per measured block.
PAPER_BLOCK_ROWS = 1024

PAPER_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch, yaml
    sys.path.insert(0, sys.argv[1])
    import run as bench
    model, scheduler, images, ids, timesteps = bench.paper_inputs(
        int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    )
    from diffattr.features import GradientOptions, extract_features
    from diffattr.queries import QueryRows
    from diffattr.calibration import calibration_energies
    from diffattr.projection_structured import Split, make_feature_projector
    from diffattr.settings import Runtime
    calibrate = lambda groups: calibration_energies(
        model, scheduler, QueryRows(images, ids), "square", groups, 42)
    start = time.perf_counter()
    mixing, mixer = int(sys.argv[5]), sys.argv[6]
    projector = make_feature_projector(model, bench.PAPER_PROJ_DIM, 42, "normal", "auto",
                                       Split("energy", calibrate, mixing, mixer))
    calibration_s = time.perf_counter() - start
    warm = GradientOptions(output_fn="square", timesteps=timesteps[:1], noise_seed=0)
    extract_features(model, scheduler, QueryRows(images[:1], ids[:1]), warm, projector,
                     Runtime(batch_size=1))  # warm-up: kernels and the factor matrices
    device = images.device
    bench.synchronize(device)
    start = time.perf_counter()
    options = GradientOptions(output_fn="square", timesteps=timesteps, noise_seed=0)
    out = extract_features(model, scheduler, QueryRows(images, ids), options, projector,
                           Runtime(batch_size=len(ids)))
    bench.synchronize(device)
    seconds = time.perf_counter() - start
    peak_kb = 0
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak_kb = int(line.split()[1])
    cuda_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    print(json.dumps({"seconds": seconds, "peak_kb": peak_kb, "cuda_peak_bytes": cuda_peak,
                      "calibration_s": calibration_s, "rows": len(ids),
                      "projection": projector.projection, "shape": list(out.shape),
                      "mixing": getattr(projector, "mixing", 1),
                      "mixer": getattr(projector, "mixer", None),
                      "finite": bool(np.isfinite(out).all())}))
    """
)


def paper_inputs(batch: int, K: int, device: str):
    """The CIFAR-2 UNet of experiments/cifar2.yaml with random weights (seed 0), its scheduler,
    ``batch`` random 3×32×32 images and K uniform timesteps."""
    from diffattr.config import validate_config
    from diffattr.features import select_timesteps
    from diffattr.models import build_scheduler, build_unet

    config = validate_config(yaml.safe_load(PAPER_CONFIG.read_text()))
    torch.manual_seed(0)
    model = build_unet(config["model"]["unet"]).to(device).eval()
    scheduler = build_scheduler(config["scheduler"])
    images = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    timesteps = select_timesteps(K, "uniform", scheduler.config.num_train_timesteps)
    return model, scheduler, images.to(device), np.arange(batch, dtype=np.int64), timesteps


def reference_paper_features(model, scheduler, images, ids, timesteps, measured_blocks):
    """The reference approach: K timesteps in sequence, per-sample ``vmap(grad)`` [B, P] each,
    summed; then a dense N(0, 1) [P, Z] projection generated on the fly block by block (as
    fast_jl does). Returns (gradient seconds, seconds of ``measured_blocks`` blocks, blocks)."""
    from torch.func import functional_call, grad, vmap

    from diffattr.features import NOISE_PURPOSE, vmap_safe_attention
    from diffattr.noise import sample_noise
    from diffattr.outputs import get_output_fn

    fn = get_output_fn("square")
    device = images.device
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def gradients():
        total = None
        with vmap_safe_attention(model):
            for t in timesteps:
                eps = sample_noise(NOISE_PURPOSE, 0, t, ids, tuple(images.shape[1:])).to(device)
                x_t = scheduler.add_noise(
                    images, eps, torch.full((len(ids),), t, dtype=torch.long, device=device)
                )
                t_one = torch.tensor([t], device=device)

                def f_single(p, x, e, t_one=t_one):
                    pred = functional_call(model, p, (x[None], t_one)).sample
                    return fn(pred, e[None], t_one, scheduler)[0]

                grads = vmap(grad(f_single), in_dims=(None, 0, 0))(params, x_t, eps)
                flat = torch.cat([grads[n].reshape(len(ids), -1) for n in params], dim=1)
                del grads
                total = flat if total is None else total.add_(flat)
        return total.div_(len(timesteps))

    grad_seconds, mean_grad = timed(gradients, device)
    grad_dim = mean_grad.shape[1]
    blocks = -(-grad_dim // PAPER_BLOCK_ROWS)
    generator = torch.Generator(device=device).manual_seed(0)
    out = torch.zeros(len(ids), PAPER_PROJ_DIM, device=device)

    def project_some():
        for b in range(measured_blocks):
            start = b * PAPER_BLOCK_ROWS
            rows = min(PAPER_BLOCK_ROWS, grad_dim - start)
            block = torch.randn(rows, PAPER_PROJ_DIM, generator=generator, device=device)
            out.addmm_(mean_grad[:, start : start + rows], block)

    project_some()  # warm-up
    proj_seconds, _ = timed(project_some, device)
    return grad_seconds, proj_seconds, blocks


def plain_forward_backward(model, scheduler, images, ids, timesteps) -> float:
    """Seconds of one batched forward+backward (parameter gradients) of the B·K evaluations."""
    from diffattr.features import _noisy_samples
    from diffattr.outputs import get_output_fn

    fn = get_output_fn("square")
    device = images.device
    x_t, eps = _noisy_samples(scheduler, images, ids, timesteps, 0)
    shape = tuple(images.shape[1:])
    x_flat, eps_flat = x_t.reshape(-1, *shape), eps.reshape(-1, *shape)
    t_flat = torch.tensor(timesteps, device=device).repeat(len(ids))

    def step():
        model.zero_grad(set_to_none=True)
        fn(model(x_flat, t_flat).sample, eps_flat, t_flat, scheduler).sum().backward()

    model(x_flat[:1], t_flat[:1]).sample.sum().backward()  # warm-up
    seconds, _ = timed(step, device)
    model.zero_grad(set_to_none=True)
    return seconds


def paper_child(settings: Settings, batch: int, K: int, mixing=None, mixer=None):
    """PAPER_CHILD's record: ours in a fresh process (its own peak RSS); ``mixing`` and
    ``mixer`` default to the config's (``features.structured_mixing`` / ``_mixer``)."""
    from diffattr.schema import schema_default

    mixing = schema_default("features.structured_mixing") if mixing is None else mixing
    mixer = schema_default("features.structured_mixer") if mixer is None else mixer
    here = str(Path(__file__).resolve().parent)
    args = [here, str(batch), str(K), str(settings.device), str(mixing), mixer]
    command = [sys.executable, "-c", PAPER_CHILD, *args]
    done = subprocess.run(command, capture_output=True, text=True, env=thread_env(settings.threads))
    if done.returncode != 0:
        raise RuntimeError(f"the paper-size feature subprocess failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


#: The variant that paper_features also times: the unmixed blocks (structured_mixing: 1)
PAPER_UNMIXED = (1, "gaussian")


def bench_paper_features(settings: Settings) -> list[Comparison]:
    batch, K = (2, 2) if settings.quick else (8, 10)
    measured_blocks = 1 if settings.quick else 4
    device = str(settings.device)
    log(
        f"paper_features: CIFAR-2 UNet (experiments/cifar2.yaml, random weights), "
        f"Z = {PAPER_PROJ_DIM}, K = {K}, batch {batch}, f = square, {device}"
    )
    child = paper_child(settings, batch, K)
    ours, peak_gb = child["seconds"], child["peak_kb"] / 2**20
    log(
        f"  ours ({child['projection']} projection, mixing {child['mixing']} {child['mixer']}: the "
        f"default for this config): {ours:.1f} s, "
        f"peak RSS {peak_gb:.2f} GB"
        + (
            f", CUDA peak {child['cuda_peak_bytes'] / 2**30:.2f} GB"
            if child["cuda_peak_bytes"]
            else ""
        )
        + f"; energy-split calibration once per job ({child['rows']} rows here): "
        f"{child['calibration_s']:.1f} s"
    )
    model, scheduler, images, ids, timesteps = paper_inputs(batch, K, device)
    plain = plain_forward_backward(model, scheduler, images, ids, timesteps)
    log(f"  plain batched forward+backward of the {batch * K} evaluations: {plain:.1f} s")
    grad_s, proj_s, blocks = reference_paper_features(
        model, scheduler, images, ids, timesteps, measured_blocks
    )
    projection_s = proj_s * blocks / measured_blocks
    reference = grad_s + projection_s
    log(
        f"  reference: per-sample gradients {grad_s:.1f} s; dense projection {proj_s:.2f} s for "
        f"{measured_blocks} of {blocks} blocks of {PAPER_BLOCK_ROWS} rows "
        f"(fraction {measured_blocks / blocks:.2e}), scaled to {projection_s:.0f} s"
    )
    details = {
        "batch": batch,
        "K": K,
        "proj_dim": PAPER_PROJ_DIM,
        "projection": child["projection"],
        "mixing": child["mixing"],
        "mixer": child["mixer"],
        "reference_gradient_s": grad_s,
        "reference_projection_s_scaled": projection_s,
        "reference_blocks_measured": measured_blocks,
        "reference_blocks_total": blocks,
        "plain_forward_backward_s": plain,
        "ours_s": ours,
        "ours_peak_rss_gb": peak_gb,
        "ours_cuda_peak_bytes": child["cuda_peak_bytes"],
        "ours_calibration_s_once_per_job": child["calibration_s"],
        "ours_calibration_rows": child["rows"],
    }
    mixing, mixer = PAPER_UNMIXED
    unmixed = paper_child(settings, batch, K, mixing, mixer)
    unmixed_gb = unmixed["peak_kb"] / 2**20
    log(
        f"  ours with structured_mixing: {mixing} (unmixed): "
        f"{unmixed['seconds']:.1f} s, peak RSS {unmixed_gb:.2f} GB"
    )
    unmixed_details = {**details, "mixing": mixing, "mixer": mixer}
    unmixed_details.update(ours_s=unmixed["seconds"], ours_peak_rss_gb=unmixed_gb)
    return [
        Comparison(
            "paper_features",
            ours,
            reference,
            "s",
            target=">= 20x the reference approach",
            met=reference / ours >= 20,
            details=details,
        ),
        *paper_floor_comparisons("paper_features", ours, peak_gb, plain, details),
        *paper_floor_comparisons(
            "paper_features_unmixed", unmixed["seconds"], unmixed_gb, plain, unmixed_details
        ),
    ]


def paper_floor_comparisons(
    name: str, seconds: float, peak_gb: float, plain: float, details: dict
) -> list[Comparison]:
    """``<name>_vs_plain`` (ours within 2x the plain forward+backward) and ``<name>_memory``
    (peak RSS within 8 GB)."""
    return [
        Comparison(
            f"{name}_vs_plain",
            seconds,
            plain,
            "s",
            target="ours <= 2x a plain batched forward+backward (ratio >= 0.5)",
            met=plain / seconds >= 0.5,
            details=details,
        ),
        Comparison(
            f"{name}_memory",
            peak_gb,
            8.0,
            "GB",
            target="peak RSS of ours <= 8 GB (the baseline column is that limit)",
            met=peak_gb <= 8.0,
            details={**details, "baseline_kind": "limit"},
        ),
    ]


# --------------------------------------------------------------------------- 2. scores


def decaying_features(rows: int, dim: int, seed: int) -> np.ndarray:
    """Gaussian features whose kernel spectrum spans about 6 decades, like the demo's D-TRAK
    features (their nonzero spectrum spans 6.6 decades)."""
    rng = np.random.default_rng(seed)
    scales = 10.0 ** (-3.0 * np.arange(dim) / dim)
    return (rng.standard_normal((rows, dim)) * scales).astype(np.float32)


GRID_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import scipy.stats, tqdm  # imported before the clock starts, as in a warm process
    from diffattr import lds, spectral
    train, test, spectra, masks_path, measured_path, out = sys.argv[1:7]
    lambdas = json.loads(sys.argv[7])
    masks, measured = np.load(masks_path), np.load(measured_path)
    start = time.perf_counter()
    spectral.write_spectra(train, test, spectra, {"method": "benchmark", "lds_sign": -1})
    factor_s = time.perf_counter() - start
    with spectral.open_scores(spectra, lambdas, [train]) as grid:
        curves = lds.lds_from_predictions(grid.predictions(masks), measured)
    seconds = time.perf_counter() - start
    np.save(out, curves)
    # VmHWM, the peak RSS of this process image (ru_maxrss would carry the parent's peak over
    # fork + exec on Linux).
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": seconds, "factor_s": factor_s, "peak_kb": int(peak.split()[1])}))
    """
)


@dataclass(frozen=True)
class GridTruth:
    """A λ-grid benchmark's ground truth: subset masks [S, N] and measured outputs [S, n]."""

    masks: np.ndarray
    measured: np.ndarray


def baseline_grid_curves(
    phi: torch.Tensor,
    psi: torch.Tensor,
    kernel: torch.Tensor,
    cross: torch.Tensor | None,
    lam: float,
    truth: GridTruth,
) -> np.ndarray:
    """The reference at one λ: one ``torch.linalg.inv`` per λ (Z×Z, or N×N in the dual form
    when N < Z, with ``cross`` = ΨΦᵀ computed once), the score matrix τ = Ψ(ΦG⁻¹)ᵀ, the
    predictions −Mτᵀ and the per-query LDS, in the precision of the inputs."""
    from diffattr import lds

    eye = torch.eye(kernel.shape[0], dtype=kernel.dtype)
    inverse = torch.linalg.inv(kernel + lam * eye)
    tau = cross @ inverse if cross is not None else psi @ (phi @ inverse).T
    predictions = -(truth.masks @ tau.double().numpy().T)
    return lds.lds_from_predictions(predictions, truth.measured)[0]


def grid_case(
    settings: Settings, name: str, n_train: int, dim: int, n_test: int, subsets: int
) -> list[Comparison]:
    """Ours (the pipeline: spectra file, then the LDS curves of ``subsets`` subsets for the
    27 λ, in a child process for its peak RSS) against one inverse per λ in float64 (our
    precision; equal curves expected) and in float32 (the reference's precision)."""
    lambdas = np.array(PAPER_LAMBDAS)
    dual = n_train < dim
    log(
        f"{name}: Z = {dim}, N = {n_train}, n = {n_test}, {subsets} subsets, "
        f"{len(lambdas)} λ values ({'dual' if dual else 'primal'} form)"
    )
    rng = np.random.default_rng(2)
    phi = decaying_features(n_train, dim, 0)
    psi = decaying_features(n_test, dim, 1)
    masks = (rng.random((subsets, n_train)) < 0.5).astype(np.float64)
    signal = masks @ rng.standard_normal((n_train, n_test)) / np.sqrt(n_train)
    measured = signal + rng.standard_normal((subsets, n_test))
    with tempfile.TemporaryDirectory(prefix="diffattr-bench-") as tmp:
        tmp_path = Path(tmp)
        write_feature_file(tmp_path / "train.h5", phi)
        write_feature_file(tmp_path / "test.h5", psi)
        np.save(tmp_path / "masks.npy", masks)
        np.save(tmp_path / "measured.npy", measured)
        command = [
            sys.executable,
            "-c",
            GRID_CHILD,
            *(str(tmp_path / f) for f in ("train.h5", "test.h5", "spectra.h5")),
            *(str(tmp_path / f) for f in ("masks.npy", "measured.npy", "curves.npy")),
            json.dumps(lambdas.tolist()),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, env=thread_env(settings.threads)
        )
        if done.returncode != 0:
            raise RuntimeError(f"the λ-grid subprocess failed:\n{done.stderr}")
        child = json.loads(done.stdout.strip().splitlines()[-1])
        ours = np.load(tmp_path / "curves.npy")
        spectra_gb = (tmp_path / "spectra.h5").stat().st_size / 2**30
    peak_gb = child["peak_kb"] / 2**20
    log(
        f"  ours: {child['seconds']:.1f} s (factorisation {child['factor_s']:.1f} s), peak RSS "
        f"{peak_gb:.2f} GB, spectra file {spectra_gb:.2f} GB"
    )
    common = {
        "n_train": n_train,
        "proj_dim": dim,
        "n_test": n_test,
        "subsets": subsets,
        "lambdas": len(lambdas),
        "form": "dual" if dual else "primal",
        "ours_factor_s": child["factor_s"],
        "ours_peak_rss_gb": peak_gb,
        "spectra_file_gb": spectra_gb,
    }
    comparisons = []
    # λ = 0.01 (the worst conditioned) and 100
    for dtype, label, measured_at in (
        (torch.float64, "", [0, 12]),
        (torch.float32, "_float32", [0]),
    ):
        truth = GridTruth(masks, measured)
        timing = time_baseline_grid((phi, psi), lambdas, measured_at, dtype, truth, ours)
        exact = dtype == torch.float64
        ratio = timing["seconds"] / child["seconds"]
        comparisons.append(
            Comparison(
                f"{name}{label}",
                child["seconds"],
                timing["seconds"],
                "s",
                target=">= 10x, per-query LDS curves equal to 1e-6" if exact else "",
                met=(ratio >= 10 and timing["max_abs_lds_difference"] <= 1e-6) if exact else None,
                details={
                    **common,
                    "baseline": f"{dtype} inverse per λ ({'N×N, dual' if dual else 'Z×Z'}), "
                    "score matrix, predictions, LDS",
                    **timing,
                },
            )
        )
    return comparisons


def time_baseline_grid(
    features: tuple[np.ndarray, np.ndarray],
    lambdas: np.ndarray,
    measured_at: list[int],
    dtype: torch.dtype,
    truth: GridTruth,
    ours: np.ndarray,
) -> dict[str, Any]:
    """The baseline's time for the whole grid: the kernel once plus the mean per-λ time (the
    same work for every λ) measured on ``measured_at``, times the grid size; and the largest
    per-query LDS difference from ours on those λ."""
    cpu = torch.device("cpu")
    phi, psi = features  # training [N, Z] and query [n, Z] features
    dual = phi.shape[0] < phi.shape[1]
    phi_t, psi_t = torch.from_numpy(phi).to(dtype), torch.from_numpy(psi).to(dtype)
    t_kernel, kernel = timed(lambda: phi_t @ phi_t.T if dual else phi_t.T @ phi_t, cpu)
    t_cross, cross = timed(lambda: psi_t @ phi_t.T if dual else None, cpu)
    per_lambda, errors = [], []
    for index in measured_at:
        seconds, curve = timed(
            lambda index=index: baseline_grid_curves(
                phi_t, psi_t, kernel, cross, lambdas[index], truth
            ),
            cpu,
        )
        per_lambda.append(seconds)
        errors.append(float(np.abs(curve - ours[index]).max()))
        log(
            f"  {dtype} inverse, λ = {lambdas[index]:g}: {seconds:.1f} s, max |LDS "
            f"difference| per query {errors[-1]:.1e}"
        )
    return {
        "seconds": t_kernel + t_cross + float(np.mean(per_lambda)) * len(lambdas),
        "kernel_s": t_kernel + t_cross,
        "per_lambda_s": per_lambda,
        "measured_lambdas": [float(lambdas[i]) for i in measured_at],
        "max_abs_lds_difference": max(errors),
    }


def write_feature_file(path: Path, features: np.ndarray) -> None:
    from diffattr.features import write_features

    attrs = {
        "proj_kind": "normal",
        "proj_seed": 42,
        "proj_dim": features.shape[1],
        "output_fn": "square",
        "timesteps": list(range(0, 1000, 100)),
        "noise_seed": 0,
        "noise": "common",
        "noise_batch_size": 0,
        "noise_shard_rows": 0,
        "model_digest": "benchmark",
        "split": "benchmark",
    }
    write_features(path, features, np.arange(len(features)), attrs)


def bench_scores(settings: Settings) -> list[Comparison]:
    """The λ grid as the LDS needs it, at Z = 4096 (primal) and at the CIFAR-2 shape."""
    if settings.quick:
        return grid_case(settings, "scores", 400, 256, 100, 16) + grid_case(
            settings, "scores_cifar2", 200, 1024, 100, 16
        )
    return grid_case(settings, "scores", 5000, 4096, 1000, 64) + grid_case(
        settings, "scores_cifar2", 5000, 32768, 1000, 64
    )


# --------------------------------------------------------------------------- 3. LDS


def baseline_spearman(predictions: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """The reference: one ``scipy.stats.spearmanr`` call per query."""
    from scipy.stats import spearmanr

    return np.array(
        [spearmanr(predictions[:, j], measured[:, j]).statistic for j in range(measured.shape[1])]
    )


def bench_lds(settings: Settings) -> list[Comparison]:
    from diffattr import lds

    subsets, n_train, n_test = (16, 500, 100) if settings.quick else (64, 5000, 1000)
    rng = np.random.default_rng(0)
    masks = rng.random((subsets, n_train)) < 0.5
    scores = rng.standard_normal((n_test, n_train)).astype(np.float32)
    measured = rng.standard_normal((subsets, n_test))
    predictions = -(masks.astype(np.float64) @ scores.astype(np.float64).T)
    log(f"lds: {subsets} subsets, N = {n_train}, n = {n_test}")
    cpu = torch.device("cpu")
    runs = best_of(
        {
            "baseline": lambda: baseline_spearman(predictions, measured),
            "ours": lambda: lds.spearman_columns(predictions, measured),
            "baseline_total": lambda: baseline_spearman(
                -(masks.astype(np.float64) @ scores.astype(np.float64).T), measured
            ),
            "ours_total": lambda: lds.lds_per_sample(scores, masks, measured),
        },
        3,
        cpu,
    )
    error = float(np.abs(runs["ours"][1] - runs["baseline"][1]).max())
    error_total = float(np.abs(runs["ours_total"][1] - runs["baseline_total"][1]).max())
    log(
        f"  max |difference| of per-query correlations {error:.1e} (with product {error_total:.1e})"
    )
    details = {"subsets": subsets, "n_train": n_train, "n_test": n_test}
    return [
        Comparison(
            "lds",
            runs["ours"][0],
            runs["baseline"][0],
            "s",
            target=">= 20x, identical values",
            met=runs["baseline"][0] / runs["ours"][0] >= 20 and error <= 1e-12,
            details={**details, "max_abs_difference": error, "stage": "Spearman per query"},
        ),
        Comparison(
            "lds_with_product",
            runs["ours_total"][0],
            runs["baseline_total"][0],
            "s",
            details={
                **details,
                "max_abs_difference": error_total,
                "stage": "predictions M·(−τ)ᵀ (the same float64 product in both) + Spearman",
            },
        ),
    ]


# --------------------------------------------------------------------------- 4. memory

MEMORY_CHILD = textwrap.dedent(
    """
    import json, sys
    from diffattr.scoring import write_trak_scores
    train, test, out, lambdas = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    write_trak_scores(train, test, out, lambdas, {"method": "benchmark"})
    # VmHWM, the peak RSS of this process image (ru_maxrss would carry the parent's peak over
    # fork + exec on Linux).
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"peak_kb": int(peak.split()[1])}))
    """
)


def write_random_features(path: Path, rows: int, dim: int, seed: int) -> None:
    from diffattr.features import write_features

    attrs = {
        "proj_kind": "normal",
        "proj_seed": 42,
        "proj_dim": dim,
        "output_fn": "square",
        "timesteps": list(range(0, 1000, 100)),
        "noise_seed": 0,
        "noise": "common",
        "noise_batch_size": 0,
        "noise_shard_rows": 0,
        "model_digest": "benchmark",
        "split": "benchmark",
    }
    features = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    write_features(path, features, np.arange(rows), attrs)


def bench_memory(settings: Settings) -> list[Comparison]:
    limit_gb = 2.0
    n_train, dim, n_test = (4000, 512, 200) if settings.quick else (50_000, 4096, 1000)
    lambdas = [1.0, 1000.0]
    log(
        f"memory: write_trak_scores in a subprocess, N = {n_train}, Z = {dim}, n = {n_test}, "
        f"{len(lambdas)} λ values (memory holds one λ block at a time)"
    )
    with tempfile.TemporaryDirectory(prefix="diffattr-bench-") as tmp:
        tmp_path = Path(tmp)
        write_random_features(tmp_path / "train.h5", n_train, dim, 0)
        write_random_features(tmp_path / "test.h5", n_test, dim, 1)
        command = [
            sys.executable,
            "-c",
            MEMORY_CHILD,
            str(tmp_path / "train.h5"),
            str(tmp_path / "test.h5"),
            str(tmp_path / "scores.h5"),
            json.dumps(lambdas),
        ]
        seconds, done = timed(
            lambda: subprocess.run(
                command, capture_output=True, text=True, env=thread_env(settings.threads)
            ),
            torch.device("cpu"),
        )
        if done.returncode != 0:
            raise RuntimeError(f"the scoring subprocess failed:\n{done.stderr}")
        peak_gb = json.loads(done.stdout.strip().splitlines()[-1])["peak_kb"] / 2**20
        input_gb = (n_train + n_test) * dim * 4 / 2**30
        output_gb = (tmp_path / "scores.h5").stat().st_size / 2**30
    log(
        f"  peak RSS {peak_gb:.2f} GB in {seconds:.0f} s; feature files {input_gb:.2f} GB, "
        f"score file {output_gb:.2f} GB"
    )
    return [
        Comparison(
            "memory",
            peak_gb,
            limit_gb,
            "GB",
            target="peak RSS below 2 GB (the baseline column is that limit)",
            met=peak_gb < limit_gb,
            details={
                "baseline_kind": "limit",
                "n_train": n_train,
                "proj_dim": dim,
                "n_test": n_test,
                "lambdas": lambdas,
                "seconds": seconds,
                "feature_files_gb": input_gb,
                "score_file_gb": output_gb,
            },
        )
    ]


# --------------------------------------------------------------------------- 5. training


def baseline_training(
    images: torch.Tensor, config: dict[str, Any], steps: int, device: torch.device
) -> None:
    """A plain diffusers loop (as in diffusers' train_unconditional.py): the same UNet,
    AdamW, cosine schedule with warm-up, gradient clipping, batch size and flips."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup

    from diffattr.models import build_unet

    training = config["training"]
    torch.manual_seed(0)
    model = build_unet(config["model"]["unet"], config["model"]["dropout"]).to(device).train()
    scheduler = DDPMScheduler(**config["scheduler"])
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=training["lr"],
        betas=(training["adam_beta1"], training["adam_beta2"]),
        weight_decay=training["weight_decay"],
        eps=training["adam_eps"],
    )
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    batch = training["batch_size"]
    for _ in range(steps):
        x0 = images[torch.randint(0, len(images), (batch,))]
        x0 = torch.where(torch.rand(batch, 1, 1, 1) < 0.5, x0.flip(-1), x0).to(device)
        noise = torch.randn_like(x0)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=device)
        noisy = scheduler.add_noise(x0, noise, timesteps)
        loss = torch.nn.functional.mse_loss(model(noisy, timesteps).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), training["max_grad_norm"])
        optimizer.step()
        lr_schedule.step()


def stacked_training(
    images: torch.Tensor, config: dict[str, Any], steps: int, models: int, device: torch.device
) -> None:
    """Exploratory: ``models`` UNets trained at once, parameters stacked with ``torch.func``
    (``vmap(grad)`` over the model axis, each model its own batch), one AdamW over the stacks,
    per-model gradient clipping. Not a pipeline path; measured to see whether one would pay."""
    import copy

    from diffusers import DDPMScheduler
    from torch.func import functional_call, grad, stack_module_state, vmap

    from diffattr.features import vmap_safe_attention
    from diffattr.models import build_unet

    training = config["training"]
    torch.manual_seed(0)
    unets = [
        build_unet(config["model"]["unet"], config["model"]["dropout"]).to(device).train()
        for _ in range(models)
    ]
    params, buffers = stack_module_state(unets)
    skeleton = copy.deepcopy(unets[0]).to("meta")
    scheduler = DDPMScheduler(**config["scheduler"])
    optimizer = torch.optim.AdamW(
        list(params.values()),
        lr=training["lr"],
        betas=(training["adam_beta1"], training["adam_beta2"]),
        weight_decay=training["weight_decay"],
        eps=training["adam_eps"],
    )

    def loss_fn(p, b, noisy, noise, timesteps):
        prediction = functional_call(skeleton, (p, b), (noisy, timesteps)).sample
        return torch.nn.functional.mse_loss(prediction, noise)

    per_model_grad = vmap(grad(loss_fn), randomness="different")
    batch = training["batch_size"]

    def stacked_step() -> None:
        x0 = images[torch.randint(0, len(images), (models, batch))].to(device)
        noise = torch.randn_like(x0)
        timesteps = torch.randint(0, 1000, (models, batch), device=device)
        noisy = scheduler.add_noise(x0.flatten(0, 1), noise.flatten(0, 1), timesteps.flatten())
        grads = per_model_grad(params, buffers, noisy.view_as(x0), noise, timesteps)
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads.values()]).sum(0).sqrt()
        scale = (training["max_grad_norm"] / (norms + 1e-6)).clamp(max=1.0)
        for name, value in params.items():
            value.grad = grads[name] * scale.view(-1, *[1] * (value.ndim - 1))
        optimizer.step()

    with vmap_safe_attention(skeleton):
        for _ in range(steps):
            stacked_step()


def bench_training(settings: Settings) -> list[Comparison]:
    from diffattr.training import TrainingRun, TrainingSettings, train_model

    config = demo_config()
    steps = 3 if settings.quick else 200 if settings.device.type == "cuda" else 20
    batch = config["training"]["batch_size"]
    images = torch.rand(600, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    keys = ("lr", "adam_beta1", "adam_beta2", "weight_decay", "adam_eps", "max_grad_norm")
    training = TrainingSettings(
        epochs=math.ceil(steps * batch / len(images)) + 1,
        batch_size=batch,
        **{key: config["training"][key] for key in keys},
        device=str(settings.device),
        checkpoint_every=0,  # no resume checkpoints in the timing
    )
    log(f"training: demo UNet, batch {batch}, {steps} steps")

    def ours() -> None:
        with tempfile.TemporaryDirectory(prefix="diffattr-bench-") as tmp:
            train_model(
                images.numpy(),
                training,
                config["model"]["unet"],
                config["scheduler"],
                TrainingRun(Path(tmp) / "model", Path(tmp) / "checkpoints", stop_after=steps),
                config["model"]["dropout"],
            )

    stack = 4
    runs = best_of(
        {
            "baseline": lambda: baseline_training(images, config, steps, settings.device),
            "ours": ours,
            "stacked": lambda: stacked_training(images, config, steps, stack, settings.device),
        },
        1 if settings.quick else 2,
        settings.device,
    )
    images_per_run = {
        "baseline": steps * batch,
        "ours": steps * batch,
        "stacked": stack * steps * batch,
    }
    per_image = {name: 1e3 * runs[name][0] / images_per_run[name] for name in runs}
    log(
        "  "
        + ", ".join(f"{name} {1e3 / per_image[name]:.0f} images/s" for name in per_image)
        + f" (stacked: {stack} models at once)"
    )
    return [
        Comparison(
            "training",
            per_image["ours"],
            per_image["baseline"],
            "ms/image",
            details={
                "steps": steps,
                "batch_size": batch,
                "ours_images_per_s": 1e3 / per_image["ours"],
                "baseline_images_per_s": 1e3 / per_image["baseline"],
            },
        ),
        Comparison(
            f"training_stacked{stack}",
            per_image["stacked"],
            per_image["baseline"],
            "ms/image",
            details={
                "models_at_once": stack,
                "steps": steps,
                "batch_size_per_model": batch,
                "stacked_images_per_s": 1e3 / per_image["stacked"],
                "baseline_images_per_s": 1e3 / per_image["baseline"],
                "note": "exploratory torch.func stacking (benchmark code, not a pipeline path); "
                "the baseline is the plain loop, one model after another",
            },
        ),
    ]


# --------------------------------------------------------------------------- job start-up

# What a training / sampling / measurement / feature job imports (ours), and the same modules
# behind `from diffusers import ...` of the whole library (baseline), each in a fresh process.
STARTUP_JOBS = "import diffattr.jobs.common, diffattr.jobs.train, diffattr.jobs.generate, " \
    "diffattr.jobs.measure, diffattr.jobs.features"  # fmt: skip
STARTUP_OURS = STARTUP_JOBS + ", diffattr.models, diffattr.training, diffattr.sampling, " \
    "diffattr.measure, diffattr.features"  # fmt: skip
STARTUP_BASELINE = STARTUP_JOBS + ", torch; " \
    "from diffusers import UNet2DModel, DDPMScheduler, DDIMScheduler, DDPMPipeline; " \
    "from diffusers.optimization import get_cosine_schedule_with_warmup; " \
    "import diffattr.models, diffattr.training, diffattr.sampling, diffattr.measure, " \
    "diffattr.features"  # fmt: skip


# A job's first steps after its imports: build the demo UNet, move it, save the model, load it
# again and derive the sampler's DDIM schedule: through the pipeline's helpers (ours), and
# through diffusers' own calls (baseline: ModelMixin.to, save_pretrained, from_pretrained,
# from_config), which import diffusers.hooks (peft, torch._dynamo) and every scheduler.
ROUND_TRIP_UNET = (
    '{"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [32, 64], '
    '"layers_per_block": 1, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], '
    '"up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}'
)
STARTUP_ROUND_TRIP_OURS = STARTUP_OURS + "; import json, tempfile, torch; " \
    "from diffattr.models import build_model, load_diffusion_model; " \
    "from diffattr.sampling import ddim_scheduler; d = tempfile.mkdtemp(); " \
    f"m = build_model({{'kind': 'unet', 'unet': json.loads('{ROUND_TRIP_UNET}')}}, {{}}, " \
    "torch.device('cpu')); m.save(d + '/m'); " \
    "ddim_scheduler(load_diffusion_model(d + '/m', 'cpu').scheduler)"  # fmt: skip
STARTUP_ROUND_TRIP_BASELINE = STARTUP_BASELINE + "; import json, tempfile, torch; " \
    "d = tempfile.mkdtemp(); " \
    f"u = UNet2DModel(**json.loads('{ROUND_TRIP_UNET}')).to('cpu'); " \
    "DDPMPipeline(unet=u, scheduler=DDPMScheduler()).save_pretrained(d); " \
    "UNet2DModel.from_pretrained(d + '/unet').to('cpu'); " \
    "DDIMScheduler.from_config(DDPMScheduler.from_pretrained(d + '/scheduler').config)"  # fmt: skip


def import_cpu_seconds(code: str) -> float:
    """CPU seconds (user + system) of a fresh interpreter that runs ``code``."""
    env = {**thread_env(1), "PYTHONPATH": str(ROOT / "src")}
    before = os.times()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    after = os.times()
    return (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )


def bench_startup(settings: Settings) -> list[Comparison]:
    """CPU cost of a torch job's imports: the lean diffusers path against the whole library."""
    repeats = 1 if settings.quick else 3
    ours = min(import_cpu_seconds(STARTUP_OURS) for _ in range(repeats))
    baseline = min(import_cpu_seconds(STARTUP_BASELINE) for _ in range(repeats))
    trip_ours = min(import_cpu_seconds(STARTUP_ROUND_TRIP_OURS) for _ in range(repeats))
    trip_baseline = min(import_cpu_seconds(STARTUP_ROUND_TRIP_BASELINE) for _ in range(repeats))
    return [
        Comparison(
            "job_startup",
            ours,
            baseline,
            "s CPU",
            details={"ours": STARTUP_OURS, "baseline": STARTUP_BASELINE, "repeats": repeats},
        ),
        Comparison(
            "job_startup_model_round_trip",
            trip_ours,
            trip_baseline,
            "s CPU",
            details={
                "ours": STARTUP_ROUND_TRIP_OURS,
                "baseline": STARTUP_ROUND_TRIP_BASELINE,
                "repeats": repeats,
            },
        ),
    ]


def _job_script_seconds(script: Path, env: dict[str, str], repeats: int) -> float:
    """Mean wall seconds of ``repeats`` runs of ``script`` as a one-thread job process."""
    started = time.perf_counter()
    for _ in range(repeats):
        subprocess.run([sys.executable, str(script)], check=True, env=env)
    return (time.perf_counter() - started) / repeats


def bench_job_server(settings: Settings) -> list[Comparison]:
    """Wall seconds of a torch job's start (imports, then the model round trip) as a fork of
    the job server (ours) and as a fresh process (baseline), one job after another."""
    from diffattr import job_server

    repeats = 2 if settings.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "job.py"
        script.write_text(
            "from types import SimpleNamespace\n"
            "from diffattr.jobs.common import delegate_to_job_server\n"
            "delegate_to_job_server(SimpleNamespace(threads=1))\n"
            + STARTUP_ROUND_TRIP_OURS.replace("; ", "\n")
            + "\n"
        )
        env = {**thread_env(1), "PYTHONPATH": str(ROOT / "src")}  # thread_env copies os.environ
        env.pop(job_server.SOCKET_ENV, None)
        baseline = _job_script_seconds(script, env, repeats)
        os.environ[job_server.ENABLE_ENV] = "1"
        server = job_server.JobServer()
        try:
            if not server.start(Path(tmp) / "logs", local=True):
                raise RuntimeError("the job server did not start")
            served = {
                **env,
                **{k: os.environ[k] for k in (job_server.SOCKET_ENV, job_server.PREFIX_ENV)},
            }
            _job_script_seconds(script, served, 1)  # waits for the server's own imports
            ours = _job_script_seconds(script, served, repeats)
        finally:
            server.stop()
            os.environ.pop(job_server.ENABLE_ENV, None)
    return [
        Comparison(
            "job_server_start",
            ours,
            baseline,
            "s wall",
            details={"job": STARTUP_ROUND_TRIP_OURS, "repeats": repeats},
        )
    ]


# --------------------------------------------------------------------------- driver

BENCHMARKS: dict[str, Callable[[Settings], list[Comparison]]] = {
    "features": bench_features,
    "paper_features": bench_paper_features,
    "scores": bench_scores,
    "lds": bench_lds,
    "memory": bench_memory,
    "training": bench_training,
    "startup": bench_startup,
    "job_server": bench_job_server,
}


THREADS_ENV = "DIFFATTR_BENCH_THREADS"


def thread_env(threads: int) -> dict[str, str]:
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", THREADS_ENV)
    return {**os.environ, **dict.fromkeys(names, str(threads))}


@contextlib.contextmanager
def thread_limits(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(previous)


def machine(settings: Settings) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": settings.threads,
        "device": str(settings.device),
    }
    with contextlib.suppress(OSError):
        info["load_average"] = os.getloadavg()
    if settings.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(settings.device)
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch and BLAS, the same for ours and the baseline (default 1: "
        "on a shared machine more threads make timings erratic)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (features, training)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get(THREADS_ENV) != str(args.threads):
        # BLAS and OpenMP read their thread counts at start-up; limiting them afterwards leaves
        # some pools at full width, so restart with the environment set.
        arguments = sys.argv[1:] if argv is None else argv
        os.execve(sys.executable, [sys.executable, __file__, *arguments], thread_env(args.threads))
    names = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but torch sees no CUDA device")
    settings = Settings(quick=args.quick, device=device, threads=args.threads)
    results: list[Comparison] = []
    started = time.perf_counter()
    with thread_limits(args.threads):
        for name in names:
            begin = time.perf_counter()
            for comparison in BENCHMARKS[name](settings):
                print(comparison.line(), flush=True)
                results.append(comparison)
            log(f"  ({name} took {time.perf_counter() - begin:.0f} s)")
    report = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "machine": machine(settings),
        "total_seconds": time.perf_counter() - started,
        "results": [{**asdict(c), "ratio": c.ratio, "line": c.line()} for c in results],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    missed = [c.name for c in results if c.met is False]
    log(f"wrote {args.out}; targets missed: {', '.join(missed) if missed else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
