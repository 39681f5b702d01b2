"""Count mutmut's verdicts per area from its ``mutants/`` folder, as README.md's markdown table.

    python docs/results/mutation/counts.py [MUTANTS_FOLDER]   (default: ./mutants)

Reads the ``*.meta`` files mutmut writes beside each mutated module (``exit_code_by_key``):
exit code 1 is killed, 0 survived, 33 no tests reach the function, None not checked yet;
anything else (timeouts, suspicious) is counted as "other".
"""

import json
import sys
from collections import Counter
from pathlib import Path

VERDICTS = {1: "killed", 0: "survived", 33: "no tests", None: "not checked"}
COLUMNS = ["killed", "survived", "no tests", "not checked", "other"]


def area(meta: Path) -> str:
    """``engine/trainer.py``, ``eval/``, ``losses/`` or ``methods/`` for a module's meta file."""
    parts = meta.parts[meta.parts.index("tailfuse") + 1 :]
    return "/".join(parts)[: -len(".meta")] if parts[0] == "engine" else f"{parts[0]}/"


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "mutants")
    counts: dict[str, Counter] = {}
    for meta in sorted(folder.glob("src/tailfuse/**/*.meta")):
        verdicts = json.loads(meta.read_text())["exit_code_by_key"].values()
        verdict_names = (VERDICTS.get(code, "other") for code in verdicts)
        counts.setdefault(area(meta), Counter()).update(verdict_names)
    total = sum(counts.values(), Counter())
    print("| area | " + " | ".join(COLUMNS) + " | mutants |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name in sorted(counts):
        row = counts[name]
        cells = " | ".join(str(row[c]) for c in COLUMNS)
        print(f"| {name} | {cells} | {sum(row.values())} |")
    cells = " | ".join(f"**{total[c]}**" for c in COLUMNS)
    print(f"| **all** | {cells} | **{sum(total.values())}** |")


if __name__ == "__main__":
    main()
