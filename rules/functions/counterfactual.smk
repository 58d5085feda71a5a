"""Targets, paths and input functions of the counterfactual rules (rules/counterfactual.smk)."""

from diffattr.counterfactual import RANDOM
from diffattr.plan import resolve_counterfactual

COUNTERFACTUAL = resolve_counterfactual(config)
CF = f"{RESULTS}/counterfactual"
CF_METHODS = COUNTERFACTUAL["methods"]
CF_SCORED = COUNTERFACTUAL["score_methods"]
CF_TARGETS = COUNTERFACTUAL["targets"]


wildcard_constraints:
    cf_method="|".join(re.escape(name) for name in CF_METHODS),
    cf_target=r"\d+",


def cf_files(pattern, targets=None):
    """A per-(method, target) file for every method and (by default) every target."""
    targets = CF_TARGETS if targets is None else targets
    return [
        pattern.format(cf_method=method, cf_target=target)
        for target in targets
        for method in CF_METHODS
    ]


def cf_figure_targets():
    return CF_TARGETS[: COUNTERFACTUAL["figure_targets"]]


def cf_scores(method):
    """A scored method's gen score file at its counterfactual K."""
    return f"{RESULTS}/scores/{method}/K{COUNTERFACTUAL['method_K'][method]}/gen.h5"


def cf_method_grid(wildcards):
    """What the counterfactual λ is chosen from: the spectra file of a method with a ridge λ."""
    method = wildcards.cf_method
    K = COUNTERFACTUAL["method_K"][method]
    return {**grid_inputs(method, K, "gen"), **gen_lambda_chooser(method, K, "gen")}


def cf_method_lambdas(wildcards):
    return lambda_grid(wildcards.cf_method)


def cf_method_K(wildcards):
    return COUNTERFACTUAL["method_K"][wildcards.cf_method]


def cf_lds_records():
    """The LDS records whose held-out λ the counterfactual must have used."""
    return [
        f"{RESULTS}/lds/{method}/K{COUNTERFACTUAL['method_K'][method]}/gen.json"
        for method in CF_SCORED
        if method in COUNTERFACTUAL["method_K"]
    ]


def counterfactual_ranking(wildcards):
    """Inputs that rank a method's rows: scores and λ choice, or nothing for `random`."""
    if wildcards.cf_method == RANDOM:
        return {}
    return {
        "scores": cf_scores(wildcards.cf_method),
        "choice": f"{CF}/lambda/{wildcards.cf_method}.json",
    }


def cf_latent_model(wildcards):
    """A latent model's VAE measures ℓ2 between latent modes (the main model's base VAE)."""
    if config["model"]["kind"] == "sd_lora":
        return {"latent_model": rules.train_main.output.model}
    return {}


def counterfactual_outputs():
    """Targets of `rule all` when the counterfactual evaluation is enabled."""
    if not COUNTERFACTUAL["enabled"]:
        return []
    return [f"{RESULTS}/counterfactual.csv", f"{CF}/metrics.csv", f"{CF}/figure.png"]


def counterfactual_summary_record():
    """Input of `summarize`: the collected counterfactual summary, if enabled."""
    return f"{CF}/summary.json" if COUNTERFACTUAL["enabled"] else []


def counterfactual_summary_table():
    """Extra output of `summarize`: counterfactual.csv next to summary.csv, if enabled."""
    return (
        {"counterfactual": f"{RESULTS}/counterfactual.csv"}
        if COUNTERFACTUAL["enabled"]
        else {}
    )
