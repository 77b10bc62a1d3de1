"""Rebuild fresh.jsonl: labelled rows from Skyscanner/whispers' and sirwart/ripsecrets' test fixtures.

    python tests/data/secret_fixtures/extract_fresh.py WHISPERS_WORKTREE RIPSECRETS_GIT_DIR > fresh.jsonl

``WHISPERS_WORKTREE`` is a checkout of Skyscanner/whispers (Apache-2.0) with whispers itself importable
(``pip install WHISPERS_WORKTREE`` in a throwaway virtualenv: its pins are old); ``RIPSECRETS_GIT_DIR`` is a git
directory of sirwart/ripsecrets (MIT). Both licences are copied beside this script. Each row is one line of a
fixture file, unchanged (leading blanks dropped), labelled the way the source's own tests label it:

- whispers (``tests/unit/test_secrets.py``): ``test_detection_by_value`` runs whispers with
  ``tests/configs/detection_by_value.yml`` on the fixture files of its table and asserts that every value found
  says ``hardcoded`` (or is numeric, or base64 of it): each such finding's line is a positive (label 1), its
  family the whispers rule's message (``Password``, ``API key``, ``AWS Access Key ID``...).
  ``test_detection_by_key`` (default config) lists the keys that must be found in its files: those findings are
  positives too. Negatives (label 0): the lines of those files that carry a value (``key: value``, ``key=value``,
  ``<k>value</k>``) and that whispers does not report, with no ``hardcoded`` marker; in the files whose table
  count is 0 (``placeholders.*``, ``custom.*``, ``empty.dockercfg``, ``language.py2``) every such line.
  Findings of whispers' non-secret rules (``Comment``, ``Insecure CORS``: "dangerous behaviours") are left out,
  and so are findings whose value is not on the reported line (multi-line or escaped values); a file with such a
  finding, and the files of ``test_detection_by_key`` (they list keys, not lines), give no negatives.
- ripsecrets (``src/lib.rs`` tests): ``no_false_negatives`` expects one secret per line of each
  ``test/one_per_line/NAME`` (label 1, family NAME) and one per file of ``test/one_per_file/NAME`` (the whole
  file is one row, label 1); ``no_false_positives`` expects none in ``test/none`` (each line label 0).
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
import re
import subprocess
import sys
from pathlib import Path

VALUE_LINE = re.compile(r"""[:=]\s*["']?[^\s"'{}\[\],]|>[^<\s][^<]*</""")
NOT_SECRETS = frozenset({"Comment", "Insecure CORS"})
B64_RUN = re.compile(r"[A-Za-z0-9+/]{12,}={0,2}")


def _says_hardcoded(text: str) -> bool:
    if "hardcoded" in text.lower():
        return True
    for run in B64_RUN.findall(text):
        try:
            if b"hardcoded" in base64.b64decode(run + "=" * (-len(run) % 4)).lower():
                return True
        except (binascii.Error, ValueError):
            continue
    return False


def _test_tables(test_src: str) -> tuple[list[tuple[str, int]], list[tuple[str, list[str]]]]:
    """The (file, count) table of test_detection_by_value and the (file, keys) table of test_detection_by_key."""
    tree = ast.parse(test_src)
    by_value: list[tuple[str, int]] = []
    by_key: list[tuple[str, list[str]]] = []
    for node in tree.body:
        names = ("test_detection_by_value", "test_detection_by_key")
        if not isinstance(node, ast.FunctionDef) or node.name not in names:
            continue
        for deco in node.decorator_list:
            if isinstance(deco, ast.Call) and len(deco.args) == 2:
                table = ast.literal_eval(deco.args[1])
                if node.name == "test_detection_by_value":
                    by_value = [(f, int(n)) for f, n in table]
                else:
                    by_key = [(f, list(keys)) for f, keys in table]
    return by_value, by_key


def whispers_rows(root: Path) -> list[dict[str, object]]:
    from whispers import core  # type: ignore[import-not-found]
    from whispers.cli import parse_args  # type: ignore[import-not-found]

    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    commit = commit.stdout.strip()[:7]
    by_value, by_key = _test_tables((root / "tests/unit/test_secrets.py").read_text(encoding="utf-8"))
    jobs: list[tuple[str, str | None, object]] = [(f, "detection_by_value.yml", n) for f, n in by_value]
    jobs += [(f, None, keys) for f, keys in by_key]
    positives: dict[tuple[str, int], str] = {}
    reported: dict[str, set[int]] = {}
    zero_files: set[str] = set()
    unplaced: set[str] = {f for f, _ in by_key}  # a file whose findings are not all on their line gives no negatives
    for name, config, expect in jobs:
        path = root / "tests/fixtures" / name
        args = parse_args([str(path)])
        if config:
            args.config = core.load_config(str(root / "tests/configs" / config))
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        if expect == 0:
            zero_files.add(name)
        for secret in core.run(args):
            value = str(secret.value)
            if 0 < secret.line <= len(lines):
                reported.setdefault(name, set()).add(secret.line)
            if secret.message in NOT_SECRETS:
                continue
            accepted = (
                (value.isnumeric() or _says_hardcoded(value))
                if config
                else isinstance(expect, list) and secret.key in expect
            )
            if not (0 < secret.line <= len(lines)) or value[:40] not in lines[secret.line - 1]:
                unplaced.add(name)
                continue
            if not accepted:
                continue
            positives.setdefault((name, secret.line), str(secret.message))
    rows: list[dict[str, object]] = []
    for name in sorted({f for f, _, _ in jobs}):
        lines = (root / "tests/fixtures" / name).read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, 1):
            text = line.strip()
            family = positives.get((name, number))
            if family is not None:
                label = 1
            elif (
                name in unplaced
                or number in reported.get(name, set())
                or not VALUE_LINE.search(text)
                or _says_hardcoded(text)
                or len(text) < 5
            ):
                continue
            else:
                label, family = 0, "none"
            rows.append(
                {
                    "id": f"whispers.{name}:{number}",
                    "text": text,
                    "label": label,
                    "family": family.lower().replace(" ", "_"),
                    "source": "whispers-test-fixtures" + ("-zero-count" if name in zero_files else ""),
                    "license": "Apache-2.0",
                    "origin": f"Skyscanner/whispers@{commit}:tests/fixtures/{name}#L{number}",
                }
            )
    return rows


def ripsecrets_rows(git_dir: str) -> list[dict[str, object]]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "--git-dir", git_dir, *args], check=True, capture_output=True, text=True).stdout

    commit = git("rev-parse", "HEAD").strip()[:7]
    rows: list[dict[str, object]] = []
    for path in sorted(git("ls-tree", "-r", "--name-only", "HEAD", "test").split()):
        parts = path.split("/")
        content = git("show", f"HEAD:{path}")
        base = {"source": "ripsecrets-tests", "license": "MIT"}
        if parts[1] == "one_per_file":
            rows.append(
                {
                    "id": f"ripsecrets.{parts[2]}",
                    "text": content,
                    "label": 1,
                    "family": parts[2],
                    **base,
                    "origin": f"sirwart/ripsecrets@{commit}:{path}",
                }
            )
            continue
        if parts[1] not in ("one_per_line", "none"):
            continue
        label = 1 if parts[1] == "one_per_line" else 0
        family = parts[2] if label else "none"
        for number, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            rows.append(
                {
                    "id": f"ripsecrets.{parts[-1]}:{number}",
                    "text": line,
                    "label": label,
                    "family": family,
                    **base,
                    "origin": f"sirwart/ripsecrets@{commit}:{path}#L{number}",
                }
            )
    return rows


def main(whispers_root: str, ripsecrets_git_dir: str) -> None:
    for row in [*whispers_rows(Path(whispers_root)), *ripsecrets_rows(ripsecrets_git_dir)]:
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
