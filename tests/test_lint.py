"""`snakemake --lint` reports only the warning justified in docs/lint.md."""

import re
import subprocess

from tests.workflow_utils import ROOT, SNAKEMAKE

JUSTIFIED = {"Environment variable PYTHONPATH used but not asserted with envvars directive"}


def test_snakemake_lint_reports_only_the_justified_warning(tmp_path):
    command = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)]
    command += ["--configfile", str(ROOT / "config.yaml"), "--lint"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    text = result.stdout + result.stderr
    found = {
        re.sub(r" in line \d+\.?:?$", "", line.strip()[2:]).rstrip(".:")
        for line in text.splitlines()
        if line.startswith("    * ")
    }
    assert found == JUSTIFIED, text[-3000:]
    assert "PYTHONPATH" in (ROOT / "docs" / "lint.md").read_text(), "justify it in docs/lint.md"
