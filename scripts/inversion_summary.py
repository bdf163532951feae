"""The docs/attacks.md tables of `scripts/inversion_table.sh` / `inversion_in_federation.sh`: one line per
(run, attack) from results/inversion-orl/* (or the folder given)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from fedface.invert import summarise


def main(root: str) -> None:
    inv = sorted(Path(root).glob("*/results.json"))
    rows = []
    for path in inv:
        r = json.loads(path.read_text())
        if r.get("command") == "invert":
            for row in r["rows"]:
                rows.append({**row, "protection": f"{path.parent.name}: {row['protection']}"})
    print(summarise({"rows": rows}))
    print()
    print("| run | MALICIOUS WEIGHTS | protection | clients x batch | recovered (> 30 dB, model_input) | rate | "
          "pixel PSNR (mean) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in inv:
        r = json.loads(path.read_text())
        if r.get("command") != "imprint" or not r.get("rows"):
            continue
        rec = sum(x["recovered"] for x in r["rows"])
        tot = sum(x["batch"] for x in r["rows"])
        pix = [x["pixel_psnr_mean"] for x in r["rows"] if "pixel_psnr_mean" in x]
        mean_pix = f"{sum(pix) / len(pix):.1f} dB" if pix else "n/a"
        print(f"| {path.parent.name} | {r['malicious_weights']} | {r['protection']} | {len(r['rows'])} x "
              f"{r['batch_size']} | {rec}/{tot} | {rec / tot:.3f} | {mean_pix} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/inversion-orl")
