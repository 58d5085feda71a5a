"""Paths and input functions of the report rules (rules/report.smk)."""

REPORT = f"{RESULTS}/report"


def overview_example():
    """The grid on the front page: gen queries, D-TRAK (output_fn square) if scored, largest K."""
    split = "gen" if "gen" in QUERY_SPLITS else QUERY_SPLITS[0]
    targets = [t for t in lds_targets() if t[2] == split]
    squares = [t for t in targets if METHODS[t[0]].get("output_fn") == "square"]
    candidates = squares or targets
    largest = max(K for _, K, _ in candidates)
    method = next(m for m, K, _ in candidates if K == largest)
    return f"{REPORT}/proponents/{method}/K{largest}/{split}.png"


def counterfactual_figure():
    """The counterfactual before/after grid (rules/counterfactual.smk), flagged for the report."""
    if not COUNTERFACTUAL["enabled"]:
        return []
    figure = report(
        f"{CF}/figure.png",
        caption="../report/counterfactual.rst",
        category="3. Counterfactual",
    )
    return [figure]


def grid_label(wildcards):
    """Heading of a proponent grid, e.g. "dtrak, K = 10, val queries"."""
    K = f", K = {wildcards.K}" if int(wildcards.K) else ""
    return f"{wildcards.method}{K}, {wildcards.query} queries"


def report_outputs():
    """Every report file; part of the default target (see final_outputs)."""
    grids = [f"{REPORT}/proponents/{m}/K{K}/{q}.png" for m, K, q in lds_targets()]
    pages = [
        "overview.html",
        "lds.png",
        "lambda_curves.png",
        "runtimes.html",
        "config.html",
    ]
    return [f"{REPORT}/{name}" for name in pages] + grids
