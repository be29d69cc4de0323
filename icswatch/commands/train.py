"""``icswatch train``: learn a model of normal traffic from captures (unsupervised; see docs/ml.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    from detectors.ml.kinds import COMBINE, DEFAULT_ENSEMBLE, DEFAULT_KIND, MODEL_KINDS

    p = sub.add_parser(
        "train",
        help="learn an ML model of normal traffic from captures",
        description="Replay captures of NORMAL traffic through the sensor, compute window features per "
        "talker pair, fit an unsupervised model and save it (with its threshold, feature schema, library "
        "versions and a checksum) for `icswatch replay --model`. Captures are used in the order given, "
        "which should be time order: the latest windows calibrate the threshold.",
    )
    p.add_argument("inputs", nargs="+", metavar="CAPTURE|DIR", help="captures of normal traffic, oldest first")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.joblib", help="where to write the model")
    p.add_argument("--model", choices=MODEL_KINDS, default=DEFAULT_KIND, help=f"detector (default {DEFAULT_KIND})")
    p.add_argument(
        "--members", default=",".join(DEFAULT_ENSEMBLE), help="ensemble members, comma-separated (default %(default)s)"
    )
    p.add_argument("--combine", choices=COMBINE, default="average", help="ensemble score combination (default average)")
    p.add_argument("--window", type=float, default=10.0, metavar="SECONDS", help="window length (default 10)")
    p.add_argument(
        "--hop", type=float, default=None, metavar="SECONDS", help="sliding windows: hop (default: tumbling)"
    )
    p.add_argument(
        "--quantile", type=float, default=0.995, help="threshold = this quantile of training scores (default 0.995)"
    )
    p.add_argument(
        "--contamination",
        type=float,
        default=None,
        help="threshold from an expected outlier share instead (quantile = 1 - c)",
    )
    p.add_argument(
        "--calibration",
        type=float,
        default=0.2,
        help="latest share of windows held out to set the threshold (default 0.2)",
    )
    p.add_argument(
        "--pca", type=float, default=None, help="PCA before the detector: components (>=1) or kept variance (<1)"
    )
    p.add_argument(
        "--labels", action="append", default=[], metavar="FILE", help="labels: labeled windows are left out of training"
    )
    p.add_argument(
        "--max-rows", type=int, default=200_000, help="training windows kept in memory (evenly decimated beyond)"
    )
    p.add_argument("--seed", type=int, default=0, help="random state (IForest, the autoencoder)")
    p.add_argument("-c", "--config", help="YAML configuration file (sensor limits)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("--json", metavar="FILE", help="write the training summary as JSON ('-' for stdout)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary table")
    p.set_defaults(func=run)


def _spec(args: argparse.Namespace) -> Any:
    from detectors.ml.models import ModelSpec

    pca: float | int | None = args.pca
    if pca is not None and pca >= 1:
        pca = int(pca)
    return ModelSpec(
        kind=args.model,
        quantile=args.quantile,
        contamination=args.contamination,
        calibration=args.calibration,
        pca=pca,
        members=tuple(m.strip() for m in args.members.split(",") if m.strip()),
        combine=args.combine,
        random_state=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from detectors.ml.artifact import MlModel, save
    from detectors.ml.dataset import training_data
    from detectors.ml.features import WindowConfig
    from detectors.ml.labels import LabelError, labels_for
    from detectors.ml.models import fit_model
    from icswatch.config import load_config
    from icswatch.inputs import expand

    err = Console(stderr=True, soft_wrap=True)
    try:
        spec = _spec(args)
        window = WindowConfig(window=args.window, hop=args.hop)
    except ValueError as exc:
        err.print(f"[red]icswatch train:[/] {exc}")
        return EXIT_USAGE
    cfg = load_config(args.config, list(args.set))
    captures, problems = expand(args.inputs)
    for p in problems:
        err.print(f"[red]icswatch train:[/] {p}")
    if not captures:
        err.print("[red]icswatch train:[/] no capture files to learn from")
        return EXIT_FAIL
    paths = [str(c.path) for c in captures]
    labels: dict[str, Any] = {}
    if args.labels:
        try:
            labels = {p: labels_for(p, args.labels) for p in paths}
        except LabelError as exc:
            err.print(f"[red]icswatch train:[/] {exc}")
            return EXIT_USAGE
    t0 = time.perf_counter()
    data = training_data(paths, window, labels, cfg.sensor, max_rows=args.max_rows)
    t_features = time.perf_counter() - t0
    for e in data.errors:
        err.print(f"[yellow]icswatch train:[/] {e}")
    try:
        fitted = fit_model(data.X, spec)
    except ValueError as exc:
        err.print(f"[red]icswatch train:[/] {exc}")
        return EXIT_FAIL
    t_fit = time.perf_counter() - t0 - t_features
    model = MlModel(
        fitted=fitted,
        window=window,
        state=data.state,
        training={
            "captures": [Path(p).name for p in paths],
            "packets": data.packets,
            "events": data.events,
            "windows": data.windows,
            "windows_kept": len(data.X),
            "dropped_labeled": data.dropped_labeled,
            "decimations": data.decimations,
            "pairs": data.extractor_stats.get("pairs"),
        },
    )
    out = save(model, args.output)
    summary = {
        "model": out.as_posix(),
        "bytes": out.stat().st_size,
        "kind": spec.kind,
        "members": list(spec.members) if spec.kind == "ensemble" else None,
        "threshold": fitted.threshold,
        "quantile": spec.q,
        "train_windows": fitted.train_windows,
        "calibration_windows": fitted.calibration_windows,
        "score_median": fitted.score_median,
        "score_max": fitted.score_max,
        "window": window.as_dict(),
        "training": model.training,
        "seconds": {"features": round(t_features, 2), "fit": round(t_fit, 2)},
        "versions": model.versions,
    }
    if args.json:
        text = json.dumps(summary, indent=1)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    if not args.quiet and args.json != "-":
        t = Table(title=f"Model written to {out}", title_justify="left", show_header=False)
        t.add_column("", style="bold")
        t.add_column("")
        kind = spec.kind + (f" ({', '.join(spec.members)}, {spec.combine})" if spec.kind == "ensemble" else "")
        rows = [
            ("model", kind),
            ("captures", f"{len(paths)}: {data.packets:,} packets, {data.events:,} events"),
            (
                "windows",
                f"{data.windows:,} ({window.window:g} s, hop {window.hop_seconds:g} s), "
                f"{fitted.train_windows:,} fitted + {fitted.calibration_windows:,} calibration",
            ),
            (
                "threshold",
                f"{fitted.threshold:.6g} (quantile {spec.q:g}; training median {fitted.score_median:.4g}, max {fitted.score_max:.4g})",
            ),
            ("pairs", str(data.extractor_stats.get("pairs"))),
            ("time", f"features {t_features:.1f} s, fit {t_fit:.1f} s"),
            ("size", f"{out.stat().st_size:,} bytes"),
        ]
        if data.dropped_labeled:
            rows.append(("left out", f"{data.dropped_labeled} labeled window(s)"))
        if data.decimations:
            rows.append(("decimated", f"kept every {2**data.decimations}th window (--max-rows {args.max_rows:,})"))
        for k, v in rows:
            t.add_row(k, v)
        Console().print(t)
    return EXIT_OK
