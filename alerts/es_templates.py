"""Elasticsearch index templates for icswatch: explicit mappings, daily indices, read aliases.

Four kinds of documents, each in daily indices named by the document's capture time (UTC) and read
through an alias that every new daily index joins by itself (the alias is in the template):

=============  ==========================================  ======================  ============================
kind           what                                        daily index             read alias
=============  ==========================================  ======================  ============================
alerts         ``Alert.to_ecs()`` (one per alert)          ``P-alerts-YYYY.MM.DD``  ``P-alerts``
incidents      ``Incident.to_ecs()`` (upserted as it grows) ``P-incidents-...``    ``P-incidents``
events         ICS events (``elasticsearch.events``)       ``P-events-...``        ``P-events``
context        the flow's events before/after each alert   ``P-context-...``       ``P-context``
=============  ==========================================  ======================  ============================

(``P`` is ``elasticsearch.index_prefix``, ``icswatch`` by default.)

Templates are *composable* (Elasticsearch 7.8+): one component template holds the ECS fields every
kind shares (``P-ecs-common``), one per kind holds its own fields (``P-alerts-mappings``...), and one
index template per kind composes them and adds the settings and the alias. Nothing depends on data
streams or ILM; ``ilm_policy`` adds ``index.lifecycle.name`` to the settings when a cluster has a
policy (docs/elasticsearch.md shows one).

The mapping is explicit and closed:

- ``dynamic: false`` at the root: a field that is not in the template is kept in ``_source`` but not
  indexed, so a new field in ``to_ecs()`` can never break ingestion or add to the mapping by surprise
  (``tests/test_es_templates.py`` lists the fields the documents carry that the template does not
  index, so a new one is a conscious choice);
- every field the store filters, sorts or aggregates on is ``keyword``, ``ip``, ``date_nanos``, a
  number or ``boolean`` -- never ``text`` (a terms aggregation on ``text`` fails on a real cluster);
  ``es_store.QUERY_FIELDS`` lists them and the test checks each against the template itself;
- ``ics.*`` is ``dynamic: false``: its protocol sub-objects (``ics.modbus``, ``ics.s7comm``...) and
  ``ics.values`` vary by protocol and would grow the mapping without bound; the protocol-neutral
  fields (function, unit, address...) are mapped explicitly; ``ics.evidence``, ``icswatch.group``
  and ``icswatch.details`` are stored, not parsed (``enabled: false``);
- ``@timestamp`` and ``event.start/end`` are ``date_nanos``: alerts carry microseconds, and sorting
  and paging must order them exactly as the SQLite store does;
- ``source.ip``/``destination.ip``/``related.ip`` are ``ip``; the sink writes the raw endpoint to
  ``source.address``/``destination.address`` (keyword) as well, and leaves ``*.ip`` out when the
  endpoint is not an IP (layer-2 protocols such as GOOSE carry MAC addresses there).
"""

from __future__ import annotations

from typing import Any

TEMPLATE_VERSION = 1  # bump when a mapping changes; `icswatch es check` compares it
KINDS = ("alerts", "incidents", "events", "context")
INDEXABLE_TYPES = frozenset(
    {"keyword", "ip", "date", "date_nanos", "long", "integer", "short", "byte", "double", "float", "boolean"}
)

KW = {"type": "keyword", "ignore_above": 1024}
KW_LONG = {"type": "keyword", "ignore_above": 8191}  # names and descriptions: searched by substring
LONG = {"type": "long"}
NANOS = {"type": "date_nanos"}
IP = {"type": "ip"}
BOOL = {"type": "boolean"}
STORED_ONLY = {"type": "object", "enabled": False}

# Flat field specs (dotted name -> mapping); ``nest`` turns them into ``properties`` trees.
COMMON_FIELDS: dict[str, dict[str, Any]] = {
    "@timestamp": NANOS,
    "event.id": KW,
    "event.kind": KW,
    "event.category": KW,
    "event.type": KW,
    "event.module": KW,
    "event.dataset": KW,
    "event.provider": KW,
    "event.action": KW,
    "event.outcome": KW,
    "event.severity": LONG,
    "event.severity_name": KW,
    "event.start": NANOS,
    "event.end": NANOS,
    "observer.name": KW,
    "observer.type": KW,
    "observer.vendor": KW,
    "observer.product": KW,
    "observer.geo.name": KW,
    "organization.id": KW,
    "source.ip": IP,
    "source.address": KW,
    "source.port": LONG,
    "source.mac": KW,
    "destination.ip": IP,
    "destination.address": KW,
    "destination.port": LONG,
    "destination.mac": KW,
    "network.protocol": KW,
    "network.transport": KW,
    "related.ip": IP,
}

# The protocol-neutral ICS fields (IcsEvent); everything else under ics.* is stored, not indexed.
ICS_FIELDS: dict[str, dict[str, Any]] = {
    "ics.protocol": KW,
    "ics.direction": KW,
    "ics.function": LONG,
    "ics.function_name": KW,
    "ics.category": KW,
    "ics.result": KW,
    "ics.unit": LONG,
    "ics.address": LONG,
    "ics.quantity": LONG,
    "ics.code": LONG,
    "ics.anomaly": KW,
    "ics.objects": KW,
    "ics.latency": {"type": "double"},
    "ics.size": LONG,
}

ALERT_FIELDS: dict[str, dict[str, Any]] = {
    "rule.id": KW,
    "rule.name": KW_LONG,
    "rule.description": KW_LONG,
    "rule.ruleset": KW,
    "rule.category": KW,
    "rule.reference": KW,
    "rule.references": KW,
    "threat.framework": KW,
    "threat.technique.id": KW,
    "threat.technique.name": KW_LONG,
    "threat.technique.reference": KW,
    "threat.tactic.name": KW,
    **ICS_FIELDS,
    "ics.evidence": STORED_ONLY,
    "icswatch.asset": KW,
    "icswatch.incident_id": KW,
    "icswatch.status": KW,
    "icswatch.status_updated": NANOS,
    "icswatch.count": LONG,
    "icswatch.flow_id": LONG,
    "icswatch.group": STORED_ONLY,
    "icswatch.details": STORED_ONLY,
}

INCIDENT_FIELDS: dict[str, dict[str, Any]] = {
    "threat.framework": KW,
    "threat.technique.id": KW,
    "threat.tactic.name": KW,
    "icswatch.incident.id": KW,
    "icswatch.incident.asset": KW,
    "icswatch.incident.status": KW,
    "icswatch.incident.status_updated": NANOS,
    "icswatch.incident.alert_count": LONG,
    "icswatch.incident.alert_ids": KW,
    "icswatch.incident.rule_ids": KW,
    "icswatch.incident.max_alert_severity": KW,
    "icswatch.incident.level": LONG,
    "icswatch.incident.level_name": KW,
    "icswatch.incident.level_reason": KW_LONG,
    "icswatch.incident.critical_asset": BOOL,
    "icswatch.incident.protocols": KW,
    "icswatch.incident.sources": KW,
}

EVENT_FIELDS: dict[str, dict[str, Any]] = {
    **ICS_FIELDS,
    "icswatch.flow_id": LONG,
}

CONTEXT_FIELDS: dict[str, dict[str, Any]] = {
    "icswatch.alert_id": KW,
    "icswatch.role": KW,
    "icswatch.seq": LONG,
    "icswatch.flow_id": LONG,
    "icswatch.evidence": STORED_ONLY,
}

KIND_FIELDS = {"alerts": ALERT_FIELDS, "incidents": INCIDENT_FIELDS, "events": EVENT_FIELDS, "context": CONTEXT_FIELDS}
# Objects whose unmapped sub-fields stay unindexed even if the root's ``dynamic`` is ever relaxed.
CLOSED_OBJECTS = ("ics", "icswatch")


def nest(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"a.b": {...}}`` -> ``{"a": {"properties": {"b": {...}}}}``; ``ics`` and ``icswatch`` get ``dynamic: false``."""
    root: dict[str, Any] = {}
    for dotted, spec in fields.items():
        parts = dotted.split(".") if dotted != "@timestamp" else ["@timestamp"]
        cur = root
        for i, p in enumerate(parts[:-1]):
            node = cur.setdefault(p, {"properties": {}})
            if i == 0 and p in CLOSED_OBJECTS:
                node["dynamic"] = False
            cur = node["properties"]
        cur[parts[-1]] = dict(spec)
    return root


def field_type(mappings: dict[str, Any], dotted: str) -> str | None:
    """The type of ``dotted`` in a ``mappings`` body (``{"properties": ...}``); None when unmapped.
    Objects without an explicit type are ``object``."""
    node: dict[str, Any] | None = mappings
    parts = dotted.split(".") if dotted != "@timestamp" else ["@timestamp"]
    for p in parts:
        props = (node or {}).get("properties")
        if not props or p not in props:
            return None
        node = props[p]
    return str((node or {}).get("type", "object"))


def names(prefix: str) -> dict[str, Any]:
    """Every name the templates use for a prefix (component templates, index templates, aliases, patterns)."""
    return {
        "common": f"{prefix}-ecs-common",
        "components": {k: f"{prefix}-{k}-mappings" for k in KINDS},
        "templates": {k: f"{prefix}-{k}" for k in KINDS},
        "aliases": {k: f"{prefix}-{k}" for k in KINDS},
        "patterns": {k: f"{prefix}-{k}-*" for k in KINDS},
    }


def component_templates(prefix: str) -> dict[str, dict[str, Any]]:
    """name -> ``template`` body of each component template."""
    n = names(prefix)
    out = {n["common"]: {"mappings": {"dynamic": False, "date_detection": False, "properties": nest(COMMON_FIELDS)}}}
    for kind in KINDS:
        out[n["components"][kind]] = {"mappings": {"properties": nest(KIND_FIELDS[kind])}}
    return out


def index_templates(
    prefix: str, *, shards: int = 1, replicas: int | None = None, ilm_policy: str = "", refresh_interval: str = ""
) -> dict[str, dict[str, Any]]:
    """name -> body of each composable index template (``index_patterns``, ``composed_of``, ``template``...)."""
    n = names(prefix)
    settings: dict[str, Any] = {"index": {"number_of_shards": shards}}
    if replicas is not None:
        settings["index"]["number_of_replicas"] = replicas
    if ilm_policy:
        settings["index"]["lifecycle"] = {"name": ilm_policy}
    if refresh_interval:
        settings["index"]["refresh_interval"] = refresh_interval
    out = {}
    for kind in KINDS:
        out[n["templates"][kind]] = {
            "index_patterns": [n["patterns"][kind]],
            "composed_of": [n["common"], n["components"][kind]],
            "priority": 200,
            "version": TEMPLATE_VERSION,
            "template": {
                "settings": settings,
                "mappings": {"dynamic": False},
                "aliases": {n["aliases"][kind]: {}},
            },
            "_meta": {"managed_by": "icswatch", "kind": kind, "description": f"icswatch {kind} (daily indices)"},
        }
    return out


def merged_mappings(prefix: str, kind: str) -> dict[str, Any]:
    """The mapping an index of ``kind`` gets (what the component templates compose to)."""
    comps = component_templates(prefix)
    n = names(prefix)
    props = _deep_merge(
        comps[n["common"]]["mappings"]["properties"], comps[n["components"][kind]]["mappings"]["properties"]
    )
    return {"dynamic": False, "date_detection": False, "properties": props}


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if k in out and isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def leaf_fields(mappings: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Every mapped leaf: dotted name -> type (objects with ``enabled: false`` count as leaves)."""
    out: dict[str, str] = {}
    for name, node in (mappings.get("properties") or {}).items():
        dotted = f"{prefix}.{name}" if prefix else name
        if "properties" in node and "type" not in node:
            out.update(leaf_fields(node, dotted))
        else:
            out[dotted] = str(node.get("type", "object"))
    return out


def install(client: Any, prefix: str, **settings: Any) -> list[str]:
    """Put the component and index templates (idempotent: a PUT replaces the same name). Returns the names."""
    done = []
    for name, body in component_templates(prefix).items():
        client.cluster.put_component_template(
            name=name, template=body, meta={"managed_by": "icswatch"}, version=TEMPLATE_VERSION
        )
        done.append(name)
    for name, body in index_templates(prefix, **settings).items():
        client.indices.put_index_template(
            name=name,
            index_patterns=body["index_patterns"],
            composed_of=body["composed_of"],
            priority=body["priority"],
            version=body["version"],
            template=body["template"],
            meta=body["_meta"],
        )
        done.append(name)
    return done
