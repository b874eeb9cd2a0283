"""The README stays a newcomer's page and the documentation site stays whole (its build, with
``mkdocs build --strict``, is a step of ``.ci/run``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = ('python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install ".[test]" && '
         'asisr-run --sample --scale 3 --out sample_x3.png')


def test_the_readme_is_short_and_keeps_its_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    commands = re.search(r"## Set up and test.*?```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert commands == [SETUP, "python -m pytest -q"]


def test_every_link_from_the_readme_and_every_nav_page_exists():
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert "index.md" in nav and "api.md" in nav
    for page in nav:
        assert (ROOT / "docs" / page).is_file(), page
    listed = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert listed == set(nav), sorted(listed ^ set(nav))  # no page outside the site, no dangling nav entry
