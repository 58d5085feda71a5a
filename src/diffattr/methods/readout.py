"""Score readouts and per-training-row weights applied to a finished score grid.

``readout`` (a param of every TRAK-kernel kind and of ``das``):

* ``signed`` (default): τ as computed; τ > 0 means row i supports the query.
* ``squared``: τ², the readout DAS's code reports (``DAS1squ``) and SNR-LDS studies. It keeps
  only the magnitude: a strong opponent and a strong proponent get the same score. The LDS sums
  τ² over a subset, so it rewards a method whose large-|τ| rows coincide with the rows whose
  removal moves the output most, in either direction; a higher LDS from τ² therefore says the
  magnitudes are better ranked, not that the attribution (who helps, who hurts) is better, and it
  cannot be compared with a signed row (docs/methods.md, "Readouts").

Both readouts are labelled in the score file (``readout`` attr), the LDS record and the summary
table, so a squared score is never silently set beside a signed one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.errors import FeatureMismatchError
from diffattr.files import ScoreFile, score_writer
from diffattr.methods.base import Param, one_of

READOUTS = ("signed", "squared")

READOUT_PARAM = Param(
    "Score readout: signed τ, or squared τ² (DAS's DAS1squ; not comparable with signed rows).",
    default="signed",
    check=one_of(*READOUTS),
)


def apply_readout(scores: np.ndarray, readout: str) -> np.ndarray:
    """τ (``signed``) or τ² (``squared``), elementwise."""
    if readout == "signed":
        return scores
    if readout == "squared":
        return np.square(scores)
    raise FeatureMismatchError(f"unknown readout {readout!r}; valid: {list(READOUTS)}")


def transform_score_file(
    raw_path: str | os.PathLike,
    out_path: str | os.PathLike,
    readout: str,
    column_weights: np.ndarray | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Copy a score file, each λ's [n, N] block as readout(τ · diag(w)), with ``readout`` stamped.

    ``column_weights`` [N] (or None) multiplies column i (training row i) before the readout, as
    DAS's residual weight does (τ · w_i, then squared for ``squared``).
    """
    with ScoreFile(raw_path) as source:
        attrs = {**source.attrs, **(extra_attrs or {}), "readout": readout}
        shape = source.shape
        if column_weights is not None:
            column_weights = np.asarray(column_weights, dtype=np.float64).reshape(-1)
            if column_weights.shape != (shape[2],):
                raise FeatureMismatchError(
                    f"{raw_path}: {column_weights.shape[0]} column weights for "
                    f"{shape[2]} training rows"
                )
        with score_writer(
            out_path, attrs, source.lambdas, source.train_ids, source.test_ids
        ) as handle:
            out = handle.create_dataset(
                "scores", shape=shape, dtype=np.float32, chunks=(1, *shape[1:])
            )
            for index in range(shape[0]):
                block = source.read(index).astype(np.float64)
                if column_weights is not None:
                    block *= column_weights[None, :]
                out[index] = apply_readout(block, readout).astype(np.float32)
    return Path(out_path)


def raw_path_for(out_path: str | os.PathLike) -> Path:
    """Where a method writes its untransformed scores before :func:`transform_score_file`."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.stem}.raw.h5")
