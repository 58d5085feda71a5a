"""A second image domain that ships with scikit-learn: grayscale patches of its two photographs.

    python tools/make_patches.py [--out data/patches-8x8.npz] [--count 1000] [--seed 0]

scikit-learn bundles two photographs (`load_sample_images`: china.jpg, a temple roof and trees;
flower.jpg, a flower on leaves). This draws ``count`` patches of 24 × 24 pixels at seeded random
positions, half from each, converts them to grayscale (ITU-R 601 luma) and averages 3 × 3 blocks
to 8 × 8: natural-image texture and edges at the digits demo's size, where the digits are pen
strokes on a blank field. The label is the photograph (0 china, 1 flower). The result is an
``npz`` source (``images`` [n, 8, 8] uint8, ``labels``, ``class_names``) for
``experiments/patches.yaml``, which measures settings chosen on digits on another domain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PATCH = 24
SIZE = 8


def make_patches(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """([count, 8, 8] uint8 patches, [count] labels), a pure function of (count, seed)."""
    from sklearn.datasets import load_sample_images

    luma = np.array([0.299, 0.587, 0.114])
    grays = [photo.astype(np.float64) @ luma for photo in load_sample_images().images]
    rng = np.random.default_rng(seed)
    factor = PATCH // SIZE
    images, labels = [], []
    for index in range(count):
        which = index % len(grays)
        gray = grays[which]
        top = rng.integers(0, gray.shape[0] - PATCH + 1)
        left = rng.integers(0, gray.shape[1] - PATCH + 1)
        patch = gray[top : top + PATCH, left : left + PATCH]
        small = patch.reshape(SIZE, factor, SIZE, factor).mean(axis=(1, 3))
        images.append(np.clip(np.round(small), 0, 255).astype(np.uint8))
        labels.append(which)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/patches-8x8.npz"))
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.count < 2:
        raise SystemExit(f"--count {args.count}: need at least 2 patches (one per photograph)")
    images, labels = make_patches(args.count, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial.npz")
    np.savez(partial, images=images, labels=labels, class_names=np.array(["china", "flower"]))
    partial.replace(args.out)
    print(f"{args.out}: {len(images)} patches {images.shape[1:]}, labels {np.bincount(labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
