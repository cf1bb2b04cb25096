"""The documentation: the site builds in strict mode, and every relative link points at a file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
ISSUE = re.compile(r"\bissues? #?\d+|(?<![\w&/#])#\d+\b", re.IGNORECASE)


def test_the_site_builds_in_strict_mode(tmp_path):
    """`mkdocs build --strict`: every docstring the API pages reference parses, every page is in the nav."""
    if not (ROOT / "mkdocs.yml").is_file():
        pytest.skip("no mkdocs.yml (an installed copy without the repository)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "site" / "api" / "market" / "index.html").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_of_the_repository(page):
    """Links that stay in the repository must resolve inside it; no link reaches beside the checkout."""
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a public web address, or an anchor on the same page
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    assert not broken, f"{page.name} links to {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_no_tracker_issues(page):
    found = ISSUE.findall(page.read_text(encoding="utf-8"))
    assert not found, f"{page.name} mentions {found}"
