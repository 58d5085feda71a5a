"""diffattr: which training examples does a diffusion model's output come from, and how
right is that answer? The D-TRAK protocol as a DAG of files under results/<experiment>/:

    data/dataset.h5                          train/val splits (row order of every matrix)
    subsets/{pool}/{k}.h5                    LDS subsets (pools: lds, heldout)
    models/main, models/{pool}/{k}/seed{s}   trained models (diffusers layout)
    samples/gen.h5, samples/gen.png          generated queries
    measured/{pool}/{k}/seed{s}.h5           measured outputs (LDS ground truth)
    features/{fn}/K{K}/{split}.h5            projected gradient features
    scores/{method}/K{K}/{split}.h5          score matrices for the whole λ grid
    lds/{method}/K{K}/{split}.json           LDS curves, held-out and oracle λ, bootstrap
    summary.csv, summary.md                  the results table

Without --configfile the embedded default (config.yaml, a CPU demo) runs. A --configfile
(e.g. experiments/cifar2.yaml) is a complete configuration and replaces the default.
"""

import os

from snakemake.utils import min_version

min_version("9.19")

# Jobs import diffattr from this checkout's src/ (also inside conda envs and SLURM jobs).
_src = os.path.join(workflow.basedir, "src")
_pythonpath = [
    p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != _src
]
os.environ["PYTHONPATH"] = os.pathsep.join([_src, *_pythonpath])


report: "report/workflow.rst"


if not config.get("experiment"):

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/functions/counterfactual.smk"
include: "rules/functions/lds.smk"
include: "rules/functions/report.smk"
include: "rules/functions/checks.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/generate.smk"
include: "rules/measure.smk"
include: "rules/features.smk"
include: "rules/scores.smk"
include: "rules/lds.smk"
include: "rules/counterfactual.smk"
include: "rules/summary.smk"
include: "rules/checks.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


onsuccess:
    print_summary(f"{RESULTS}/summary.md")
    print_summary(f"{RESULTS}/checks.md")
