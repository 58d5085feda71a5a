"""What a validated config runs, derived once while Snakemake parses the workflow.

* :func:`resolve_counterfactual`: the ``counterfactual`` block with the scored methods, the K of
  each one's score file and the targets filled in (``rules/functions/counterfactual.smk``);
* :func:`counterfactual_top_k`: the number of rows each removal takes out (the training size of
  a counterfactual model, :mod:`diffattr.resources`).

Which methods run, at which K and on which splits, is the method registry's answer
(:func:`diffattr.methods.runnable_methods`, :func:`~diffattr.methods.method_Ks`,
:func:`~diffattr.methods.method_splits`). A parse-time module: it imports no torch, diffusers,
transformers or matplotlib (``tests/test_architecture.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffattr.counterfactual import RANDOM, resolve_top_k, select_targets
from diffattr.errors import ConfigError
from diffattr.methods import method_Ks, method_splits, runnable_methods


def resolve_counterfactual(config: Mapping[str, Any]) -> dict[str, Any]:
    """The validated ``counterfactual`` block with ``score_methods``, ``method_K`` (the K of each
    scored method's score file: ``K``, by default its largest, or 0 for K-free methods) and
    ``targets`` filled. Cross-key checks the schema cannot express run only when enabled."""
    block = dict(config["counterfactual"])
    block["score_methods"] = [m for m in block["methods"] if m != RANDOM]
    block["method_K"] = {}
    block["targets"] = []
    if not block["enabled"]:
        return block
    unknown = [m for m in block["score_methods"] if m not in config["methods"]]
    if unknown:
        raise ConfigError(
            f"config: counterfactual.methods names unknown method(s) {unknown}; valid: "
            f"{sorted(config['methods']) + [RANDOM]} (the keys of `methods`, plus the built-in "
            f"{RANDOM!r})"
        )
    if RANDOM in config["methods"]:
        raise ConfigError(
            f"config: methods.{RANDOM} clashes with the built-in counterfactual baseline "
            f"{RANDOM!r}; rename that method"
        )
    _, skipped = runnable_methods(config)
    for name in block["score_methods"]:
        if name in skipped:
            raise ConfigError(
                f"config: counterfactual.methods lists {name!r}, which cannot run here: "
                f"{skipped[name]}"
            )
        if "gen" not in method_splits(config, name):
            raise ConfigError(
                f"config: counterfactual ranks training rows by gen-split scores at the held-out "
                f"λ, but method {name!r} has no gen scores (lds.splits = "
                f"{config['lds']['splits']}); add 'gen' to lds.splits"
            )
        Ks = method_Ks(config, name)
        if block["K"] is not None and Ks != [0] and block["K"] not in Ks:
            raise ConfigError(
                f"config: counterfactual.K = {block['K']} is not a K of method {name!r} "
                f"({Ks}); its scores would not exist"
            )
        block["method_K"][name] = Ks[0] if Ks == [0] else block["K"] or max(Ks)
    num_samples = config["generation"]["num_samples"]
    if block["num_targets"] > num_samples:
        raise ConfigError(
            f"config: counterfactual.num_targets = {block['num_targets']} exceeds "
            f"generation.num_samples = {num_samples}"
        )
    block["targets"] = select_targets(num_samples, block["num_targets"], block["target_seed"])
    return block


def counterfactual_top_k(config: Mapping[str, Any]) -> int:
    """Training rows each counterfactual removal takes out (``top_k``, else ``top_fraction`` of
    ``data.train_size``); DataError when that would leave no row to train on."""
    block = config["counterfactual"]
    n = int(config["data"]["train_size"])
    return resolve_top_k(n, block.get("top_k"), block["top_fraction"])
