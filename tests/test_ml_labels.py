"""Label formats: per-packet CSV, index lists, time ranges (CSV and JSON), backtrack semantics."""

from __future__ import annotations

import json

import pytest

from detectors.ml.labels import (
    LabelError,
    Tagger,
    labels_for,
    read_backtrack,
    read_csv,
    read_index_list,
    read_time_ranges,
)
from sensor.events import IcsEvent


def ev(ts: float, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> IcsEvent:
    return IcsEvent(ts, "modbus", src, 1, dst, 502, "tcp", "request", 3, "fc3", "read")


def test_per_packet_csv_groups_runs(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("packet,label\n1,0\n2,flood\n3,flood\n4,normal\n7,flood\n8,scan\n")
    lab = read_csv(p)
    assert len(lab.attacks) == 3  # 2-3 flood, 7 flood, 8 scan
    assert lab.packet_tags[2] == lab.packet_tags[3] != lab.packet_tags[7]
    assert 1 not in lab.packet_tags and 4 not in lab.packet_tags
    bad = tmp_path / "bad.csv"
    bad.write_text("packet,label\nzero,1\n")
    with pytest.raises(LabelError, match="bad.csv:2"):
        read_csv(bad)


def test_index_list_and_time_range_csv(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("# manipulated packets\n5\n6, 7\n20\n")
    lab = read_index_list(p)
    assert len(lab.attacks) == 2 and set(lab.packet_tags) == {5, 6, 7, 20}
    r = tmp_path / "r.csv"
    r.write_text("start,end,name\n100,200,flood\n")
    lab = read_csv(r)
    t = Tagger(lab)
    assert t.tag(ev(150.0)) == (1,) and t.tag(ev(250.0)) == ()


def test_time_ranges_json_with_hosts_and_pairs(tmp_path):
    p = tmp_path / "l.json"
    p.write_text(json.dumps({"captures": {"a.pcap": [
        {"id": "flood", "start": 10, "end": 20, "hosts": ["10.9.9.9"]},
        {"id": "writes", "start": 10, "end": 20, "pairs": [["10.0.0.3", "10.0.0.2"]]},
    ]}}))  # fmt: skip
    lab = read_time_ranges(p, "a.pcap")
    t = Tagger(lab)
    assert t.tag(ev(15, src="10.9.9.9")) == (1,)
    assert t.tag(ev(15, src="10.0.0.2", dst="10.0.0.3")) == (2,)
    assert t.tag(ev(15)) == ()  # background traffic in the same time range stays normal
    assert read_time_ranges(p, "other.pcap") is None
    assert labels_for(tmp_path / "a.pcap", [str(p)]) is not None


def test_backtrack_semantics_on_a_small_trace(tmp_path):
    p = tmp_path / "t.pcap.backtrack.txt"
    p.write_text(
        "============\n!!! NOTE !!!\n============\nCloned packet: 2 to 4\nRemoved packet: 1\nSwapped packets: 4, 2\n"
    )
    # original packets 0..9 (10). Clone packet 2 (id 1) to position 4: 0 1 2 1' 3 4 ...  (11)
    # remove packet 1 (id 0): 1 2 1' 3 4 ...; its follower (id 1, now position 1) is labeled (10)
    # swap 4, 2 as IPAL's TraceManipulator does: pop position 4 (id 3) -> 1 2 1' 4 ..., pop position 2
    # (id 2) -> 1 1' 4 5 ..., insert id 2 at position 4 -> 1 1' 4 2 5 ..., insert id 3 at position 2:
    # 1 3 1' 4 2 5 ...: the two swapped packets end at positions 2 and 5
    lab = read_backtrack(p, 10)
    assert [a.kind for a in lab.attacks.values()] == ["clone", "remove", "swap"]
    clone, remove, swap = lab.attacks
    assert lab.packet_tags == {1: (remove,), 2: (swap,), 3: (clone,), 5: (swap,)}
    with pytest.raises(LabelError, match="out of range"):
        q = tmp_path / "bad.backtrack.txt"
        q.write_text("Removed packet: 50\n")
        read_backtrack(q, 10)


def test_pending_tags_reach_the_next_event():
    from detectors.ml.labels import Labels

    lab = Labels("x")
    a = lab.new_attack("dup")
    lab.packet_tags[3] = (a.id,)
    t = Tagger(lab)
    t.packet(3)  # a duplicate dropped by reassembly: no event of its own
    t.packet(4)
    assert t.tag(ev(1.0)) == (a.id,) and t.tag(ev(2.0)) == ()
