"""docs/deployment.md: every path it promises links to an example and a test that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deployment.md"


def links() -> list[str]:
    return re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", DOC.read_text())


def test_every_relative_link_of_the_guide_exists():
    local = [target for target in links() if "://" not in target]
    assert local
    missing = [target for target in local if not (DOC.parent / target).resolve().exists()]
    assert missing == []


def test_every_row_of_the_guide_names_an_example_and_a_test():
    section = DOC.read_text().split("## The guide", 1)[1].split("\n\n")[1]  # the first table
    table = [line for line in section.splitlines()
             if line.startswith("| ") and not line.startswith("| you need")]  # fmt: skip
    assert len(table) >= 6
    for row in table:
        need, path, example, test = [cell.strip() for cell in row.strip("|").split("|")]
        assert need and path and example, row
        assert "tests/" in test or "test_" in test, row


def test_the_tests_the_guide_names_are_real_test_files():
    named = set(re.findall(r"tests/(?:unit|integration)/test_\w+\.py", DOC.read_text()))
    assert {"tests/integration/test_webapp.py", "tests/integration/test_edge.py",
            "tests/integration/test_batch_storage.py",
            "tests/integration/test_scale_to_zero.py"} <= named  # fmt: skip
    for path in named:
        assert "def test_" in (ROOT / path).read_text(), path
