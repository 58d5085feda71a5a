"""Dataset sources, train/val splits and LDS subset pools.

* :mod:`.sources`    load the train / validation pools of a source (one module per source,
                     registered), class filter, captions
* :mod:`.preprocess` uint8 images to float32 [C, H, W] in [-1, 1]
* :mod:`.splits`     draw the splits and store them in one HDF5 file; read them back
* :mod:`.subsets`    alpha-subsets, membership masks and removal sets
"""

from diffattr.data.preprocess import preprocess_image, preprocess_images, to_uint8_hwc
from diffattr.data.sources import (
    DEFAULTS,
    SOURCES,
    ImagePool,
    LazyImages,
    SourcePools,
    filter_classes,
    load_source,
)
from diffattr.data.splits import SPLITS, Split, load_split, prepare_dataset, select_rows
from diffattr.data.subsets import (
    draw_subset,
    read_subset,
    removal_subset,
    subset_mask,
    subset_size,
    write_subset,
)

__all__ = [
    "DEFAULTS",
    "SOURCES",
    "SPLITS",
    "ImagePool",
    "LazyImages",
    "SourcePools",
    "Split",
    "draw_subset",
    "filter_classes",
    "load_source",
    "load_split",
    "preprocess_image",
    "preprocess_images",
    "prepare_dataset",
    "read_subset",
    "removal_subset",
    "select_rows",
    "subset_mask",
    "subset_size",
    "to_uint8_hwc",
    "write_subset",
]
