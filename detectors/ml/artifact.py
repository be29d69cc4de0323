"""The saved model: a joblib payload behind a one-line JSON header, checked before anything is unpickled.

File layout::

    ICSWATCH-ML-MODEL 1\\n
    {"format": ..., "sha256": ..., "versions": {...}, "schema": {...}, "model": ..., ...}\\n
    <joblib payload: the fitted pipeline, threshold, training statistics, window config, history>

Loading checks, in this order, and refuses with a message that says what to do:

1. the magic line (not an icswatch model at all);
2. the header parses and its format version is one this icswatch reads;
3. the SHA-256 checksum, computed over the header (without its ``sha256`` field) and the payload: any
   change to either after ``icswatch train`` wrote them (a flipped byte, a truncated copy, an edited
   threshold) is caught here, **before unpickling**;
4. the library versions: numpy, scipy, scikit-learn and PyOD must match the writer's major.minor,
   because their pickles are only guaranteed to load with the versions that wrote them (scikit-learn
   says so itself); ``allow_version_mismatch=True`` (``--allow-version-mismatch``) loads anyway;
5. the feature schema: the names, their order, the window, hop and half-lives must be the ones this
   icswatch computes, else the model would score columns it never saw.

What the checksum is not: a signature. Whoever can rewrite the file can rewrite the checksum too, and
unpickling runs code: keep model files where only the sensor's operators can write (docs/ml.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from detectors.ml.features import SCHEMA_VERSION, FeatureExtractor, WindowConfig, feature_names
from detectors.ml.models import FittedModel

MAGIC = b"ICSWATCH-ML-MODEL 1\n"
FORMAT = "icswatch-ml-model"
FORMAT_VERSION = 1
CHECKED_LIBRARIES = ("numpy", "scipy", "scikit-learn", "pyod")


class ArtifactError(ValueError):
    """A model file that must not be used; the message says why and what to do. A ValueError, so the
    CLI's "this detector file cannot be used" handler (icswatch/commands/replay.py) reports it as is."""


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in (*CHECKED_LIBRARIES, "joblib", "icswatch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _major_minor(v: str) -> str:
    return ".".join(v.split(".")[:2])


def schema_hash(schema: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()


@dataclass
class MlModel:
    """What ``icswatch train`` produces and ``replay --model`` / ``eval`` use."""

    fitted: FittedModel
    window: WindowConfig
    state: dict[str, Any] = field(
        default_factory=dict
    )  # the extractor at the end of training (FeatureExtractor.snapshot)
    training: dict[str, Any] = field(default_factory=dict)  # captures, events, windows, dropped
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    path: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return feature_names(self.window)

    @property
    def kind(self) -> str:
        return self.fitted.spec.kind

    @property
    def threshold(self) -> float:
        return self.fitted.threshold

    def new_extractor(self) -> FeatureExtractor:
        """An extractor that starts where training ended (known pairs and addresses, long averages)."""
        return FeatureExtractor.from_snapshot(self.window, self.state)

    def header(self) -> dict[str, Any]:
        schema = self.window.schema()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "model": self.fitted.spec.as_dict(),
            "threshold": self.fitted.threshold,
            "train_windows": self.fitted.train_windows,
            "calibration_windows": self.fitted.calibration_windows,
            "schema": schema,
            "schema_sha256": schema_hash(schema),
            "versions": dict(self.versions),
            "training": dict(self.training),
        }


def _checksum(header: dict[str, Any], payload: bytes) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode())
    h.update(b"\n")
    h.update(payload)
    return h.hexdigest()


def save(model: MlModel, path: str | Path) -> Path:
    """Write the artifact (atomically: a temporary file renamed into place)."""
    import joblib

    path = Path(path)
    if not model.created:
        model.created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not model.versions:
        model.versions = library_versions()
    buf = io.BytesIO()
    joblib.dump(
        {
            "fitted": model.fitted,
            "window": model.window.as_dict(),
            "state": model.state,
            "training": model.training,
            "created": model.created,
            "versions": model.versions,
            "schema": model.window.schema(),
        },
        buf,
        compress=3,
    )
    payload = buf.getvalue()
    header = model.header()
    header["payload_bytes"] = len(payload)
    header["sha256"] = _checksum(header, payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(MAGIC)
        fh.write(json.dumps(header, sort_keys=True).encode())
        fh.write(b"\n")
        fh.write(payload)
    tmp.replace(path)
    model.path = str(path)
    return path


def read_header(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """(header, payload) after the checks that need no unpickling: magic, format, checksum."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the model: {exc.strerror or exc}") from None
    if not data.startswith(MAGIC):
        raise ArtifactError(f"{path}: not an icswatch model file (it should start with {MAGIC.strip().decode()!r}); "
                            "make one with `icswatch train`")  # fmt: skip
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise ArtifactError(f"{path}: the model header is cut off: the file is truncated")
    try:
        header = json.loads(data[len(MAGIC) : end])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(
            f"{path}: the model header is damaged (not JSON): the file was modified or corrupted"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArtifactError(
            f"{path}: not an icswatch model file (format {header.get('format') if isinstance(header, dict) else '?'!r})"
        )
    fv = header.get("format_version")
    if fv != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: model file format {fv}, this icswatch reads format {FORMAT_VERSION}: retrain with `icswatch train`"
        )
    payload = data[end + 1 :]
    if header.get("payload_bytes") != len(payload):
        raise ArtifactError(
            f"{path}: the model is truncated or padded ({len(payload)} payload bytes, the header says "
            f"{header.get('payload_bytes')}): do not use it; copy it again or retrain"
        )
    expected = header.get("sha256")
    actual = _checksum(header, payload)
    if expected != actual:
        raise ArtifactError(
            f"{path}: checksum mismatch (header says {str(expected)[:16]}..., content is {actual[:16]}...): the "
            "model was modified after `icswatch train` wrote it; do not use it: restore it from a trusted copy or retrain"
        )
    return header, payload


def check_versions(header: dict[str, Any], path: str | Path = "") -> list[str]:
    """Differences between the writer's libraries and ours (major.minor), as messages."""
    theirs = header.get("versions") or {}
    ours = library_versions()
    problems = []
    for lib in CHECKED_LIBRARIES:
        t, o = str(theirs.get(lib, "unknown")), ours.get(lib, "unknown")
        if _major_minor(t) != _major_minor(o):
            problems.append(f"{lib} {t} wrote it, {o} is installed")
    return problems


def check_schema(header: dict[str, Any], path: str | Path = "") -> WindowConfig:
    schema = header.get("schema") or {}
    try:
        cfg = WindowConfig(window=float(schema["window"]), hop=float(schema["hop"]),
                           half_lives=tuple(float(h) for h in schema["half_lives"]))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(
            f"{path}: the model's feature schema is unreadable ({exc}): retrain with `icswatch train`"
        ) from None
    ours = cfg.schema()
    theirs_names = list(schema.get("names") or [])
    if schema.get("version") != SCHEMA_VERSION or theirs_names != ours["names"]:
        missing = [n for n in ours["names"] if n not in theirs_names]
        extra = [n for n in theirs_names if n not in ours["names"]]
        detail = []
        if missing:
            detail.append(
                f"this icswatch computes {len(missing)} feature(s) the model lacks ({', '.join(missing[:4])}...)"
            )
        if extra:
            detail.append(
                f"the model expects {len(extra)} feature(s) this icswatch does not compute ({', '.join(extra[:4])}...)"
            )
        if not missing and not extra:
            detail.append("the same features in a different order")
        raise ArtifactError(
            f"{path}: feature schema mismatch: the model was trained on schema v{schema.get('version')} with "
            f"{len(theirs_names)} features, this icswatch computes schema v{SCHEMA_VERSION} with {len(ours['names'])} "
            f"({'; '.join(detail)}): retrain the model with `icswatch train`"
        )
    return cfg


def load(path: str | Path, allow_version_mismatch: bool = False) -> MlModel:
    """Read and check a model file; raises ArtifactError with an actionable message."""
    import joblib

    header, payload = read_header(path)
    problems = check_versions(header, path)
    if problems and not allow_version_mismatch:
        raise ArtifactError(
            f"{path}: library versions differ from the ones that trained the model ({'; '.join(problems)}); "
            "pickled scikit-learn/PyOD models are only safe with the versions that wrote them: retrain with "
            "`icswatch train` on this system, install those versions, or load anyway with --allow-version-mismatch"
        )
    cfg = check_schema(header, path)
    try:
        body = joblib.load(io.BytesIO(payload))
    except Exception as exc:  # noqa: BLE001 - whatever unpickling raises, the answer is the same
        raise ArtifactError(f"{path}: the model payload does not load ({type(exc).__name__}: {exc}): retrain") from None
    if body.get("schema") != header.get("schema"):
        raise ArtifactError(f"{path}: the header and the payload disagree on the feature schema: the file was altered")
    fitted = body["fitted"]
    if not isinstance(fitted, FittedModel) or abs(
        fitted.threshold - float(header.get("threshold", "nan"))
    ) > 1e-12 * max(1.0, abs(fitted.threshold)):
        raise ArtifactError(
            f"{path}: the header and the payload disagree on the model or its threshold: the file was altered"
        )
    window = WindowConfig.from_dict(body["window"])
    if window.schema() != cfg.schema():
        raise ArtifactError(f"{path}: the window configuration does not match the schema: the file was altered")
    return MlModel(
        fitted=fitted,
        window=window,
        state=body.get("state") or {},
        training=body.get("training") or {},
        created=body.get("created", ""),
        versions=body.get("versions") or {},
        path=str(path),
    )
