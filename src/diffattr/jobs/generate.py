"""Job of ``rules/generate.smk``: the main model's generated samples and their contact sheet."""

from __future__ import annotations

from diffattr import data, store
from diffattr.errors import ConfigError
from diffattr.files import write_samples
from diffattr.images import save_png
from diffattr.progress import status
from diffattr.settings import GenerationSettings, Runtime


def generate_samples(
    model_dir: str,
    dataset_path: str | None,
    out_path: str,
    grid_path: str,
    *,
    settings: GenerationSettings,
    runtime: Runtime,
) -> None:
    """Seeded DDIM samples of the main model; a conditional model gets one prompt per sample.

    Prompts are ``settings.prompts`` in contiguous blocks, or by default (None) the dataset's
    class captions (in label order) in blocks; each sample's prompt is stored in the
    ``prompts`` dataset. ``dataset_path`` (may be None) also gives the contact sheet its real
    examples.
    """
    from diffattr.models import load_diffusion_model, resolve_device
    from diffattr.sample_quality import real_examples, sample_sheet
    from diffattr.sampling import DdimSettings, assign_prompts, generate, sample_seeds

    s = settings
    num_samples, steps, eta, seed = s.num_samples, s.steps, s.eta, s.seed
    batch_size, grid_columns, guidance_scale = runtime.batch_size, s.grid_columns, s.guidance_scale
    ddim = DdimSettings(steps=steps, eta=eta, guidance_scale=guidance_scale, batch_size=batch_size)
    prompts = None if settings.prompts is None else list(settings.prompts)
    model = load_diffusion_model(model_dir, resolve_device(runtime.device))
    seeds = sample_seeds(num_samples, seed)
    per_sample = None
    if model.conditional:
        if prompts is None:
            if dataset_path is None:
                raise ConfigError(
                    "generation.prompts is null, so prompts come from the class captions, "
                    "but no dataset file was given"
                )
            prompts = class_captions(dataset_path)
        per_sample = assign_prompts(num_samples, prompts)
    result = generate(model, seeds, ddim, per_sample, progress=runtime.progress)
    attrs = {
        "split": "gen",
        "model_digest": store.digest_directory(model_dir),
        "model_kind": model.kind,
        "steps": steps,
        "eta": eta,
        "gen_seed": seed,
        "sampler": "ddim",
        "batch_size": batch_size,  # on CPU the batch layout fixes the last bits (regeneration)
    }
    if per_sample is not None:
        attrs["guidance_scale"] = guidance_scale
    write_samples(out_path, result["images"], seeds, per_sample, attrs)
    shown = result["images"][: grid_columns * grid_columns]
    real = real_examples(dataset_path, len(shown)) if dataset_path is not None else None
    save_png(grid_path, sample_sheet(shown, real, grid_columns), scale=1)
    status("%d samples, %d DDIM steps", num_samples, steps)


def class_captions(dataset_path: str) -> list[str]:
    """The caption of each class of the train split, in label order."""
    train = data.load_split(dataset_path, "train", images=False)
    if train.captions is None:
        raise ConfigError(
            f"{dataset_path}: the train split has no captions to use as prompts; set "
            "generation.prompts, or data.caption_template and rebuild the dataset"
        )
    labels, captions = train.labels, train.captions
    by_label: dict[int, str] = {}
    for label, caption in zip(labels.tolist(), captions, strict=True):
        by_label.setdefault(int(label), caption)
    return [by_label[label] for label in sorted(by_label)]
