"""The index templates themselves: every field a query filters, sorts or aggregates on is keyword / ip /
date / number in the template (the test server accepts a terms aggregation on text, a real cluster does
not, so this is checked here, on the template, not through the server); ``ics.*`` cannot grow the
mapping; every value the documents carry fits its mapped type; and what the documents carry that the
template does not index is a short, known list."""

from __future__ import annotations

import json
from ipaddress import ip_address
from typing import Any

import pytest
from es_testutil import ATTACK_PCAPS, RULE_PCAPS, replay

from alerts import es_templates as t
from alerts.es_sink import DocumentBuilder, EsSettings
from alerts.es_store import COUNT_FIELDS, QUERY_FIELDS
from alerts.records import Observer

PREFIX = "icswatch"
# Stored in _source, deliberately not indexed (protocol-specific or free-form; see es_templates).
UNINDEXED_OK = (
    "ics.values",
    "ics.evidence",
    "icswatch.group",
    "icswatch.details",
    "icswatch.evidence",
)
PROTOCOL_OBJECTS = "ics."  # ics.<protocol>.* sub-objects


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.batches: list[Any] = []
        self.events: list[Any] = []

    def write(self, batch: Any) -> None:
        self.batches.append(batch)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def documents() -> dict[str, list[dict[str, Any]]]:
    """The documents the sink would send for the rule and attack captures, per kind."""
    rec = Recorder()
    events: list[Any] = []
    replay(RULE_PCAPS + ATTACK_PCAPS, [rec], on_event=events.append)
    builder = DocumentBuilder(EsSettings(index_prefix=PREFIX), Observer("sensor-1", "91330100MA2XXXXX0X", "plant A"))
    items = [item for b in rec.batches for item in builder.batch_items(b)]
    items += [builder.event_item(e) for e in events[:3000]]
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in t.KINDS}
    for raw in items:
        head, body = raw.decode().splitlines()
        op, meta = next(iter(json.loads(head).items()))
        kind = meta["_index"].split("-")[1]
        doc = json.loads(body)
        out[kind].append(doc["upsert"] if op == "update" else doc)
    assert all(out[k] for k in t.KINDS), {k: len(v) for k, v in out.items()}
    return out


def _leaves(doc: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _leaves(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(doc, list):
        for v in doc:
            out += _leaves(v, prefix)
    else:
        out.append((prefix, doc))
    return out


@pytest.mark.parametrize("kind", t.KINDS)
def test_every_queried_field_is_aggregatable_in_the_template(kind: str) -> None:
    mappings = t.merged_mappings(PREFIX, kind)
    for f in QUERY_FIELDS[kind]:
        ftype = t.field_type(mappings, f)
        assert ftype in t.INDEXABLE_TYPES, f"{kind}: {f} is {ftype!r} in the template: must be keyword/ip/date/number"


def test_count_fields_are_keywords_and_nothing_is_text() -> None:
    alerts = t.merged_mappings(PREFIX, "alerts")
    for by, f in COUNT_FIELDS.items():
        assert t.field_type(alerts, f) == "keyword", by
    for kind in t.KINDS:
        types = t.leaf_fields(t.merged_mappings(PREFIX, kind))
        assert "text" not in types.values(), [f for f, ty in types.items() if ty == "text"]
        assert types["@timestamp"] == "date_nanos"
        assert types["source.ip"] == "ip" and types["related.ip"] == "ip"


def test_mapping_is_closed_and_ics_cannot_explode_it() -> None:
    for kind in t.KINDS:
        m = t.merged_mappings(PREFIX, kind)
        assert m["dynamic"] is False and m["date_detection"] is False
    alerts = t.merged_mappings(PREFIX, "alerts")["properties"]
    assert alerts["ics"]["dynamic"] is False
    assert alerts["ics"]["properties"]["evidence"] == {"type": "object", "enabled": False}
    assert alerts["icswatch"]["properties"]["details"]["enabled"] is False


def test_index_templates_compose_and_alias() -> None:
    names = t.names(PREFIX)
    bodies = t.index_templates(PREFIX, shards=2, replicas=1, ilm_policy="icswatch-90d")
    comps = t.component_templates(PREFIX)
    for kind in t.KINDS:
        body = bodies[names["templates"][kind]]
        assert body["index_patterns"] == [f"{PREFIX}-{kind}-*"]
        assert all(c in comps for c in body["composed_of"])
        assert body["template"]["aliases"] == {f"{PREFIX}-{kind}": {}}
        assert body["template"]["settings"]["index"] == {
            "number_of_shards": 2,
            "number_of_replicas": 1,
            "lifecycle": {"name": "icswatch-90d"},
        }
        assert "data_stream" not in body  # plain daily indices: no data streams needed


def _fits(ftype: str, value: Any) -> bool:
    if value is None:
        return True
    if ftype == "keyword":
        return isinstance(value, str)
    if ftype in ("long", "integer"):
        return isinstance(value, int) and not isinstance(value, bool)
    if ftype == "double":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ftype == "boolean":
        return isinstance(value, bool)
    if ftype == "ip":
        try:
            ip_address(value)
            return True
        except ValueError:
            return False
    if ftype == "date_nanos":
        return isinstance(value, str) and value.endswith("Z") and "T" in value
    return True


def test_documents_fit_the_mapping(documents: dict[str, list[dict[str, Any]]]) -> None:
    """Every indexed value has its mapped type (else a real cluster rejects the document), and the
    fields the documents carry that are not indexed are all under a known, deliberate subtree."""
    unindexed: set[str] = set()
    for kind, docs in documents.items():
        mapped = t.leaf_fields(t.merged_mappings(PREFIX, kind))
        disabled = tuple(f + "." for f, ty in mapped.items() if ty == "object")
        for doc in docs:
            for path, value in _leaves(doc):
                if path in mapped and mapped[path] != "object":
                    assert _fits(mapped[path], value), f"{kind}: {path} = {value!r} does not fit {mapped[path]}"
                elif not path.startswith(disabled) and path not in mapped:
                    unindexed.add(path)
    unexpected = sorted(
        p
        for p in unindexed
        if not p.startswith(UNINDEXED_OK) and not (p.startswith(PROTOCOL_OBJECTS) and p.count(".") >= 2)
    )
    assert unexpected == [], f"fields the template does not index: {unexpected} (map them or list them as deliberate)"


def test_layer2_endpoints_stay_out_of_ip_fields(documents: dict[str, list[dict[str, Any]]]) -> None:
    for kind in ("alerts", "events", "context"):
        for doc in documents[kind]:
            for side in ("source", "destination"):
                s = doc.get(side) or {}
                assert "address" in s
                if "ip" in s:
                    ip_address(s["ip"])
                    assert s["ip"] == s["address"]
