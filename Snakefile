"""diffattr: which training examples does a diffusion model's output come from, and how
right is that answer? The D-TRAK protocol as a DAG of files under results/<experiment>/:

    data/dataset.h5                          train/val splits (row order of every matrix)
    subsets/{pool}/{k}.h5                    LDS subsets (pools: lds, heldout)
    models/main, models/{pool}/{k}/seed{s}   trained models (diffusers layout)
    samples/gen.h5, samples/gen.png          generated queries
    measured/{pool}/{k}/seed{s}.h5           measured outputs (LDS ground truth)
    features/{ckpt}/{fn}/{noise}/K{K}/{split}.h5  projected gradient features
    spectra/{method}/K{K}/{split}.h5         one factorisation per ridge-λ method (any λ grid)
    scores/{method}/K{K}/{split}.h5          score matrices at the λ used (held-out choice)
    lds/{method}/K{K}/{split}.json           LDS curves, held-out and oracle λ, bootstrap
    summary.csv, summary.md                  the results table

Without --configfile the embedded default (config.yaml, a CPU demo) runs. A --configfile
(e.g. experiments/cifar2.yaml) is a complete configuration and replaces the default.
"""

import os
import sys

from snakemake.utils import min_version

min_version("9.19")

# Snakemake and every job import diffattr from this checkout's src/, whether or not the package
# is installed (a conda-installed Snakemake, a deployed workflow, a SLURM job step).
_src = os.path.join(workflow.basedir, "src")
if _src not in sys.path:
    sys.path.insert(0, _src)

from diffattr.jobenv import use_source_tree

use_source_tree(_src)


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
include: "rules/residuals.smk"
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


onstart:
    # DIFFATTR_JOB_SERVER=1 (set by `make run`): local jobs fork from one process that has
    # imported torch already (diffattr.job_server); a cluster run never starts it.
    if JOB_SERVER.start(
        LOGS, local=workflow.local_exec and workflow.is_main_process
    ):
        print(
            "[diffattr] job server started (one-thread jobs skip the torch import)"
        )


onsuccess:
    JOB_SERVER.stop()
    print_summary(f"{RESULTS}/summary.md")
    print_summary(f"{RESULTS}/checks.md")


onerror:
    JOB_SERVER.stop()
