"""Copy a finished compare's small, face-free outputs into docs/ so the README's table and plots are reproducible
and inspectable: results.json -> docs/results/<name>.json, table.md -> docs/results/<name>.md, frontier.png and
curves.png -> docs/<name>-frontier.png / -curves.png. Never the grids (real faces) nor report.html (embeds them).

usage: python scripts/summaries/compare_docs.py results/demo --name compare-demo      (make demo-docs)
       python scripts/summaries/compare_docs.py results/orl --name compare-orl
       python scripts/summaries/compare_docs.py results/orl --name compare-orl --render   (first re-render table.md, plots,
           grids and report.html from results.json with today's report code -- for a change of the report only;
           the cells' numbers are not touched)
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from fedface.compare_report import write_all
from fedface.report.schema import validate

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--render", action="store_true", help="re-render the folder's report from its results.json")
    args = ap.parse_args()
    results = json.loads((args.folder / "results.json").read_text())
    validate(results)
    if args.render:
        write_all(args.folder, results, (args.folder / "config.yaml").read_text())
    docs = REPO / "docs"
    shutil.copyfile(args.folder / "results.json", docs / "results" / f"{args.name}.json")
    shutil.copyfile(args.folder / "table.md", docs / "results" / f"{args.name}.md")
    for plot in ("frontier", "curves"):
        shutil.copyfile(args.folder / f"{plot}.png", docs / f"{args.name}-{plot}.png")
    print(f"docs/results/{args.name}.json, docs/results/{args.name}.md, docs/{args.name}-frontier.png, "
          f"docs/{args.name}-curves.png")


if __name__ == "__main__":
    main()
