"""Benchmark of the sensitive-data gate and the task classifier: ``python -m promptship.bench gate``.

Prints
- gate latency (median/p99) on ~200-byte and ~5 KB prompts, per layer (rules, detect-secrets, presidio) and
  for the whole stack, with each layer's ratio to promptship's own rules measured in the same run;
- recall, precision and false-positive rate on ../shared/eval/ (secrets, pii, benign), per subtype where a
  subtype is missed, with what each layer finds on its own;
- the task classifier's confusion matrix on task_class.jsonl and promptship's hand-labelled prompts.
"""

from __future__ import annotations

import json
import os
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
TARGETS = {"secret_recall": 0.99, "pii_recall": 0.97, "benign_fp": 0.02, "p99_5kb_ms": 20.0}

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
        flagged = any(per_layer.values())
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
