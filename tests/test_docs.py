"""The documentation's links lead somewhere: every relative link in README.md and the docs resolves to a file of the
repository, and every ``#anchor`` to a heading of its target (GitHub's slugs). A newcomer follows links; a moved
section must not leave them dead."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *ROOT.glob("*/README.md"),
                *(ROOT / "configs").glob("*/README.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped (word characters, spaces and hyphens kept), spaces
    to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def links(page: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(FENCE.sub("", page.read_text()))]


def dead_links(page: Path) -> list[str]:
    dead = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto: -- not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            dead.append(f"{target} (no file {dest.relative_to(ROOT) if ROOT in dest.parents else dest})")
        elif ROOT not in dest.parents and dest != ROOT:
            dead.append(f"{target} (outside the repository)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            dead.append(f"{target} (no heading #{anchor} in {dest.name})")
    return dead


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    assert not dead_links(page), f"{page.relative_to(ROOT)}: dead links: {dead_links(page)}"


def test_the_checker_catches_a_dead_file_and_a_dead_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Top `code` (x)\n## Top code x\n[ok](b.md#second-part) [self](#top-code-x-1)\n"
                                   "[bad](b.md#nowhere) [gone](c.md)\n```\n[in fence](zzz.md)\n```\n")
    (tmp_path / "b.md").write_text("## Second part\n")
    assert anchors(tmp_path / "a.md") == {"top-code-x", "top-code-x-1"}
    assert [d.split(" ")[0] for d in dead_links(tmp_path / "a.md")] == ["b.md#nowhere", "c.md"]
