"""diffattr.clip: the transformers CLIP of the CLIP methods and the counterfactual metric,
checked against CLIPModel.get_image_features on hand-made CLIP preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffattr import clip, store
from diffattr.errors import ConfigError
from tests.clip_fixture import IMAGE_SIZE, build_tiny_clip

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def reference_embeddings(folder, images: np.ndarray) -> np.ndarray:
    """Both towers loaded, CLIP preprocessing by hand: bicubic resize to the input size, [0, 1],
    CLIP mean/std; then CLIPModel.get_image_features."""
    from PIL import Image
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    pixels = ((np.clip(images, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    batch = []
    for image in pixels:
        rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
        pil = Image.fromarray(rgb.transpose(1, 2, 0)).resize(
            (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC
        )
        x = (np.asarray(pil, dtype=np.float64) / 255 - MEAN) / STD
        batch.append(x.transpose(2, 0, 1))
    with torch.no_grad():
        out = model.get_image_features(pixel_values=torch.tensor(np.stack(batch)).float())
    out = out if torch.is_tensor(out) else out.pooler_output
    return out.numpy()


def test_encoder_matches_clip_image_features(tiny_clip):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(5, 1, 8, 8))
    encoder = clip.ClipEncoder(str(tiny_clip), batch_size=2)
    embeddings = encoder(images)
    assert embeddings.shape == (5, 16) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, reference_embeddings(tiny_clip, images), atol=1e-4)
    rgb = rng.uniform(-1, 1, size=(2, 3, 8, 8))
    np.testing.assert_allclose(encoder(rgb), reference_embeddings(tiny_clip, rgb), atol=1e-4)
    assert "config.json" in " ".join(encoder.files())


def test_vision_only_checkpoint_without_processor(tmp_path):
    folder = build_tiny_clip(tmp_path / "vision", seed=1, vision_only=True)
    (folder / clip.PROCESSOR_FILE).unlink()  # the standard CLIP processor at the model's size
    images = np.random.default_rng(1).uniform(-1, 1, size=(3, 3, 32, 32))
    embeddings = clip.ClipEncoder(str(folder))(images)
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(folder).eval()
    pixels = ((np.clip(images, -1, 1) + 1) * 127.5).round() / 255
    x = (pixels.transpose(0, 2, 3, 1) - MEAN) / STD
    with torch.no_grad():
        direct = model(pixel_values=torch.tensor(x.transpose(0, 3, 1, 2)).float()).image_embeds
    np.testing.assert_allclose(embeddings, direct.numpy(), atol=1e-4)


def test_unavailable_reasons_say_how_to_fix(tmp_path, monkeypatch):
    assert "clip.weights is not set" in clip.unavailable_reason(None)
    assert "not a checkpoint folder" in clip.unavailable_reason(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "no config.json" in clip.unavailable_reason(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(clip, "_cached_config", lambda repo_id: None)
    assert "not in the local hub cache" in clip.unavailable_reason("openai/clip-vit-base-patch32")
    with pytest.raises(ConfigError, match="cannot load CLIP"):
        clip.ClipEncoder(str(tmp_path / "empty"))


def test_counterfactual_metric_uses_the_same_encoder(tiny_clip, tmp_path):
    from diffattr import counterfactual as cf
    from diffattr.jobs.counterfactual import compare_counterfactual
    from diffattr.settings import CounterfactualMetricSettings, Runtime

    rng = np.random.default_rng(2)
    images = rng.uniform(-1, 1, size=(4, 1, 8, 8)).astype(np.float32)
    encode = clip.ClipEncoder(str(tiny_clip))
    a, b = reference_embeddings(tiny_clip, images[[0, 1]]).astype(np.float64)
    direct = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cf.clip_cosine(images[0], images[1], encode) == pytest.approx(direct, abs=1e-5)

    samples = tmp_path / "gen.h5"
    store.write_h5(samples, {"images": images, "ids": np.arange(4)}, {})
    regenerated = tmp_path / "regen.h5"
    store.write_h5(regenerated, {"image": images[2]}, {"method": "m", "target": 1})
    record = compare_counterfactual(
        str(samples), str(regenerated), str(tmp_path / "m.json"),
        settings=CounterfactualMetricSettings(metrics=["l2", "clip"], clip_weights=str(tiny_clip)),
        runtime=Runtime(batch_size=1, device="cpu"),
    )  # fmt: skip
    a, b = reference_embeddings(tiny_clip, images[[1, 2]]).astype(np.float64)
    assert record["metrics"]["clip"] == pytest.approx(
        a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), abs=1e-5
    )
    assert "CLIPVisionModelWithProjection" in record["clip"]
