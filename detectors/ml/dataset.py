"""Captures -> windows, for training and evaluation (offline; the online path is ``detector.py``).

The captures go through the real sensor pipeline (decode, flows, TCP reassembly, protocol analyzers),
so the windows a model is trained and evaluated on are exactly the windows ``icswatch replay --model``
scores. Packet indices are counted on the way in so packet-indexed labels can tag events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from detectors.ml.features import FeatureExtractor, Window, WindowConfig
from detectors.ml.labels import Labels, Tagger
from sensor.capture import CaptureReader, Packet
from sensor.events import IcsEvent
from sensor.pipeline import Pipeline


@dataclass
class CaptureRun:
    """One capture replayed into windows."""

    path: str
    windows: list[Window] = field(default_factory=list)
    packets: int = 0
    events: int = 0
    duration: float = 0.0  # seconds on the monotonic clock (capture clock restarts do not count)
    labels: Labels | None = None
    error: str | None = None
    events_kept: list[tuple[float, IcsEvent]] | None = None  # (monotonic time, event) when asked for

    @property
    def name(self) -> str:
        return Path(self.path).name

    def matrix(self) -> np.ndarray:
        return windows_matrix(self.windows)


def windows_matrix(windows: list[Window], width: int | None = None) -> np.ndarray:
    if not windows:
        return np.zeros((0, width or 0))
    return np.asarray([w.values for w in windows], dtype=np.float64)


def replay(
    paths: Iterable[str | Path],
    extractor: FeatureExtractor,
    labels: dict[str, Labels | None] | None = None,
    sensor_config: Any = None,
    keep_events: bool = False,
    on_window: Callable[[list[Window]], None] | None = None,
) -> list[CaptureRun]:
    """Replay captures, in order, through one extractor (its clock and state run on across files)."""
    runs = []
    for path in paths:
        lab = (labels or {}).get(str(path))
        runs.append(_replay_one(Path(path), extractor, lab, sensor_config, keep_events, on_window))
    tail = extractor.finish()
    if runs and tail:
        if on_window is not None:
            on_window(tail)
        else:
            runs[-1].windows.extend(tail)
    return runs


def replay_each(
    paths: Iterable[str | Path],
    config: WindowConfig,
    state: dict[str, Any] | None,
    labels: dict[str, Labels | None] | None = None,
    sensor_config: Any = None,
    keep_events: bool = False,
) -> list[CaptureRun]:
    """Replay each capture on its own extractor, each starting from the training ``state``
    (``FeatureExtractor.snapshot``): exactly what a sensor started with the trained model knows, and no
    leakage from one test capture into the next."""
    out = []
    for path in paths:
        fx = FeatureExtractor.from_snapshot(config, state)
        lab = (labels or {}).get(str(path))
        run = _replay_one(Path(path), fx, lab, sensor_config, keep_events, None)
        run.windows.extend(fx.finish())
        run.duration = fx.now
        out.append(run)
    return out


def _replay_one(
    path: Path,
    fx: FeatureExtractor,
    labels: Labels | None,
    sensor_config: Any,
    keep_events: bool,
    on_window: Callable[[list[Window]], None] | None,
) -> CaptureRun:
    run = CaptureRun(str(path), labels=labels)
    tagger = Tagger(labels)
    attacks = labels.attacks if labels else {}
    kept: list[tuple[float, IcsEvent]] | None = [] if keep_events else None
    sink = on_window or run.windows.extend
    start_now = fx.now
    observe = fx.observe
    tag = tagger.tag

    def on_event(e: IcsEvent) -> None:
        tags = tag(e) if labels else ()
        closed = observe(e, tags)
        if closed:
            sink(closed)
        if tags:
            for a in tags:
                att = attacks[a]
                att.events += 1
                if att.first_mono is None:
                    att.first_mono = fx.now
                    att.first_ts = e.ts
                att.last_mono = fx.now
                if len(att.hosts) < 64:
                    att.hosts.add(e.src)
                    att.hosts.add(e.dst)
        if kept is not None:
            kept.append((fx.now, e))

    def on_tick(ts: float) -> None:
        closed = fx.advance(ts)
        if closed:
            sink(closed)

    pipeline = Pipeline(sensor_config, on_event=on_event, on_tick=on_tick)
    reader = CaptureReader(path)
    result = pipeline.start(str(path))

    def packets() -> Iterator[Packet]:
        i = 0
        for pkt in reader:
            i += 1
            if labels:
                tagger.packet(i)
            yield pkt

    try:
        pipeline.run(packets())
    finally:
        reader.close()
    pipeline.end()
    run.packets = result.packets
    run.events = result.events
    run.error = reader.error
    run.duration = fx.now - start_now
    run.events_kept = kept
    return run


class RowBuffer:
    """Training rows in time order, in bounded memory: when ``cap`` rows are held, every other row is
    dropped and from then on only every 2nd (4th, 8th...) new row is kept. The rows stay evenly spread
    over the whole training period (a head or a reservoir would lose the time order the threshold's
    calibration tail relies on)."""

    def __init__(self, width: int, cap: int = 200_000) -> None:
        self.width = width
        self.cap = max(cap, 16)
        self.rows = np.empty((min(self.cap, 4096), width), dtype=np.float64)
        self.n = 0
        self.stride = 1
        self.seen = 0
        self.decimations = 0

    def add(self, values: list[float]) -> None:
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        if self.n == len(self.rows):
            if self.n < self.cap:
                grown = np.empty((min(self.cap, 2 * self.n), self.width), dtype=np.float64)
                grown[: self.n] = self.rows[: self.n]
                self.rows = grown
            else:
                keep = self.rows[: self.n : 2].copy()
                self.n = len(keep)
                self.rows[: self.n] = keep
                self.stride *= 2
                self.decimations += 1
                if (self.seen - 1) % self.stride:
                    return
        self.rows[self.n] = values
        self.n += 1

    def matrix(self) -> np.ndarray:
        return self.rows[: self.n].copy()


@dataclass
class TrainingData:
    X: np.ndarray
    state: dict[str, Any]
    windows: int  # windows seen (before decimation)
    dropped_labeled: int
    events: int
    packets: int
    captures: list[str]
    errors: list[str]
    decimations: int
    extractor_stats: dict[str, Any]


def training_data(
    paths: list[str | Path],
    config: WindowConfig,
    labels: dict[str, Labels | None] | None = None,
    sensor_config: Any = None,
    max_rows: int = 200_000,
) -> TrainingData:
    """Replay training captures into a bounded, time-ordered matrix (windows are not kept)."""
    fx = FeatureExtractor(config)
    buf = RowBuffer(len(fx.names), max_rows)
    counts = {"windows": 0, "dropped": 0}

    def take(windows: list[Window]) -> None:
        for w in windows:
            counts["windows"] += 1
            if w.tags:
                counts["dropped"] += 1
                continue
            buf.add(w.values)

    runs = replay(paths, fx, labels, sensor_config, on_window=take)
    return TrainingData(
        X=buf.matrix(),
        state=fx.snapshot(),
        windows=counts["windows"],
        dropped_labeled=counts["dropped"],
        events=sum(r.events for r in runs),
        packets=sum(r.packets for r in runs),
        captures=[str(p) for p in paths],
        errors=[f"{r.path}: {r.error}" for r in runs if r.error],
        decimations=buf.decimations,
        extractor_stats=fx.stats(),
    )
