"""The Elasticsearch spool (alerts/es_spool.py): read back in sequence order whoever wrote what when,
bounded with the oldest dropped first (counted, logged loudly), durable across a reopen, one process
per file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from alerts.es_spool import Spool, SpoolError, read_stats


def body(seq: int, size: int = 100) -> bytes:
    head = f'{{"create":{{"_index":"x","_id":"{seq}"}}}}\n'.encode()
    return head + b"{" + b" " * max(0, size - len(head) - 3) + b"}\n"


def test_order_is_the_sequence_not_the_insertion(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", 1 << 20)
    sp.append([(5, body(5)), (6, body(6))])
    sp.append([(1, body(1)), (2, body(2))])  # a bulk that failed in flight, spooled after newer ones
    sp.append([(7, body(7))])
    assert [s for s, _ in sp.peek(100, 1 << 20)] == [1, 2, 5, 6, 7]
    assert [s for s, _ in sp.peek(2, 1 << 20)] == [1, 2]
    assert len(sp.peek(100, 250)) == 2  # byte bound (100-byte bodies)
    sp.ack([1, 2])
    assert [s for s, _ in sp.peek(100, 1 << 20)] == [5, 6, 7]
    assert sp.count == 3 and sp.bytes == 300 and sp.delivered == 2 and sp.max_seq == 7
    sp.close()


def test_full_spool_drops_the_oldest_counts_and_shouts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sp = Spool(tmp_path / "s.db", 1000)  # room for ten 100-byte documents
    sp.append([(i, body(i)) for i in range(1, 11)])
    assert sp.count == 10 and sp.dropped == 0
    with caplog.at_level(logging.ERROR, logger="alerts.es_spool"):
        dropped = sp.append([(i, body(i)) for i in range(11, 14)])
    assert dropped == 3 and sp.dropped == 3
    assert [s for s, _ in sp.peek(100, 1 << 20)] == list(range(4, 14))  # 1..3 (the oldest) gone
    assert sp.bytes <= sp.max_bytes and sp.stats()["full"] is True
    assert any("spool FULL" in r.getMessage() and "dropped 3" in r.getMessage() for r in caplog.records)
    # older documents arriving late (a failed in-flight bulk) are the oldest: they go first
    assert sp.append([(2, body(2))]) == 1
    assert [s for s, _ in sp.peek(100, 1 << 20)] == list(range(4, 14))
    # a document larger than the whole spool is refused (counted), the rest is kept
    assert sp.append([(20, body(20, 5000))]) == 1
    assert sp.count == 10 and sp.dropped == 5
    sp.ack(range(4, 14))
    assert sp.count == 0 and sp.bytes == 0 and sp.stats()["full"] is False
    sp.close()


def test_spool_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    sp = Spool(path, 1 << 20)
    sp.append([(1, body(1)), (2, body(2)), (3, body(3))])
    sp.ack([1])
    sp.close()
    sp = Spool(path, 1 << 20)
    assert sp.count == 2 and sp.max_seq == 3 and sp.bytes == 200
    assert [b for _, b in sp.peek(10, 1 << 20)] == [body(2), body(3)]
    assert read_stats(path)["pending"] == 2  # readable by another process while in use
    sp.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", 1 << 20)
    with pytest.raises(SpoolError, match="in use by another icswatch process"):
        Spool(tmp_path / "s.db", 1 << 20)
    sp.close()
    Spool(tmp_path / "s.db", 1 << 20).close()  # free again once closed


def test_read_stats_of_a_missing_spool(tmp_path: Path) -> None:
    assert read_stats(tmp_path / "none.db") is None
