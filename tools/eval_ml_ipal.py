#!/usr/bin/env python3
"""The full IPAL IEC 104 evaluation of the ML models, written into docs/ml.md.

Train on ``train.pcap`` (normal); test on ``test.pcap`` (normal) and every manipulated copy
``{C,R,S}-{rate}-{seed}.pcap`` (C clone, R remove, S swap packets; labels from the ``.backtrack.txt``
files, replayed on the original packet order: detectors/ml/labels.py). The four seeds of each
manipulation type and rate are pooled into one row per model. Everything runs through the same code
as ``icswatch eval`` (detectors/ml/evaluation.py): time-ordered, features computed once, every model
fitted on the same training windows, the baseline detector as a comparison row when it imports.

    python tools/eval_ml_ipal.py                      # default dataset path, writes docs/ml.md tables
    python tools/eval_ml_ipal.py --json out.json --no-write
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASET = REPO.parent / "shared" / "datasets" / "ipal_iec104"
DOC = REPO / "docs" / "ml.md"
BEGIN, END = "<!-- ipal-table:begin -->", "<!-- ipal-table:end -->"
MODELS = "ensemble,lof,ecod,copod,hbos,knn,iforest,mlpae"
KINDS = {"C": "clone", "R": "remove", "S": "swap"}


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def markdown(results: list, groups: list[str], train_windows: int, seconds: float, problems: list[str]) -> str:
    intro = (
        f"Trained on `train.pcap` ({train_windows} windows of 10 s); each row pools the 4 seeds of a "
        "manipulation (`test` is the unmanipulated capture). `pos` = share of test windows holding a "
        "manipulated packet; `caught` = manipulations with at least one anomalous window holding them; "
        "`chance` = what flagging the same number of windows at random would catch; `FA/h` = false alerts "
        f"per hour after the alert gate (computed in {seconds:.0f} s)."
    )
    lines = [
        intro,
        "",
        "| manipulation | model | windows (pos) | ROC-AUC | PR-AUC | precision | recall | F1 | caught | chance | TTD median | FA/h |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        for m in (r for r in results if r.test == g):
            pos = f"{m.windows} ({100 * m.positives / m.windows:.0f}%)" if m.windows else "0"
            caught = f"{m.caught}/{m.attacks}" if m.attacks else "-"
            lines.append(
                f"| {g} | {m.model} | {pos} | {_f(m.roc_auc)} | {_f(m.pr_auc)} | {_f(m.precision)} | "
                f"{_f(m.recall)} | {_f(m.f1)} | {caught} | {_f(m.chance_caught, '{:.0f}') if m.attacks else '-'} | "
                f"{_f(m.ttd_median, '{:.1f} s')} | {_f(m.false_alerts_per_hour, '{:.1f}')} |"
            )
    if problems:
        lines += ["", *(f"- {p}" for p in problems)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from detectors.ml.evaluation import COMPARATORS, ComparatorUnavailable, prepare, run_models
    from detectors.ml.features import WindowConfig
    from detectors.ml.labels import labels_for
    from icswatch.commands.eval import parse_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=DATASET)
    ap.add_argument("--models", default=MODELS + ",baseline")
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--hop", type=float, default=None)
    ap.add_argument("--quantile", type=float, default=0.995)
    ap.add_argument("--json", type=Path, help="also write every figure as JSON")
    ap.add_argument("--no-write", action="store_true", help="print the table, do not touch docs/ml.md")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    d = args.dataset
    if not (d / "train.pcap").exists():
        print(f"no IPAL dataset at {d}", file=sys.stderr)
        return 1
    tests = sorted(
        glob.glob(str(d / "[CRS]-*.pcap")), key=lambda p: (Path(p).name[0], float(Path(p).name.split("-")[1]), p)
    )
    tests.append(str(d / "test.pcap"))
    labels = {t: labels_for(t) for t in tests}
    window = WindowConfig(window=args.window, hop=args.hop)
    specs, comp_names = parse_models(args.models, args.quantile)
    comparators, problems = {}, []
    for name in comp_names:
        try:
            comparators[name] = COMPARATORS[name]()
        except ComparatorUnavailable as exc:
            problems.append(f"{name}: not evaluated: {exc}")
    t0 = time.perf_counter()
    X, _, runs, _, train_runs = prepare([str(d / "train.pcap")], tests, labels, window, keep_events=bool(comparators))
    groups: dict[str, list] = {}
    for r in runs:
        m = re.match(r"([CRS])-([0-9.]+)-\d+\.pcap$", r.name)
        g = f"{KINDS[m.group(1)]} {float(m.group(2)):g}" if m else "test (normal)"
        groups.setdefault(g, []).append(r)
    _, results, more = run_models(X, runs, specs, groups, comparators=comparators, train_runs=train_runs, config=window)
    problems += more
    seconds = time.perf_counter() - t0
    table = markdown(results, list(groups), len(X), seconds, problems)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"train_windows": len(X), "results": [m.as_dict() for m in results],
                                         "problems": problems}, indent=1) + "\n", encoding="utf-8")  # fmt: skip
    if not args.no_write:
        text = DOC.read_text(encoding="utf-8")
        if BEGIN not in text or END not in text:
            print(f"{DOC} has no {BEGIN} ... {END} markers; not written", file=sys.stderr)
            return 1
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        DOC.write_text(head + BEGIN + "\n" + table + "\n" + END + tail, encoding="utf-8")
        print(f"written into {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
