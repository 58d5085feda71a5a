"""diffattr: training-data attribution for diffusion models, measured by LDS and counterfactuals.

The library is organised by pipeline stage; each module has one job:

* ``data``        dataset sources, train/val splits, LDS subset pools
* ``models``      build / save / load diffusion models (UNet2DModel)
* ``training``    resumable training loop
* ``sampling``    seeded DDIM generation
* ``noise``       per-sample noise keyed by (purpose, seed, timestep, sample id)
* ``measure``     measured model outputs (the LDS ground truth)
* ``outputs``     output functions f whose gradients become features
* ``projection``  seeded random projections
* ``features``    per-sample gradient features
* ``scoring``     TRAK kernel over a λ grid
* ``lds``         linear datamodeling score, bootstrap, noise ceiling
* ``store``       HDF5 schema and atomic writes
* ``summary``     result tables
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
