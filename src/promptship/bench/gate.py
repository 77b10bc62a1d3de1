"""Benchmark of the sensitive-data gate and the task classifier: ``python -m promptship.bench gate``.

Prints
- gate latency (median/p99) on ~200-byte and ~5 KB prompts, per layer (rules, detect-secrets, presidio) and
  for the whole stack, with each layer's ratio to promptship's own rules measured in the same run;
- secrets recall per provider family on the held-out split of ../shared/eval (tests/data/gate_eval_split.json,
  fixed before tuning) and on external fixtures (tests/data/secret_fixtures/: Nosey Parker's examples and the
  fresh whispers/ripsecrets set, with its negatives' false-positive rate), the hard-negative rate, and
  promptship's own plain-language credential examples;
- recall, precision and false-positive rate on ../shared/eval/ (secrets, pii, benign), per subtype where a
  subtype is missed, with what each layer finds on its own;
- the task classifier's confusion matrix on task_class.jsonl and promptship's hand-labelled prompts.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptship.bench.stats import percentile

REPO_ROOT = Path(__file__).resolve().parents[3]
EVAL_DIR = Path(os.environ.get("PROMPTSHIP_EVAL_DIR", REPO_ROOT.parent / "shared" / "eval"))
OWN_TASK_FILES = ("task_class_tests_docs.jsonl", "task_class_holdout.jsonl", "task_class_holdout2.jsonl")
TARGETS = {"secret_recall": 0.99, "pii_recall": 0.97, "benign_fp": 0.02, "p99_5kb_ms": 20.0, "hard_negative": 0.10}

# Structured personal data: what the gate promises to find (names/addresses are best effort, not counted).
STRUCTURED_PII = "structured"


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_gate_eval(eval_dir: Path = EVAL_DIR) -> list[dict[str, Any]]:
    """Rows of secrets/pii/benign with a ``group`` key: secret, pii, benign, pii-negative, hard-negative."""
    rows: list[dict[str, Any]] = []
    for name in ("secrets", "pii", "benign"):
        for row in load_jsonl(eval_dir / f"{name}.jsonl"):
            if row["label"] == 1:
                row["group"] = row["category"]
            elif row.get("hard_negative"):
                row["group"] = "hard-negative"
            elif row["category"] == "benign":
                row["group"] = "benign"
            else:
                row["group"] = "pii-negative"  # names/addresses/none: not sensitive as the source labels it
            rows.append(row)
    return rows


def load_task_eval(eval_dir: Path = EVAL_DIR) -> list[dict[str, Any]]:
    rows = load_jsonl(eval_dir / "task_class.jsonl")
    for name in OWN_TASK_FILES:
        path = REPO_ROOT / "tests" / "data" / name
        if path.exists():
            rows.extend(load_jsonl(path))
    return rows


def _timed(fn: Callable[[str], object], texts: list[str], repeat: int) -> dict[str, float]:
    """Wall-clock and CPU time (ms) per call. On a shared machine the wall-clock p99 mostly measures the
    scheduler; the CPU time is what a call costs this process."""
    wall: list[float] = []
    cpu: list[float] = []
    for i in range(repeat):
        text = texts[i % len(texts)]
        t0, c0 = time.perf_counter(), time.thread_time()
        fn(text)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    return {
        "median": statistics.median(wall),
        "p99": percentile(wall, 99),
        "cpu_median": statistics.median(cpu),
        "cpu_p99": percentile(cpu, 99),
    }


def _prompts(rows: list[dict[str, Any]], size: int, count: int) -> list[str]:
    """Benign-looking prompts of about ``size`` bytes built from the benign eval texts (plus one secret)."""
    pool = [r["text"] for r in rows if r["group"] == "benign"]
    out: list[str] = []
    i = 0
    while len(out) < count:
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < size:
            parts.append(pool[i % len(pool)])
            i += 1
        out.append("\n".join(parts)[:size])
    return out


def latency(scanner: Any, rows: list[dict[str, Any]], engine: Any = None) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for label, size, repeat in (("200B", 200, 300), ("5KB", 5000, 120)):
        texts = _prompts(rows, size, 40)
        for layer in scanner.layers:
            scanner.scan_layer(layer, texts[0])  # warm up
            results[f"{label} {layer}"] = _timed(lambda t, layer=layer: scanner.scan_layer(layer, t), texts, repeat)
        results[f"{label} all"] = _timed(scanner.scan, texts, repeat)
        if engine is not None:
            engine.scan_layer("presidio", texts[0])
            results[f"{label} presidio-engine"] = _timed(
                lambda t: engine.scan_layer("presidio", t), texts, max(20, repeat // 4)
            )
    return results


def conversation(rows: list[dict[str, Any]], turns: int = 30) -> None:
    """An agent re-sends its whole conversation with each call: scan_messages over a growing history,
    without and with the scanner's digest cache (each message ~1 KB)."""
    from promptship.adapters.detectors import SensitiveDataScanner

    pieces = _prompts(rows, 1000, turns)
    totals: dict[str, float] = {}
    for label, size in (("no cache", 0), ("cache", 4096)):
        scanner = SensitiveDataScanner(cache_size=size)
        history: list[dict[str, str]] = [{"role": "system", "content": "You are a careful engineer."}]
        c0 = time.thread_time()
        for i, piece in enumerate(pieces):
            history.append({"role": "user" if i % 2 == 0 else "tool", "content": piece})
            scanner.scan_messages(history)
        totals[label] = (time.thread_time() - c0) * 1000
        scanner.close()
    print(
        f"   agent conversation of {turns} calls (~1 KB added per call, whole history scanned each call): "
        f"CPU {totals['no cache']:.0f} ms without the digest cache, {totals['cache']:.0f} ms with it "
        f"(x{totals['no cache'] / max(totals['cache'], 1e-9):.1f})"
    )


def quality(scanner: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall per group and subtype, FP per negative group, what each layer finds alone."""
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    subtype_hits: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    layer_hits: Counter[tuple[str, str]] = Counter()
    for row in rows:
        per_layer = {layer: bool(scanner.scan_layer(layer, row["text"])) for layer in scanner.layers}
        flagged = scanner.scan(row["text"]).sensitive  # the layers together, with the scanner's own filters
        group = row["group"]
        hits[group][0] += flagged
        hits[group][1] += 1
        if group == "pii" and row["subtype"] != "other-pii":
            hits[STRUCTURED_PII][0] += flagged
            hits[STRUCTURED_PII][1] += 1
        subtype_hits[(group, row["subtype"])][0] += flagged
        subtype_hits[(group, row["subtype"])][1] += 1
        for layer, hit in per_layer.items():
            layer_hits[(group, layer)] += hit
    return {"groups": dict(hits), "subtypes": dict(subtype_hits), "layers": layer_hits}


# --- held-out split, provider families, external fixtures -------------------------------------------------

SPLIT_FILE = REPO_ROOT / "tests" / "data" / "gate_eval_split.json"
FIXTURES = REPO_ROOT / "tests" / "data" / "secret_fixtures" / "noseyparker.jsonl"
# whispers' and ripsecrets' test fixtures, labelled as their tests label them; built before any rule was written
# against the Nosey Parker families (tests/data/secret_fixtures/README.md).
FRESH = REPO_ROOT / "tests" / "data" / "secret_fixtures" / "fresh.jsonl"
PLAIN_FILE = REPO_ROOT / "tests" / "data" / "plain_credentials.jsonl"
# promptship's own labelled credentials in code and config syntaxes (setters, login calls, env pairs, Dockerfile
# ENV, SQL IDENTIFIED BY, …), each row naming where its syntax is documented; committed before the rules for them.
CODE_FILE = REPO_ROOT / "tests" / "data" / "code_credentials.jsonl"
FAMILY_GOAL = 0.9
# Placeholders as issue 17 names them (`AKIAIOSFODNN7EXAMPLE`, `xxxx`, `<your-token>`): some sources label rows
# made of them secrets (a scanner's regex test), which the gate leaves alone by design; the bench prints the
# families with and without them (the same definition as tests/gateway/test_gate_scanner.py).
ISSUE_PLACEHOLDER = re.compile(r"EXAMPLE|([xXzZ*0a])\1{5,}|<[a-z_ -]*(token|key|secret)[a-z_ -]*>", re.IGNORECASE)
# Several names of one provider; subtype words that name a kind of credential, not its provider.
_FAMILY_ALIASES = {
    "amazon": "aws",
    "softlayer": "ibm",
    "cloudant": "ibm",
    "jfrog": "artifactory",
    "gcp": "google",
    "firebase": "google",
    "microsoft": "azure",
    "teams": "azure",
    "keyword": "generic",
    "curl": "generic",
    "basic": "generic",
    "generic": "generic",
    "private": "private_key",
    "pem": "private_key",
    "hugging": "huggingface",
    "newrelic": "newrelic",
    "new": "newrelic",
    "one": "1password",
    "onepassword": "1password",
    "planet": "planetscale",
    "fly": "flyio",
    "flyio": "flyio",
    "openshift": "openshift",
    "twitter": "twitter",
    "x": "twitter",
}
_KIND_WORDS = frozenset(
    "api access token key secret client id oauth pat personal bot user app legacy webhook url config configuration "
    "refresh organization org admin service account auth password private public live test sensitive tf v2 "
    "incoming mail runner registration routable pipeline trigger deploy feature flag fine grained session "
    "workspace identity reference short long lived credential credentials".split()
)


def family_of(subtype: str) -> str:
    """The provider family of an eval subtype ('SlackLegacyBotToken' -> 'slack', 'ibm_cos_hmac' -> 'ibm')."""
    words = [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", subtype)]
    if not words:
        return subtype.lower()
    if words[0] in _FAMILY_ALIASES:
        return _FAMILY_ALIASES[words[0]]
    kept = [w for w in words if w not in _KIND_WORDS]
    return "".join(kept[:2]) if kept else words[0]


def held_out_ids() -> frozenset[str]:
    return frozenset(json.loads(SPLIT_FILE.read_text(encoding="utf-8"))["held_out"])


def family_recall(
    scanner: Any, rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], str]
) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        counts = out[key(row)]
        counts[0] += scanner.scan(row["text"]).sensitive
        counts[1] += 1
    return dict(out)


def _print_families(title: str, fams: dict[str, list[int]]) -> None:
    hit = sum(h for h, _ in fams.values())
    n = sum(t for _, t in fams.values())
    below = sorted((f for f, (h, t) in fams.items() if h / t < FAMILY_GOAL), key=lambda f: fams[f][0] / fams[f][1])
    print(
        f"   {title}: recall {hit}/{n} = {hit / max(1, n):.3f}; {len(fams)} families, "
        f"{len(fams) - len(below)} at >= {FAMILY_GOAL} ({len(below)} below)"
    )
    print("     " + "  ".join(f"{f} {h}/{t}" for f, (h, t) in sorted(fams.items())))
    if below:
        print("     below goal: " + ", ".join(f"{f} {fams[f][0]}/{fams[f][1]}" for f in below))


def honest_eval(scanner: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Secrets recall per provider family on the held-out split (never tuned on) and on the external fixtures
    (another scanner's examples, never read while writing rules); hard negatives and benign FP per split;
    promptship's own plain-language credential examples."""
    held = held_out_ids()
    figures: dict[str, float] = {}
    for split in ("held_out", "tune"):
        part = [r for r in rows if (r["id"] in held) == (split == "held_out")]
        secrets = [r for r in part if r["group"] == "secret"]
        fams = family_recall(scanner, secrets, lambda r: family_of(r["subtype"]))
        if split == "held_out":
            _print_families("held-out split, secrets by provider family", fams)
            real = [r for r in secrets if not ISSUE_PLACEHOLDER.search(r["text"])]
            _print_families(
                f"held-out split, the same without the {len(secrets) - len(real)} rows whose text holds a placeholder "
                "by the issue's definition (EXAMPLE, a run of x/z/*/0, <your-token>) that the source labels a secret",
                family_recall(scanner, real, lambda r: family_of(r["subtype"])),
            )
        hn = [r for r in part if r["group"] == "hard-negative"]
        hn_results = [scanner.scan(r["text"]) for r in hn]
        hn_hit = sum(res.sensitive for res in hn_results)
        by_layer = Counter(layer for res in hn_results for layer in {f.detector for f in res.findings})
        alone = Counter(
            next(iter(layers)) for res in hn_results if len(layers := {f.detector for f in res.findings}) == 1
        )
        ben = [r for r in part if r["group"] == "benign"]
        ben_hit = sum(scanner.scan(r["text"]).sensitive for r in ben)
        rec = sum(h for h, _ in fams.values()) / max(1, sum(t for _, t in fams.values()))
        print(
            f"   {split:<8} secrets recall {rec:.3f}; hard negatives flagged {hn_hit}/{len(hn)} = "
            f"{hn_hit / max(1, len(hn)):.3f}; benign FP {ben_hit}/{len(ben)}"
        )
        placeholder = [ISSUE_PLACEHOLDER.search(r["text"]) is not None for r in hn]
        ph_hit = sum(res.sensitive for res, ph in zip(hn_results, placeholder, strict=True) if ph)
        ph_n = sum(placeholder)
        print(
            f"   {split:<8} hard negatives holding a placeholder by the issue's definition flagged {ph_hit}/{ph_n} = "
            f"{ph_hit / max(1, ph_n):.3f}; the others (other scanners' near misses: real-shaped values their rules "
            f"reject by length, checksum or context) {hn_hit - ph_hit}/{len(hn) - ph_n} = "
            f"{(hn_hit - ph_hit) / max(1, len(hn) - ph_n):.3f}"
        )
        print(
            f"   {split:<8} hard negatives flagged, rows per layer (counts only): "
            + ", ".join(f"{layer} {n} ({alone[layer]} by it alone)" for layer, n in by_layer.most_common())
        )
        figures[f"{split}_recall"] = rec
        figures[f"{split}_hard_negative"] = hn_hit / max(1, len(hn))
    if FIXTURES.exists():
        fixtures = load_jsonl(FIXTURES)
        fams = family_recall(scanner, fixtures, lambda r: r["family"])
        _print_families(f"external fixtures ({FIXTURES.name}, Apache-2.0)", fams)
        figures["fixtures_recall"] = sum(h for h, _ in fams.values()) / max(1, len(fixtures))
    if FRESH.exists():
        figures.update(fresh_eval(scanner))
    for path, what in ((PLAIN_FILE, "plain-language credentials"), (CODE_FILE, "credentials in code and config")):
        if not path.exists():
            continue
        for split in ("tune", "held_out"):
            part = [r for r in load_jsonl(path) if r["split"] == split]
            pos = [r for r in part if r["label"] == 1]
            neg = [r for r in part if r["label"] == 0]
            tp = sum(scanner.scan(r["text"]).sensitive for r in pos)
            fp = sum(scanner.scan(r["text"]).sensitive for r in neg)
            print(f"   {what} ({split}): recall {tp}/{len(pos)}, false positives {fp}/{len(neg)}")
    return figures


def fresh_eval(scanner: Any, path: Path = FRESH) -> dict[str, float]:
    """The fresh outside set: recall per family on its positives (per source, then all) and the share of its
    negatives flagged (each source's own "must not be reported" lines)."""
    rows = load_jsonl(path)
    figures: dict[str, float] = {}
    pos = [r for r in rows if r["label"] == 1]
    hit = 0
    for source in sorted({r["source"] for r in pos}):
        fams = family_recall(scanner, [r for r in pos if r["source"] == source], lambda r: r["family"])
        _print_families(f"fresh set {source} ({path.name})", fams)
        hit += sum(h for h, _ in fams.values())
    figures["fresh_recall"] = hit / max(1, len(pos))
    print(f"   fresh set recall (all sources) {hit}/{len(pos)} = {figures['fresh_recall']:.3f}")
    neg = [r for r in rows if r["label"] == 0]
    flagged = [scanner.scan(r["text"]).sensitive for r in neg]  # each negative scanned once
    for source in sorted({r["source"] for r in neg}):
        mine = [f for r, f in zip(neg, flagged, strict=True) if r["source"] == source]
        print(f"   fresh set {source} negatives flagged {sum(mine)}/{len(mine)} = {sum(mine) / max(1, len(mine)):.3f}")
    figures["fresh_fp"] = sum(flagged) / max(1, len(neg))
    print(f"   fresh set negatives flagged (all sources) {sum(flagged)}/{len(neg)} = {figures['fresh_fp']:.3f}")
    return figures


def confusion(rows: list[dict[str, Any]]) -> tuple[list[str], dict[tuple[str, str], int], float]:
    from promptship.domain.routing import EVAL_CATEGORY_TO_CLASS, TASK_CLASSES, classify_task

    matrix: Counter[tuple[str, str]] = Counter()
    for row in rows:
        expected = EVAL_CATEGORY_TO_CLASS[row["task_label"]]
        got, _ = classify_task(row["text"])
        matrix[(expected, got)] += 1
    total = sum(matrix.values())
    correct = sum(v for (e, g), v in matrix.items() if e == g)
    return list(TASK_CLASSES), dict(matrix), correct / total if total else float("nan")


def run() -> None:
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    from promptship.adapters.detectors import SensitiveDataScanner

    t0 = time.perf_counter()
    scanner = SensitiveDataScanner(cache_size=0)  # latency of real scans, not of cache hits
    print(f"   scanner built in {(time.perf_counter() - t0) * 1000:.0f} ms (layers: {', '.join(scanner.layers)})")
    rows = load_gate_eval()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"   -- gate latency per call (ms): wall clock and CPU time (load average {load:.1f} on "
        f"{os.cpu_count()} CPUs); ratio = CPU median / CPU median of promptship's rules on the same prompts"
    )
    engine = SensitiveDataScanner(layers=("presidio",), presidio_mode="engine")
    lat = latency(scanner, rows, engine)
    for size in ("200B", "5KB"):
        base = lat[f"{size} rules"]["cpu_median"] or 1e-9
        for layer in (*scanner.layers, "all", "presidio-engine"):
            m = lat.get(f"{size} {layer}")
            if m is None:
                continue
            print(
                f"   {size:>4} {layer:<15} wall median {m['median']:7.2f} p99 {m['p99']:7.2f} | "
                f"cpu median {m['cpu_median']:7.2f} p99 {m['cpu_p99']:7.2f} | ratio x{m['cpu_median'] / base:6.1f}"
            )
    print("   (presidio-engine: presidio's AnalyzerEngine on spacy.blank, the baseline the direct recognizers replace)")
    cached = SensitiveDataScanner()  # the gateway's scanner: texts remembered by digest
    repeated = _prompts(rows, 5000, 1)[0]
    cached.scan(repeated)
    hit = _timed(cached.scan, [repeated], 120)
    cached.close()
    print(
        f"   5KB all, cache hit (the same text again: a digest lookup, not a scan) "
        f"wall median {hit['median']:7.3f} p99 {hit['p99']:7.3f}"
    )
    p99_5kb = lat["5KB all"]["p99"]
    cpu_p99_5kb = lat["5KB all"]["cpu_p99"]

    conversation(rows)

    print(f"   -- gate quality on {EVAL_DIR} ({len(rows)} rows)")
    q = quality(scanner, rows)
    groups = q["groups"]

    def rate(group: str) -> float:
        hit, n = groups.get(group, [0, 0])
        return hit / n if n else float("nan")

    for group in ("secret", "pii", STRUCTURED_PII):
        hit, n = groups[group]
        alone = ", ".join(
            f"{layer} {q['layers'][(group, layer)]}" for layer in scanner.layers if group != STRUCTURED_PII
        )
        print(f"   recall {group:<16} {hit:5d}/{n:<5d} = {hit / n:.3f}" + (f"   (alone: {alone})" if alone else ""))
    for group in ("benign", "pii-negative", "hard-negative"):
        hit, n = groups[group]
        alone = ", ".join(f"{layer} {q['layers'][(group, layer)]}" for layer in scanner.layers)
        print(f"   false positives {group:<14} {hit:4d}/{n:<4d} = {hit / n:.3f}   (by layer: {alone})")
    tp = groups["secret"][0] + groups["pii"][0]
    fp_all = groups["benign"][0] + groups["pii-negative"][0]
    print(
        f"   precision (hard negatives excluded) {tp / max(1, tp + fp_all):.3f}; "
        f"with hard negatives {tp / max(1, tp + fp_all + groups['hard-negative'][0]):.3f}"
    )
    print("   -- honest figures: held-out split, external fixtures, hard negatives")
    honest = honest_eval(scanner, rows)
    print("   recall by subtype (only subtypes with a miss):")
    for (group, subtype), (hit, n) in sorted(q["subtypes"].items()):
        if group in ("secret", "pii") and hit < n:
            print(f"     {group}:{subtype:<40} {hit}/{n}")

    print("   -- task classifier: confusion matrix (rows = expected, columns = predicted)")
    classes, matrix, accuracy = confusion(load_task_eval())
    print("   " + " " * 14 + "".join(f"{c[:12]:>13}" for c in classes))
    for expected in classes:
        print(f"   {expected:<14}" + "".join(f"{matrix.get((expected, got), 0):>13}" for got in classes))
    for klass in ("tests", "docs"):
        n = sum(v for (e, _), v in matrix.items() if e == klass)
        ok = matrix.get((klass, klass), 0)
        print(f"   accuracy on {klass}: {ok}/{n} = {ok / max(1, n):.3f}")
    print(f"   overall accuracy {accuracy:.3f}")

    print("   -- targets")
    checks = [
        ("secrets recall", rate("secret"), ">=", TARGETS["secret_recall"]),
        ("structured-PII recall", rate(STRUCTURED_PII), ">=", TARGETS["pii_recall"]),
        ("FP on benign", rate("benign"), "<=", TARGETS["benign_fp"]),
        ("hard negatives flagged", honest["held_out_hard_negative"], "<=", TARGETS["hard_negative"]),
        ("p99 at 5 KB, wall (ms)", p99_5kb, "<=", TARGETS["p99_5kb_ms"]),
        ("p99 at 5 KB, CPU (ms)", cpu_p99_5kb, "<=", TARGETS["p99_5kb_ms"]),
        ("classifier accuracy", accuracy, ">=", 0.9),
    ]
    for name, value, op, target in checks:
        met = value >= target if op == ">=" else value <= target
        print(f"   {name:<24} {value:8.3f}  target {op} {target:<6} {'met' if met else 'NOT MET'}")
    if cpu_p99_5kb > TARGETS["p99_5kb_ms"] or p99_5kb > TARGETS["p99_5kb_ms"]:
        costs = ", ".join(f"{layer} {lat[f'5KB {layer}']['cpu_p99']:.1f}" for layer in scanner.layers)
        print(f"   5 KB CPU p99 by layer (ms): {costs}")
    scanner.close()
