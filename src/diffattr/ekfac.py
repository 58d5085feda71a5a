"""EK-FAC influence (Mlodozeniec et al., ICLR 2025) through kronfluence (pomonam/kronfluence).

The diffusion task (:class:`DiffusionTask`) gives kronfluence

* the training loss of an image: (1/K) Σ_t mean over pixels of (ε_θ(x_t, t) − ε_t)², at the
  pipeline's timesteps with the feature stage's recorded noise (:func:`diffattr.features._noisy_samples`);
  for the factors each (image, timestep) pair is one example (the Fisher/GGN is a sum over
  (x, t, ε) terms), with the target drawn from the model's own predictive, ε̂ + N(0, I), seeded
  per (image, t) (kronfluence's ``sample=True``, an MC-Fisher with one sample as in the paper);
* the measurement of a query: the same loss at the scored K timesteps (what TRAK's ``loss``
  feature differentiates).

Covered layers: kronfluence tracks ``nn.Linear`` and ``nn.Conv2d`` (weights and biases), which
hold all but the normalisation parameters of a diffusers UNet (and every LoRA adapter of an
SD-LoRA model). ``GroupNorm``/``LayerNorm`` affine parameters (and any other module type) are
**left out** of the influence: their gradient is ignored; the factor file records their names
and parameter count (``uncovered``). Only modules whose parameters are trainable are tracked
(the LoRA adapters of an ``sd_lora`` model).

Factors are fitted once per model (:func:`diffattr.jobs.residuals.fit_ekfac_factors`,
``ekfac/main/T{T}-{strategy}/``); the scores (:func:`influence_scores`, for a query split
:func:`diffattr.methods.ekfac.influence_scores_of_split`) are computed for a damping grid, one
kronfluence pass per damping, and the damping is chosen on the held-out subsets like λ.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffattr.errors import ConfigError, CorruptFileError

STRATEGIES = ("ekfac", "kfac", "diagonal", "identity")
#: Names of the factors directory and its provenance file.
FACTORS_NAME = "factors"
PROVENANCE = "provenance.json"
#: Noise purpose of the sampled targets of the MC-Fisher.
FISHER_PURPOSE = "ekfac-fisher"


@dataclass(frozen=True)
class DiffusionLoss:
    """The loss kronfluence differentiates (see the module docstring) and how it batches it.

    ``scheduler``'s noising with the feature noise of ``noise_seed`` (each row's key from its
    :class:`SampleDataset`) at ``timesteps``: a measurement's scored timesteps (the factor fit's
    rows carry their own timestep and do not use them); ``batch_size`` examples per kronfluence
    batch."""

    scheduler: Any
    noise_seed: int
    batch_size: int
    timesteps: Sequence[int] = ()

    def __post_init__(self) -> None:
        for name, minimum in (("noise_seed", None), ("batch_size", 1)):
            value = getattr(self, name)
            if not _is_int(value) or (minimum is not None and value < minimum):
                bound = "" if minimum is None else f" >= {minimum}"
                raise ConfigError(
                    f"DiffusionLoss.{name} = {value!r} is not valid; expected an integer{bound}"
                )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _kronfluence():
    try:
        import kronfluence  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "the ekfac method needs kronfluence: pip install '.[ekfac]' "
            "(kronfluence 1.0.1 installed with --no-deps, see docs/methods.md)"
        ) from error
    from kronfluence.task import Task

    return Task


def tracked_modules(model: nn.Module) -> tuple[list[str], dict[str, int]]:
    """(names of the Linear/Conv2d modules with trainable parameters, {uncovered parameter: size})."""
    names, covered = [], set()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):
            names.append(name)
            covered.update(f"{name}.{p}" for p, _ in module.named_parameters(recurse=False))
    uncovered = {
        name: p.numel()
        for name, p in model.named_parameters()
        if p.requires_grad and name not in covered
    }
    return names, uncovered


def make_task(scheduler: Any, timesteps: Sequence[int], noise_seed: int, modules: list[str]):
    """A kronfluence Task for the diffusion loss (see the module docstring)."""
    Task = _kronfluence()

    class DiffusionTask(Task):
        # kronfluence 1.0.1's fast train-side path (no post-processing) overwrites the score of
        # a module called more than once per example (our K timesteps) instead of adding, and
        # clears the cached activations after the first call; the post-processing path adds.
        # An identity post-process routes the scores through it (tests/test_ekfac.py).
        enable_post_process_per_sample_gradient = True

        def post_process_per_sample_gradient(self, module_name: str, gradient: torch.Tensor):
            return gradient

        def _loss(self, batch: dict, model: nn.Module, sample: bool) -> torch.Tensor:
            from diffattr.noise import sample_noise

            x0 = batch["x0"]
            ids = batch["key"].cpu().numpy().view(np.uint64)  # the rows' feature-noise keys
            cond = batch.get("cond")
            kwargs = {} if cond is None else {"encoder_hidden_states": cond}
            if "t" in batch:  # one (image, timestep) pair per row
                groups = [batch["t"].cpu().numpy().astype(int)]
            else:
                groups = [np.full(len(ids), t) for t in timesteps]
            total = 0.0
            for steps in groups:
                x_t, eps = _pair_noise(scheduler, x0, ids, steps, noise_seed)
                t_tensor = torch.as_tensor(steps, dtype=torch.long, device=x0.device)
                pred = model(x_t, t_tensor, **kwargs).sample
                if sample:
                    draw = torch.stack(
                        [
                            sample_noise(FISHER_PURPOSE, noise_seed, int(t), [i], x0.shape[1:])[0]
                            for i, t in zip(ids, steps, strict=True)
                        ]
                    ).to(pred)
                    target = pred.detach() + draw
                else:
                    target = eps
                total = total + (pred - target).pow(2).flatten(1).mean(dim=1).sum()
            return total / len(groups)

        def compute_train_loss(self, batch: Any, model: nn.Module, sample: bool = False):
            return self._loss(batch, model, sample)

        def compute_measurement(self, batch: Any, model: nn.Module) -> torch.Tensor:
            return self._loss(batch, model, False)

        def get_influence_tracked_modules(self) -> list[str]:
            return list(modules)

    return DiffusionTask()


def _pair_noise(
    scheduler: Any, x0: torch.Tensor, ids: np.ndarray, steps: np.ndarray, noise_seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t and ε for row b at timestep steps[b], with the feature stage's noise rule."""
    from diffattr.features import _noisy_samples

    rows_t = []
    for t in np.unique(steps):
        rows = np.flatnonzero(steps == t)
        x_t, eps = _noisy_samples(scheduler, x0[rows], ids[rows], [int(t)], noise_seed)
        rows_t.append((rows, x_t[:, 0], eps[:, 0]))
    x_out = torch.empty_like(x0)
    e_out = torch.empty_like(x0)
    for rows, x_t, eps in rows_t:
        index = torch.as_tensor(rows)
        x_out[index] = x_t
        e_out[index] = eps
    return x_out, e_out


class SampleDataset(torch.utils.data.Dataset):
    """Images (and conditions) as dict batches; with ``timesteps`` one row per (image, t)."""

    def __init__(
        self, x0, ids, cond=None, timesteps: Sequence[int] | None = None, noise_keys=None
    ) -> None:
        self.x0 = torch.as_tensor(np.asarray(x0))
        self.ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        keys = np.asarray(ids if noise_keys is None else noise_keys).astype(np.uint64)
        if keys.shape != (len(self.ids),):
            raise ConfigError(f"noise_keys must hold one key per row, got {keys.shape}")
        # uint64 keys travel as their int64 bit pattern (torch batches int64)
        self.keys = torch.as_tensor(keys.view(np.int64))
        self.cond = None if cond is None else torch.as_tensor(cond)
        self.timesteps = None if timesteps is None else [int(t) for t in timesteps]

    def __len__(self) -> int:
        return len(self.ids) * (1 if self.timesteps is None else len(self.timesteps))

    def __getitem__(self, index: int) -> dict:
        if self.timesteps is None:
            row, item = index, {}
        else:
            row, k = divmod(index, len(self.timesteps))
            item = {"t": torch.tensor(self.timesteps[k])}
        item.update(x0=self.x0[row], ids=self.ids[row], key=self.keys[row])
        if self.cond is not None:
            item["cond"] = self.cond[row]
        return item


def _analyzer(model: nn.Module, task: Any, output_dir: str):
    from kronfluence.analyzer import Analyzer, prepare_model

    model = prepare_model(model, task)
    cpu = next(model.parameters()).device.type == "cpu"
    return Analyzer("diffattr", model, task, cpu=cpu, disable_tqdm=True, output_dir=output_dir)


def fit_factors(
    model: nn.Module,
    loss: DiffusionLoss,
    dataset: SampleDataset,
    out_dir: str | os.PathLike,
    strategy: str,
    extra_provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit kronfluence factors of ``model`` under ``loss`` on ``dataset`` (pairs) into
    ``out_dir``; provenance.

    kronfluence's ``prepare_model`` wraps the tracked modules of ``model`` in place and freezes
    its parameters: pass a model that is not used afterwards."""
    from kronfluence.arguments import FactorArguments

    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown EK-FAC strategy {strategy!r}; valid: {list(STRATEGIES)}")
    modules, uncovered = tracked_modules(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not modules:
        raise ConfigError(f"{type(model).__name__} has no trainable Linear/Conv2d module")
    task = make_task(loss.scheduler, [], loss.noise_seed, modules)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".ekfac-") as tmp:
        analyzer = _analyzer(model, task, tmp)
        dtype = torch.float64 if _is64(model) else torch.float32
        args = FactorArguments(
            strategy=strategy,
            has_shared_parameters=True,  # scoring calls each module once per timestep
            activation_covariance_dtype=dtype,
            gradient_covariance_dtype=dtype,
            per_sample_gradient_dtype=dtype,
            lambda_dtype=dtype,
        )
        analyzer.fit_all_factors(
            FACTORS_NAME,
            dataset,
            per_device_batch_size=loss.batch_size,
            factor_args=args,
            dataloader_kwargs=_loader_kwargs(),
            overwrite_output_dir=True,
        )
        source = analyzer.factors_output_dir(FACTORS_NAME)
        staged = Path(tmp) / "out"
        shutil.move(str(source), staged)
        provenance = {
            "strategy": strategy,
            "noise_seed": int(loss.noise_seed),
            "tracked_modules": modules,
            "uncovered": uncovered,
            "uncovered_parameters": int(sum(uncovered.values())),
            "covered_parameters": int(trainable - sum(uncovered.values())),
            "peak_rss_mb": peak_rss_mb(),
            **(extra_provenance or {}),
        }
        (staged / PROVENANCE).write_text(json.dumps(provenance, indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staged, out_dir)
    return provenance


def _loader_kwargs():
    from kronfluence.utils.dataset import DataLoaderKwargs

    return DataLoaderKwargs(num_workers=0)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_provenance(factors_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(factors_dir) / PROVENANCE
    if not path.is_file():
        raise CorruptFileError(f"{factors_dir}: no {PROVENANCE}; refit the factors")
    return json.loads(path.read_text())


def influence_scores(
    model: nn.Module,
    loss: DiffusionLoss,
    factors_dir: str | os.PathLike,
    train: SampleDataset,
    queries: SampleDataset,
    dampings: Sequence[float | None],
) -> np.ndarray:
    """[L, n, N] kronfluence pairwise scores of ``loss`` (at ``loss.timesteps``), one pass per
    damping (None: its heuristic)."""
    from kronfluence.arguments import ScoreArguments

    provenance = read_provenance(factors_dir)
    task = make_task(loss.scheduler, loss.timesteps, loss.noise_seed, provenance["tracked_modules"])
    out = np.empty((len(dampings), len(queries), len(train)), dtype=np.float64)
    with tempfile.TemporaryDirectory(prefix="diffattr-ekfac-") as tmp:
        analyzer = _analyzer(model, task, tmp)
        link = analyzer.factors_output_dir(FACTORS_NAME)
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.symlink(Path(factors_dir).resolve(), link)
        for index, damping in enumerate(dampings):
            name = f"d{index}"
            analyzer.compute_pairwise_scores(
                name,
                FACTORS_NAME,
                queries,
                train,
                per_device_query_batch_size=loss.batch_size,
                per_device_train_batch_size=loss.batch_size,
                score_args=ScoreArguments(
                    damping_factor=None if damping is None else float(damping),
                    score_dtype=torch.float64 if _is64(model) else torch.float32,
                    per_sample_gradient_dtype=torch.float64 if _is64(model) else torch.float32,
                    precondition_dtype=torch.float64 if _is64(model) else torch.float32,
                ),
                dataloader_kwargs=_loader_kwargs(),
                overwrite_output_dir=True,
            )
            scores = analyzer.load_pairwise_scores(name)["all_modules"]
            out[index] = scores.double().cpu().numpy()
    return out


def _is64(model: nn.Module) -> bool:
    return next(model.parameters()).dtype == torch.float64


def _train_inputs(model: Any, dataset_path: str, batch_size: int):
    from diffattr.queries import load_queries, load_query_captions

    images, ids = load_queries("train", dataset_path, None)
    captions = load_query_captions("train", dataset_path, None) if model.conditional else None
    return _encode(model, images, ids, captions, batch_size)


def _encode(model: Any, images, ids, captions, batch_size: int):
    from diffattr.queries import encoded_queries

    parts, conds = [], []
    for _, x0, cond in encoded_queries(model, images, captions, batch_size):
        parts.append(np.asarray(x0))
        if cond is not None:
            conds.append(torch.as_tensor(cond).cpu())
    x0 = np.concatenate(parts, axis=0)
    cond = torch.cat(conds, dim=0) if conds else None
    return x0, np.asarray(ids, dtype=np.int64), cond
