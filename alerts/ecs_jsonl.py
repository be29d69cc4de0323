"""JSON Lines outputs of alerts: the ECS form (``--alerts-out``) and Suricata's EVE form (``outputs.eve``).

Both write one JSON object per line, one ``write`` call per batch followed by a flush, so a reader
tailing the file sees whole batches; a process killed mid-write can leave at most one partial last
line, which JSON Lines readers skip. Files are truncated when opened: one file per run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from alerts.store import WriteBatch


class JsonLinesWriter:
    name = "jsonl"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(self.path, "w", encoding="utf-8")
        self._encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        self.lines = 0

    def documents(self, batch: WriteBatch) -> list[dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def write(self, batch: WriteBatch) -> None:
        docs = self.documents(batch)
        if not docs:
            return
        self._fh.write("".join(self._encode(d) + "\n" for d in docs))
        self._fh.flush()
        self.lines += len(docs)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class EcsJsonlWriter(JsonLinesWriter):
    """``--alerts-out``: every alert as its ECS document (``Alert.to_ecs``), one per line.

    Each line has at least ``@timestamp`` (the time of the packet that completed the alert),
    ``rule.id``, ``rule.name``, ``event.severity``, ``threat.technique.id``, ``source.ip``,
    ``destination.ip`` and ``network.protocol`` as nested ECS objects.
    """

    name = "alerts-out"

    def documents(self, batch: WriteBatch) -> list[dict[str, Any]]:
        return [batch.doc(a) for a in batch.alerts]
