"""`snakemake --lint` is clean: exit status 0 and no warning (docs/lint.md)."""

import subprocess

from tests.workflow_utils import ROOT, SNAKEMAKE


def test_snakemake_lint_is_clean(tmp_path):
    command = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)]
    command += ["--configfile", str(ROOT / "config.yaml"), "--lint"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    warnings = [line for line in text.splitlines() if line.startswith("    * ")]
    assert not warnings, text[-3000:]
    assert "in a good condition" in text, text[-3000:]
