"""Input functions of the check rules (rules/checks.smk)."""


def quality_record():
    """The sample-quality record, when generated samples are a query split."""
    return [f"{RESULTS}/samples/quality.json"] if "gen" in QUERY_SPLITS else []


def sanity_targets():
    """(method, K, split) whose proponents are checked: every scored target; gen only with the
    sample-quality record (its classifier labels are the gen queries' classes)."""
    return [t for t in lds_targets() if t[2] == "val" or t[2] == "gen"]


def run_description():
    """What ran, for the plain-words overview."""
    training = config["training"]
    unet = config["model"].get("unet") or {}
    steps = "EMA weights" if training.get("ema_decay") else "last-step weights"
    width = unet.get("block_out_channels")
    return {
        "dataset": config["data"].get("source"),
        "n_train": config["data"].get("train_size"),
        "training": f"UNet {width}, {training['epochs']} epochs, {steps}",
        "lds_models": config["subsets"]["lds"]["num_subsets"]
        * len(config["subsets"]["lds"]["train_seeds"]),
        "heldout_models": config["subsets"]["heldout"]["num_subsets"]
        * len(config["subsets"]["heldout"]["train_seeds"]),
        "queries": f"on {config['data'].get('val_size')} val images and "
        f"{config['generation']['num_samples']} generated samples",
    }


def checks_outputs():
    """Part of the default target (see final_outputs)."""
    return [f"{RESULTS}/checks.md", *quality_record()]
