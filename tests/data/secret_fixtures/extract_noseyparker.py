"""Rebuild noseyparker.jsonl from a checkout of praetorian-inc/noseyparker (Apache-2.0; see README.md here).

    python tests/data/secret_fixtures/extract_noseyparker.py /path/to/noseyparker/.git > noseyparker.jsonl

Takes each built-in rule's ``examples`` (strings the rule must match: label 1). Its ``negative_examples`` are
left out: they are "this rule must not fire" cases that are often another provider's real token.
The family is the rule file's name (``slack.yml`` -> ``slack``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

RULES = "crates/noseyparker/data/default/builtin/rules"


def main(git_dir: str) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "--git-dir", git_dir, *args], check=True, capture_output=True, text=True).stdout

    commit = git("rev-parse", "HEAD").strip()
    for path in sorted(git("ls-tree", "-r", "--name-only", "HEAD", RULES).split()):
        if not path.endswith(".yml"):
            continue
        family = path.rsplit("/", 1)[1].removesuffix(".yml")
        for rule in yaml.safe_load(git("show", f"HEAD:{path}")).get("rules") or []:
            for i, example in enumerate(rule.get("examples") or []):
                row = {
                    "id": f"{rule['id']}#{i}",
                    "text": example,
                    "label": 1,
                    "family": family,
                    "subtype": rule["name"],
                    "source": "noseyparker-rule-examples",
                    "license": "Apache-2.0",
                    "origin": f"praetorian-inc/noseyparker@{commit[:7]}:{path}#{rule['id']}",
                }
                print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
