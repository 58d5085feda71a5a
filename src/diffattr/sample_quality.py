"""Are the generated samples recognisable, and are they copies? (the sample-quality figure)

Two small scikit-learn classifiers, fitted on the real training images, judge each image: an
RBF support-vector machine with calibrated probabilities, and a vote of the 10 nearest training
images in pixel space. An image counts as *recognised* when both name the same class, each with
probability at least ``threshold`` (0.8); its confidence is the smaller of the two probabilities
(0 when they disagree). The same fraction on real val images is the yardstick. Why two: each
alone is fooled by images no person reads as a digit — on the old 400-step demo model's samples
(noisy blobs) the SVM alone "recognised" 62 %, the neighbour vote alone 36 %, both together
17 %; on uniform noise 63 %, 19 % and 4 %; on real val images 85 %, 89 % and 79 %.
Each image's distance to its nearest training image (RMS over pixels
in [0, 1]) shows whether samples are copies of training images: a copy sits at 0, a real val
image at the typical distance of a new digit.

The classifier's labels of the generated samples are also the "class" of a gen query in the
attribution sanity figure (:mod:`diffattr.attribution_sanity`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from diffattr import store
from diffattr.errors import ConfigError
from diffattr.images import channels_last, to_rgb

THRESHOLD = 0.8
NEIGHBOURS = 10
CLASSIFIER = (
    f"CalibratedClassifierCV(SVC(rbf), ensemble=False) and KNeighborsClassifier({NEIGHBOURS}) "
    "on flattened pixels; recognised = same label, both probabilities >= threshold"
)


def _flat(images: np.ndarray) -> np.ndarray:
    array = np.asarray(images, dtype=np.float64)
    if array.ndim != 4:
        raise ConfigError(f"expected images [n, C, H, W], got shape {array.shape}")
    return array.reshape(len(array), -1)


def fit_classifier(images: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]:
    """The two digit classifiers, fitted on ``images`` [n, C, H, W] in [-1, 1] and labels."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ConfigError("the sample-quality classifier needs at least two classes")
    if np.bincount(np.unique(labels, return_inverse=True)[1]).min() < 3 or len(labels) < 30:
        raise ConfigError(
            f"{len(labels)} training images; the sample-quality classifier needs at least 30 "
            "and 3 of every class"
        )
    flat = _flat(images)
    svm = CalibratedClassifierCV(SVC(kernel="rbf"), ensemble=False, cv=3).fit(flat, labels)
    neighbours = KNeighborsClassifier(NEIGHBOURS).fit(flat, labels)
    return svm, neighbours


def classify(classifier: tuple[Any, Any], images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, confidence) of each image: the SVM's label, and the smaller of the two
    classifiers' probabilities for it when they agree on it (0 when they disagree)."""
    flat = _flat(images)
    probabilities = [model.predict_proba(flat) for model in classifier]
    rows = np.arange(len(flat))
    best = [p.argmax(axis=1) for p in probabilities]
    labels = [model.classes_[b] for model, b in zip(classifier, best, strict=True)]
    agree = labels[0] == labels[1]
    confidence = np.minimum(probabilities[0][rows, best[0]], probabilities[1][rows, best[1]])
    return labels[0].astype(np.int64), np.where(agree, confidence, 0.0)


def nearest_distances(queries: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RMS pixel distance in [0, 1] units, row of the nearest training image) of each query."""
    q, t = _flat(queries) / 2.0, _flat(train) / 2.0  # [-1, 1] -> unit range
    squared = (q * q).sum(1)[:, None] - 2.0 * q @ t.T + (t * t).sum(1)[None, :]
    nearest = squared.argmin(axis=1)
    best = np.maximum(squared[np.arange(len(q)), nearest], 0.0)
    return np.sqrt(best / q.shape[1]), nearest.astype(np.int64)


def quality_record(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    gen_images: np.ndarray,
    threshold: float = THRESHOLD,
) -> dict[str, Any]:
    """Classifier scores and nearest-training distances of the gen samples and the val images."""
    if not 0 < threshold < 1:
        raise ConfigError(f"confidence threshold = {threshold}; expected a value in (0, 1)")
    classifier = fit_classifier(train_images, train_labels)
    record: dict[str, Any] = {"classifier": CLASSIFIER, "threshold": threshold}
    for split, images in (("gen", gen_images), ("val", val_images)):
        labels, confidence = classify(classifier, images)
        distance, nearest = nearest_distances(images, train_images)
        record[split] = {
            "n": len(images),
            "recognised_fraction": float((confidence >= threshold).mean()),
            "median_confidence": float(np.median(confidence)),
            "labels": labels.tolist(),
            "confidence": np.round(confidence, 4).tolist(),
            "nearest_distance": np.round(distance, 4).tolist(),
            "nearest_row": nearest.tolist(),
            "median_nearest_distance": float(np.median(distance)),
        }
    record["val"]["accuracy"] = float(np.mean(np.asarray(record["val"]["labels"]) == val_labels))
    return record


def plot_quality(record: dict[str, Any], out_path: str | os.PathLike) -> None:
    """Two panels: classifier confidence, and distance to the nearest training image."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 3.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    threshold = record["threshold"]
    styles = {"gen": ("tab:blue", "generated"), "val": ("tab:gray", "real val")}
    bins = np.linspace(0, 1, 21)
    for split, (color, name) in styles.items():
        part = record[split]
        label = f"{name}: {100 * part['recognised_fraction']:.0f}% ≥ {threshold:g}"
        left.hist(part["confidence"], bins=bins, color=color, alpha=0.55, label=label)
    left.set_xlabel(
        "confidence: min(SVM, 10-neighbour) probability, 0 if they disagree", fontsize=8
    )
    left.axvline(threshold, color="black", linestyle="--", linewidth=1)
    left.set_ylabel("images")
    left.set_title("are the samples recognisable digits?", fontsize=9)
    left.legend(fontsize=7, loc="upper left")
    top = max(max(record[s]["nearest_distance"]) for s in styles) * 1.05 or 1.0
    bins = np.linspace(0, top, 21)
    for split, (color, name) in styles.items():
        part = record[split]
        label = f"{name}: median {part['median_nearest_distance']:.3f}"
        right.hist(part["nearest_distance"], bins=bins, color=color, alpha=0.55, label=label)
    right.set_xlabel("RMS distance to the nearest training image (0 = a copy)", fontsize=8)
    right.set_title("are the samples copies?", fontsize=9)
    right.legend(fontsize=7, loc="upper left")
    save_png_figure(figure, out_path)


def save_png_figure(figure: Any, out_path: str | os.PathLike, dpi: int = 120) -> None:
    """Write a matplotlib figure as a PNG, atomically."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    with store.atomic_path(out_path, suffix=".png") as tmp:
        tmp.write_bytes(buffer.getvalue())


def sample_sheet(
    generated: np.ndarray,
    real: np.ndarray | None = None,
    columns: int = 10,
    cell: int = 40,
    gap: int = 6,
) -> np.ndarray:
    """A readable picture of samples: a grid of ``generated`` images [n, C, H, W] in [-1, 1],
    each enlarged to ``cell`` pixels with ``gap`` pixels between them, and, when ``real`` is
    given, a grid of as many real images beside it for comparison. Returns uint8 [H, W, 3]."""
    from PIL import Image, ImageDraw, ImageFont

    if columns < 1 or cell < 1 or gap < 0:
        raise ConfigError(f"columns = {columns}, cell = {cell}, gap = {gap}: need positive sizes")

    def grid(images: np.ndarray) -> Image.Image:
        images = np.asarray(images, dtype=np.float32)
        rows = -(-len(images) // columns)
        side = gap + columns * (cell + gap), gap + rows * (cell + gap)
        canvas = Image.new("RGB", side, (255, 255, 255))
        for i, array in enumerate(to_rgb(channels_last(images))):
            tile = Image.fromarray(array).resize((cell, cell), Image.NEAREST)
            r, c = divmod(i, columns)
            canvas.paste(tile, (gap + c * (cell + gap), gap + r * (cell + gap)))
        return canvas

    panels = [("generated samples", grid(generated))]
    if real is not None and len(real):
        panels.append(("real training images", grid(real)))
    font = ImageFont.load_default(size=16)
    header, margin = 26, 24
    width = sum(p.width for _, p in panels) + margin * (len(panels) - 1)
    height = header + max(p.height for _, p in panels)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x = 0
    for title, panel in panels:
        draw.text((x + gap, 4), title, fill=(0, 0, 0), font=font)
        sheet.paste(panel, (x, header))
        x += panel.width + margin
    return np.asarray(sheet)


def real_examples(dataset_path: str, count: int) -> np.ndarray:
    """``count`` train images spread evenly over the train split (for comparison sheets)."""
    from diffattr import data

    train = data.load_split(dataset_path, "train")
    rows = np.unique(np.linspace(0, len(train) - 1, min(count, len(train))).round().astype(int))
    return train.images[rows]
