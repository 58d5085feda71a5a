"""Documents point only inside the repository: no absolute paths to a developer's machine, and
every docs/*.md, experiments/*.yaml or src/ path they name exists."""

from __future__ import annotations

import re

import pytest

from tests.workflow_utils import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTS += sorted((ROOT / "experiments").rglob("*.yaml")) + [ROOT / "config.yaml"]
# a developer's or this machine's files; system paths such as /tmp/diffattr-slurm-test are fine
OUTSIDE = re.compile(r"(?<![\w.~])/(?:work|home|Users|root|scratch)/|shared/reference")
NAMED = re.compile(r"(?<![\w/.-])((?:docs|experiments|src/diffattr|scripts|rules)/[\w./-]*\w)")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_document_points_only_inside_the_repository(path):
    text = path.read_text(encoding="utf-8")
    outside = [m.group(0) for m in OUTSIDE.finditer(text)]
    assert not outside, f"{path.name} names files outside the repository: {outside}"
    missing = sorted(
        {
            name
            for name in NAMED.findall(text)
            if "*" not in name and "{" not in name and not (ROOT / name).exists()
        }
    )
    assert not missing, f"{path.name} names repository paths that do not exist: {missing}"
