"""Where a model's gradient energy sits, and how the structured projection splits Z over it.

    python tools/layer_energy.py results/digits-demo/models/main results/digits-demo/data/dataset.h5 \\
        [--output-fn square] [--proj-dim 1024] [--top 12]

Prints, for the layout groups holding the most energy, the group's parameter count, its share
of Σ‖ḡ‖² over the per-sample mean gradients of the calibration rows (the ``energy`` split's
input, diffattr.calibration) and the dimensions the ``energy`` and ``proportional`` splits give
it (docs/projection.md).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved model folder")
    parser.add_argument("dataset", help="the run's data/dataset.h5 (its train split calibrates)")
    parser.add_argument("--output-fn", default="square")
    parser.add_argument("--proj-dim", type=int, default=1024)
    parser.add_argument("--proj-seed", type=int, default=42)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)

    from diffattr.jobs.features import dataset_calibration
    from diffattr.models import load_diffusion_model
    from diffattr.projection_structured import build_layout, calibration_shares, layout_groups

    model = load_diffusion_model(args.model, "cpu")
    groups = layout_groups(model.denoiser)
    calibrate = dataset_calibration(model, args.dataset, args.output_fn, args.proj_seed)
    shares = calibration_shares(calibrate(groups))
    energy = build_layout(model.denoiser, args.proj_dim, "energy", shares)
    proportional = build_layout(model.denoiser, args.proj_dim, "proportional")

    def dims(layout):
        return [b.dim for b in layout.blocks] + ([layout.rest_dim] if layout.rest_dim else [])

    params = dict(model.denoiser.named_parameters())
    sizes = [sum(params[n].numel() for n in names) for _, names in groups]
    rows = sorted(
        zip(shares, groups, sizes, dims(energy), dims(proportional), strict=True),
        key=lambda row: -row[0],
    )
    total = sum(sizes)
    print(f"{args.output_fn}: {len(groups)} groups, {total} parameters, Z = {args.proj_dim}")
    print("| group | parameters | parameter share | energy share | z (energy) | z (proportional) |")
    print("|---|---|---|---|---|---|")
    for share, (name, _), size, z_energy, z_prop in rows[: args.top]:
        print(
            f"| {name} | {size} | {100 * size / total:.2f} % | {100 * share:.1f} % | "
            f"{z_energy} | {z_prop} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
