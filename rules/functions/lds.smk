"""Input functions of the ground-truth, LDS and summary rules (rules/lds.smk, rules/summary.smk)."""


def pool_subset_files(wildcards):
    return [subset_path(wildcards.pool, k) for k in pool_subsets(wildcards.pool)]


def pool_measured_files(wildcards):
    return [
        measured_path(wildcards.pool, k, seed)
        for seed in pool_seeds(wildcards.pool)
        for k in pool_subsets(wildcards.pool)
    ]


def pool_measured_by_seed(wildcards):
    """Measured files as [seed][subset], the layout collect_groundtruth expects."""
    return [
        [measured_path(wildcards.pool, k, seed) for k in pool_subsets(wildcards.pool)]
        for seed in pool_seeds(wildcards.pool)
    ]


def lds_records():
    """One LDS record per (method, K, split) the method is scored at (K0: no timesteps)."""
    return [f"{RESULTS}/lds/{m}/K{K}/{q}.json" for m, K, q in lds_targets()]
