"""Issue 9 §8: the docs stand alone: no pointer to a DESIGN.md outside the repository, and every link resolves."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_no_doc_points_outside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text()
        assert "DESIGN.md" not in text, doc
        assert "shared/" not in text, doc


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken = []
    for doc in DOCS:
        for target in _LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken


def test_the_design_page_has_what_the_code_cites() -> None:
    design = (REPO / "docs" / "design.md").read_text()
    for section in ("Attestation", "Updates", "Claim", "Honest limits", "Data directories", "Processes on an emulated"):
        assert section in design
    for variable in ("BASTION_HOME", "BASTION_CONFIG", "XDG_CONFIG_HOME"):
        assert variable in design
