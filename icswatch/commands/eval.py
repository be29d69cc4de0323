"""``icswatch eval``: measure ML models (and other detectors) on labeled captures, honestly.

Time-ordered: models learn from ``--train`` captures (normal traffic, oldest first) and are scored on
``--test`` captures that come later; or, with ``--split F``, on the last ``1 - F`` of the windows of
the ``--train`` captures. Labels: per-packet CSV, packet index lists (IPAL backtrack files are found
next to their capture), or time ranges (JSON or CSV). See docs/ml.md for the method and the metrics.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    from detectors.ml.kinds import DEFAULT_KIND

    p = sub.add_parser(
        "eval",
        help="evaluate ML models and detectors on labeled captures (time-ordered)",
        description="Fit models on normal --train captures, score later --test captures, and report "
        "ROC-AUC, PR-AUC, precision/recall/F1 at the threshold, attacks caught (any alerting window that "
        "overlaps the attack), time to detect and false alerts per hour, side by side.",
    )
    p.add_argument("--train", nargs="+", required=True, metavar="CAPTURE|DIR", help="normal traffic, oldest first")
    p.add_argument("--test", nargs="+", default=[], metavar="CAPTURE|DIR", help="later captures to score")
    p.add_argument("--split", type=float, default=None, metavar="F",
                   help="no --test: train on the first F of the --train windows, test on the rest")  # fmt: skip
    p.add_argument("--labels", action="append", default=[], metavar="FILE|CAPTURE=FILE",
                   help="label file (JSON time ranges for all captures, or CAPTURE=FILE); <capture>.backtrack.txt, "
                   ".labels.csv, .labels.txt next to a capture are found by themselves")  # fmt: skip
    p.add_argument(
        "--original",
        metavar="CAPTURE",
        help="the unmanipulated trace backtrack indices refer to (default: test.pcap beside)",
    )
    p.add_argument("--models", default=f"{DEFAULT_KIND},lof,ecod,iforest,baseline",
                   help="comma-separated rows: iforest, ecod, copod, hbos, lof, knn, mlpae, ensemble, "
                   "ensemble:a+b, baseline (default %(default)s)")  # fmt: skip
    p.add_argument("--model-file", action="append", default=[], metavar="MODEL.joblib",
                   help="also evaluate a saved model (its own window, threshold and training state)")  # fmt: skip
    p.add_argument("--window", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--hop", type=float, default=None, metavar="SECONDS")
    p.add_argument("--quantile", type=float, default=0.995)
    p.add_argument(
        "--cooldown", type=float, default=None, metavar="SECONDS", help="alert episode gap (default: the detector's)"
    )
    p.add_argument("--group", metavar="REGEX", help="pool test captures whose names give the same group(1)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON ('-' for stdout)")
    p.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown ('-' for stdout)")
    p.add_argument("-c", "--config", help="YAML configuration file (sensor limits)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-q", "--quiet", action="store_true", help="no tables")
    p.set_defaults(func=run)


def parse_models(text: str, quantile: float) -> tuple[dict[str, Any], list[str]]:
    """``"ensemble,lof,ensemble:lof+knn,baseline"`` -> ({row name: ModelSpec}, [comparator names])."""
    from detectors.ml.evaluation import COMPARATORS
    from detectors.ml.models import ModelSpec

    specs: dict[str, Any] = {}
    comps: list[str] = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        if raw in COMPARATORS:
            comps.append(raw)
        elif raw.startswith("ensemble:"):
            specs[raw] = ModelSpec(kind="ensemble", members=tuple(raw.split(":", 1)[1].split("+")), quantile=quantile)
        else:
            specs[raw] = ModelSpec(kind=raw, quantile=quantile)
    return specs, comps


def group_runs(runs: list[Any], pattern: str | None) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    rx = re.compile(pattern) if pattern else None
    for r in runs:
        name = r.name
        if rx is not None:
            m = rx.search(name)
            name = m.group(1) if m and m.groups() else (m.group(0) if m else name)
        groups.setdefault(name, []).append(r)
    if len(runs) > 1:
        groups["all test captures"] = list(runs)
    return groups


def _f(x: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def print_tables(console: Console, results: list[Any], groups: list[str]) -> None:
    for g in groups:
        rows = [m for m in results if m.test == g]
        if not rows:
            continue
        first = rows[0]
        t = Table(
            title=f"{g}: {first.windows:,} windows ({first.positives:,} with attack events), {first.attacks} attack(s), "
            f"{first.hours * 60:.1f} min",
            title_justify="left",
        )
        for col, just in (("model", "left"), ("ROC-AUC", "right"), ("PR-AUC", "right"), ("precision", "right"),
                          ("recall", "right"), ("F1", "right"), ("caught", "right"), ("by chance", "right"),
                          ("TTD median", "right"), ("alerts", "right"), ("false/h", "right")):  # fmt: skip
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        for m in rows:
            caught = f"{m.caught}/{m.attacks}" if m.attacks else "-"
            if m.unobserved:
                caught += f" ({m.unobserved} unobs.)"
            t.add_row(
                m.model,
                _f(m.roc_auc),
                _f(m.pr_auc),
                _f(m.precision),
                _f(m.recall),
                _f(m.f1),
                caught,
                _f(m.chance_caught, "{:.1f}") if m.attacks else "-",
                _f(m.ttd_median, "{:.1f} s"),
                f"{m.alerts} ({m.related_alerts} rel.)" if m.related_alerts else str(m.alerts),
                _f(m.false_alerts_per_hour, "{:.2f}"),
            )
        console.print(t)


def markdown(results: list[Any], groups: list[str]) -> str:
    """The same figures as the tables, as one Markdown table (for docs)."""
    lines = [
        "| test | model | windows (pos) | ROC-AUC | PR-AUC | precision | recall | F1 | caught | chance | TTD median | alerts (related) | false/h |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        for m in (r for r in results if r.test == g):
            lines.append(
                f"| {g} | {m.model} | {m.windows} ({m.positives}) | {_f(m.roc_auc)} | {_f(m.pr_auc)} | {_f(m.precision)} | "
                f"{_f(m.recall)} | {_f(m.f1)} | {f'{m.caught}/{m.attacks}' if m.attacks else '-'} | "
                f"{_f(m.chance_caught, '{:.1f}') if m.attacks else '-'} | {_f(m.ttd_median, '{:.1f} s')} | "
                f"{m.alerts} ({m.related_alerts}) | {_f(m.false_alerts_per_hour, '{:.2f}')} |"
            )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from detectors.ml.artifact import ArtifactError, load
    from detectors.ml.dataset import replay_each
    from detectors.ml.detector import DEFAULT_COOLDOWN
    from detectors.ml.evaluation import COMPARATORS, ComparatorUnavailable, prepare, run_models, score_report
    from detectors.ml.features import WindowConfig
    from detectors.ml.labels import LabelError, labels_for
    from icswatch.config import load_config
    from icswatch.inputs import expand

    err = Console(stderr=True, soft_wrap=True)
    if not args.test and args.split is None:
        err.print("[red]icswatch eval:[/] give --test captures, or --split F to test on the later windows of --train")
        return EXIT_USAGE
    if args.split is not None and not 0.1 <= args.split <= 0.95:
        err.print("[red]icswatch eval:[/] --split must be between 0.1 and 0.95")
        return EXIT_USAGE
    try:
        window = WindowConfig(window=args.window, hop=args.hop)
        specs, comp_names = parse_models(args.models, args.quantile)
    except ValueError as exc:
        err.print(f"[red]icswatch eval:[/] {exc}")
        return EXIT_USAGE
    cooldown = DEFAULT_COOLDOWN if args.cooldown is None else args.cooldown
    cfg = load_config(args.config, list(args.set))
    train, p1 = expand(args.train)
    test, p2 = expand(args.test) if args.test else ([], [])
    for p in p1 + p2:
        err.print(f"[red]icswatch eval:[/] {p}")
    if not train or (args.test and not test):
        err.print("[red]icswatch eval:[/] no captures")
        return EXIT_FAIL
    train_paths = [str(c.path) for c in train]
    test_paths = [str(c.path) for c in test]
    try:
        labels = {p: labels_for(p, args.labels, args.original) for p in train_paths + test_paths}
    except LabelError as exc:
        err.print(f"[red]icswatch eval:[/] {exc}")
        return EXIT_USAGE
    comparators: dict[str, Any] = {}
    problems: list[str] = []
    for name in comp_names:
        try:
            comparators[name] = COMPARATORS[name]()
        except ComparatorUnavailable as exc:
            problems.append(f"{name}: not evaluated: {exc}")
    t0 = time.perf_counter()
    X, dropped, test_runs, _, train_runs = prepare(
        train_paths, test_paths, labels, window, args.split, cfg.sensor, keep_events=bool(comparators)
    )
    t_features = time.perf_counter() - t0
    groups = group_runs(test_runs, args.group)
    try:
        fitted, results, comp_problems = run_models(
            X, test_runs, specs, groups, cooldown, comparators, train_runs, config=window
        )
    except ValueError as exc:
        err.print(f"[red]icswatch eval:[/] {exc}")
        return EXIT_FAIL
    problems += comp_problems
    # saved models: their own window, threshold and training state
    for path in args.model_file:
        try:
            model = load(path)
        except ArtifactError as exc:
            problems.append(str(exc))
            continue
        runs = replay_each(test_paths, model.window, model.state, labels, cfg.sensor)
        mg = group_runs(runs, args.group)
        results += _saved_model_rows(Path(path).name, model, mg, cooldown, score_report)
    report = {
        "method": {
            "split": "time-ordered"
            + (f", first {args.split:g} of the windows" if args.split else ", separate captures"),
            "train": [Path(p).name for p in train_paths],
            "test": [Path(p).name for p in test_paths] or "the later windows of the training captures",
            "window": window.as_dict(),
            "quantile": args.quantile,
            "cooldown": cooldown,
            "train_windows": len(X),
            "train_windows_dropped_labeled": dropped,
            "feature_seconds": round(t_features, 2),
        },
        "thresholds": {k: f.threshold for k, f in fitted.items()},
        "results": [m.as_dict() for m in results],
        "problems": problems,
    }
    if args.json:
        text = json.dumps(report, indent=1)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    if args.markdown:
        text = markdown(results, list(groups))
        if args.markdown == "-":
            sys.stdout.write(text)
        else:
            Path(args.markdown).write_text(text, encoding="utf-8")
    if not args.quiet and "-" not in (args.json, args.markdown):
        console = Console()
        if not console.is_terminal:  # piped or captured: wide enough for the whole table
            console = Console(width=170)
        console.print(
            f"[bold]Trained on[/] {', '.join(Path(p).name for p in train_paths)}: {len(X):,} windows"
            + (f" ({dropped} labeled windows left out)" if dropped else "")
        )
        print_tables(console, results, list(groups))
        for p in problems:
            err.print(f"[yellow]icswatch eval:[/] {p}")
    return EXIT_OK


def _saved_model_rows(
    name: str, model: Any, groups: dict[str, list[Any]], cooldown: float, score_report: Any
) -> list[Any]:
    import numpy as np

    from detectors.ml.detector import Explainer, episode_key

    explainer = Explainer(model.fitted, model.window)
    out = []
    cache: dict[int, tuple[Any, Any, list[Any]]] = {}
    for r in {id(r): r for rs in groups.values() for r in rs}.values():
        Xr = r.matrix()
        s = model.fitted.score(Xr)
        fl = (s > model.threshold) & ~np.array([w.warming for w in r.windows], dtype=bool)
        keys: list[Any] = [w.key for w in r.windows]
        hit = np.flatnonzero(fl)
        for i, t in zip(hit, explainer.techniques(Xr[hit])):
            keys[i] = episode_key(r.windows[i].key, t)
        cache[id(r)] = (s, fl, keys)
    for g, runs in groups.items():
        out.append(
            score_report(
                f"{name} ({model.kind})",
                g,
                runs,
                [cache[id(r)][1] for r in runs],
                [cache[id(r)][0] for r in runs],
                model.threshold,
                cooldown,
                [cache[id(r)][2] for r in runs],
            )
        )
    return out
