"""The ``diffattr`` command line.

Subcommands:

* ``diffattr attribute --model DIR --train DIR_OR_CSV --query DIR [--method dtrak] [--top-k 10]``:
  scores of every training image for every query image under a pretrained diffusers model,
  without retraining; a thin layer over the Python API :class:`diffattr.api.Attributor` (see
  :mod:`diffattr.attribute` for the outputs and the default λ);
* ``diffattr config-docs [--check]``: regenerate (or check) docs/configuration.md from the
  config schema;
* ``diffattr prepare-data cifar10|celeba|artbench [--from DIR]``: put a paper dataset where the
  configs in experiments/ read it (:mod:`diffattr.prepare`);
* ``diffattr validate CONFIG...``: check workflow configs against the schema (the check every
  workflow run starts with), without Snakemake.

The benchmark itself runs through Snakemake (``make run``); this entry point covers the
ad-hoc use. Errors raised on purpose by diffattr are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diffattr.errors import DiffattrError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"λ must be a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffattr",
        description="Training-data attribution for diffusion models (TRAK / D-TRAK).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    attribute = commands.add_parser(
        "attribute",
        help="score training images for query images under a pretrained model",
        description="Score every training image for every query image under a pretrained "
        "diffusers model (a DDPMPipeline directory), without retraining. Writes scores.h5, "
        "top_k.csv and a gallery to --out.",
    )
    attribute.add_argument(
        "--model",
        required=True,
        help="DDPMPipeline checkpoint: a folder (model_index.json, unet/, scheduler/) or a hub id",
    )
    attribute.add_argument(
        "--train", required=True, help="folder of training images, or a CSV with a path column"
    )
    attribute.add_argument("--query", required=True, help="folder (or CSV) of query images")
    attribute.add_argument(
        "--out", default="attribution", help="output folder (default: %(default)s)"
    )
    attribute.add_argument(
        "--method",
        choices=["dtrak", "trak"],
        default="dtrak",
        help="dtrak: gradient of ||eps_hat||^2/d; trak: gradient of the loss (default: %(default)s)",
    )
    attribute.add_argument("--top-k", type=_positive_int, default=10, help="default: %(default)s")
    attribute.add_argument(
        "--K",
        type=_positive_int,
        default=10,
        help="timesteps averaged over, uniformly spaced (default: %(default)s)",
    )
    attribute.add_argument(
        "--proj-dim",
        type=_positive_int,
        default=4096,
        help="projection dimension Z (default: %(default)s)",
    )
    attribute.add_argument("--proj-seed", type=int, default=42, help="default: %(default)s")
    attribute.add_argument("--noise-seed", type=int, default=0, help="default: %(default)s")
    attribute.add_argument(
        "--lambda",
        dest="lambda_",
        type=_positive_float,
        default=None,
        help="ridge λ (default: the mean non-zero eigenvalue of the training kernel)",
    )
    attribute.add_argument(
        "--batch-size", type=_positive_int, default=16, help="default: %(default)s"
    )
    attribute.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, ... (default: %(default)s)"
    )
    attribute.add_argument(
        "--gallery",
        choices=["html", "png", "both", "none"],
        default="both",
        help="gallery of each query's top training images (default: %(default)s)",
    )
    attribute.add_argument(
        "--path-column", default="path", help="CSV column with image paths (default: %(default)s)"
    )
    attribute.add_argument(
        "--cache",
        default=None,
        help="folder that keeps the training features for later calls (default: none)",
    )
    attribute.add_argument("--quiet", action="store_true", help="no progress bars")
    attribute.set_defaults(run=run_attribute)

    docs = commands.add_parser(
        "config-docs",
        help="regenerate docs/configuration.md from the config schema",
        description="Regenerate docs/configuration.md from src/diffattr/schemas/config.schema.yaml.",
    )
    docs.add_argument(
        "--output", default=None, help="where to write (default: docs/configuration.md)"
    )
    docs.add_argument("--check", action="store_true", help="only check that the file is current")
    docs.set_defaults(run=run_config_docs)

    prep = commands.add_parser(
        "prepare-data",
        help="put a paper dataset where the experiments/ configs read it",
        description="Write CIFAR-10 (data/cifar10), CelebA (data/celeba) or ArtBench-10 "
        "(data/artbench) under --root, from the hub (online) or from files you have (--from).",
    )
    prep.add_argument("dataset", choices=["cifar10", "celeba", "artbench"])
    prep.add_argument(
        "--root", default=".", help="the directory Snakemake runs in (default: %(default)s)"
    )
    prep.add_argument(
        "--from",
        dest="source",
        default=None,
        help="offline: a folder with the official files (see docs/reproducing-the-paper.md)",
    )
    prep.add_argument("--hub-name", default=None, help="online: the hub dataset to download")
    prep.add_argument("--copy", action="store_true", help="copy image folders instead of linking")
    prep.add_argument("--force", action="store_true", help="replace an existing copy")
    prep.set_defaults(run=run_prepare_data)

    check = commands.add_parser(
        "validate",
        help="check workflow config files against the config schema",
        description="Validate each config file (e.g. config.yaml, experiments/cifar2.yaml) the "
        "way the workflow does before any job starts.",
    )
    check.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config file")
    check.set_defaults(run=run_validate)
    return parser


def run_prepare_data(args: argparse.Namespace) -> int:
    from diffattr.prepare import prepare_data

    written = prepare_data(
        args.dataset, args.root, args.source, args.hub_name, copy=args.copy, force=args.force
    )
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    import yaml

    from diffattr.config import validate_config
    from diffattr.errors import ConfigError

    for path in args.configs:
        try:
            with open(path) as handle:
                config = yaml.safe_load(handle)
        except OSError as error:
            raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: expected a YAML mapping of config keys")
        try:
            validated = validate_config(config)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        print(f"{path}: valid (experiment {validated['experiment']!r})")
    return 0


def run_attribute(args: argparse.Namespace) -> int:
    from diffattr.api import AttributionSettings, Runtime
    from diffattr.attribute import OutputOptions, attribute, list_images, write_outputs

    outputs = OutputOptions(top_k=args.top_k, gallery=args.gallery)
    settings = AttributionSettings(
        method=args.method,
        K=args.K,
        proj_dim=args.proj_dim,
        proj_seed=args.proj_seed,
        noise_seed=args.noise_seed,
        lambda_=args.lambda_,
    )
    runtime = Runtime(
        batch_size=args.batch_size,
        device=args.device,
        progress=None if args.quiet else sys.stderr,
    )
    train = list_images(args.train, args.path_column, "train")
    query = list_images(args.query, args.path_column, "query")
    result = attribute(args.model, train, query, settings, runtime=runtime, cache_dir=args.cache)
    written = write_outputs(result, args.out, outputs)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def run_config_docs(args: argparse.Namespace) -> int:
    from diffattr.config_docs import DOCS_PATH, docs_are_current, write_docs

    path = args.output or DOCS_PATH
    if args.check:
        if docs_are_current(path):
            print(f"{path} is up to date")
            return 0
        print(f"{path} is out of date; run `diffattr config-docs`", file=sys.stderr)
        return 1
    print(f"wrote {write_docs(path)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DiffattrError as error:
        print(f"diffattr {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
