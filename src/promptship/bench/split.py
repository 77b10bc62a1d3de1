"""The held-out split of ../shared/eval for the sensitive-data gate, fixed before any rule was tuned.

``python -m promptship.bench.split`` writes ``tests/data/gate_eval_split.json``: the ids (never the texts) of
the rows kept aside. Rows are grouped by (file, subtype, label, hard_negative); inside a group they are ordered
by the SHA-256 of their id and every third row (ranks 1, 4, 7, …) is held out, so every subtype with two
rows or more has at least one held-out row and the choice depends on nothing but the ids. Rules are tuned on
the other rows ("tune"); the held-out rows are only ever measured (``python -m promptship.bench gate``).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from promptship.bench.gate import EVAL_DIR, REPO_ROOT, load_jsonl

SPLIT_FILE = REPO_ROOT / "tests" / "data" / "gate_eval_split.json"
FILES = ("secrets", "pii", "benign")


def held_out_ids(eval_dir: Path = EVAL_DIR) -> list[str]:
    groups: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for name in FILES:
        for row in load_jsonl(eval_dir / f"{name}.jsonl"):
            groups[(name, row["subtype"], row["label"], bool(row.get("hard_negative")))].append(row["id"])
    out: list[str] = []
    for ids in groups.values():
        ordered = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
        out.extend(ordered[1::3])
    return sorted(out)


def main() -> None:
    ids = held_out_ids()
    SPLIT_FILE.write_text(
        json.dumps(
            {"rule": "per (file, subtype, label, hard_negative), sha256(id) order, ranks 1::3", "held_out": ids},
            indent=0,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"{len(ids)} held-out ids written to {SPLIT_FILE}")


if __name__ == "__main__":
    main()
