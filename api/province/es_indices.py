"""The provincial platform's Elasticsearch indices: names, explicit mappings, index templates.

Four indices, ``P`` being ``es_index_prefix`` (``icswatch-province`` by default, apart from the
enterprise side's ``icswatch-*`` so both can share a cluster):

==============================  ===============================  =====================================
index                           one document per                 document id
==============================  ===============================  =====================================
``P-incidents``                 incident (the current report,    ``<enterprise_id>/<incident_id>``
                                its history of updates)
``P-advisories``                advisory (with its recipients)   the advisory id
``P-advisory-recipients``       advisory x enterprise (delivery  ``<advisory_id>/<enterprise_id>``
                                and acknowledgement)
``P-audit``                     API access or admin action       ``<microseconds>-<random>``
==============================  ===============================  =====================================

Each index is one concrete index made from its own index template, not daily indices behind an
alias like the alerts: a document must be found by id for the idempotent intake (``create`` on a
deterministic id) and for compare-and-set updates (``if_seq_no``), and a region's incidents are a few
thousand a year, not the millions of a plant's alerts.

The mappings are explicit and closed (``dynamic: false``: a field not listed here is kept in
``_source`` and not indexed), and every field a query filters, sorts or aggregates on is ``keyword``,
a number or ``boolean``, never ``text``. Times are epoch seconds as ``double``, as the store contract
has them (exact sorts and cursors, histograms in seconds); ``@timestamp`` (a ``date``) is there for
people looking at the indices in Kibana. The report itself (``doc``), an incident's ``updates`` and an
advisory's ``targets`` are stored, not indexed (``enabled: false``).
"""

from __future__ import annotations

from typing import Any

TEMPLATE_VERSION = 1
KINDS = ("incidents", "advisories", "recipients", "audit")

KW = {"type": "keyword", "ignore_above": 1024}
KW_TEXT = {"type": "keyword", "ignore_above": 8191}  # searched by substring (wildcard)
INT = {"type": "integer"}
LONG = {"type": "long"}
SECONDS = {"type": "double"}
BOOL = {"type": "boolean"}
DATE = {"type": "date"}
STORED = {"type": "object", "enabled": False}
NOT_INDEXED = {"type": "keyword", "index": False, "doc_values": False}

FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "incidents": {
        "key": KW,
        "enterprise_id": KW,
        "incident_id": KW,
        "title": KW_TEXT,
        "city": KW,
        "industry": KW,
        "cii": BOOL,
        "level": INT,
        "status": KW,
        "discovered_at": SECONDS,
        "received_at": SECONDS,
        "updated_at": SECONDS,
        "deadline": SECONDS,
        "late": BOOL,
        "reportable_at": SECONDS,
        "revision": INT,
        "protocols": KW,
        "techniques": KW,
        "asset_types": KW,
        "search": KW_TEXT,  # the lowercased text SQLite's LIKE searches, searched the same way
        "update_ids": KW,
        "updates": STORED,
        "doc": STORED,
        "@timestamp": DATE,
    },
    "advisories": {
        "id": KW,
        "title": KW_TEXT,
        "body": NOT_INDEXED,
        "kind": KW,
        "severity": KW,
        "targets": STORED,
        "issued_by": KW,
        "issued_at": SECONDS,
        "expires_at": SECONDS,
        "techniques": KW,
        "references": NOT_INDEXED,
        "recipients": KW,
        "@timestamp": DATE,
    },
    "recipients": {
        "advisory_id": KW,
        "enterprise_id": KW,
        "delivered_at": SECONDS,
        "acked_at": SECONDS,
        "ack_note": NOT_INDEXED,
        "acked_by": KW,
    },
    "audit": {
        "key": KW,
        "seq": LONG,
        "ts": SECONDS,
        "actor": KW,
        "role": KW,
        "enterprise_id": KW,
        "method": KW,
        "path": KW,
        "action": KW,
        "resource": KW,
        "status": INT,
        "result": KW,
        "detail": KW,
        "client": KW,
        "request_id": KW,
        "@timestamp": DATE,
    },
}

# Every field the store filters, sorts or aggregates on: a test checks each is indexable in FIELDS.
QUERY_FIELDS: dict[str, tuple[str, ...]] = {
    "incidents": (
        "key",
        "enterprise_id",
        "incident_id",
        "city",
        "industry",
        "cii",
        "level",
        "status",
        "discovered_at",
        "received_at",
        "deadline",
        "late",
        "protocols",
        "techniques",
        "asset_types",
        "search",
    ),
    "advisories": ("id", "issued_at", "recipients"),
    "recipients": ("advisory_id", "enterprise_id", "acked_at"),
    "audit": ("key", "seq", "ts", "actor", "enterprise_id", "result", "action"),
}


def names(prefix: str) -> dict[str, str]:
    """kind -> index name (also the name of its index template)."""
    return {
        "incidents": f"{prefix}-incidents",
        "advisories": f"{prefix}-advisories",
        "recipients": f"{prefix}-advisory-recipients",
        "audit": f"{prefix}-audit",
    }


def mappings(kind: str) -> dict[str, Any]:
    return {
        "dynamic": False,
        "date_detection": False,
        "_meta": {"managed_by": "icswatch", "kind": f"province-{kind}", "template_version": TEMPLATE_VERSION},
        "properties": dict(FIELDS[kind]),
    }


def install(es: Any, prefix: str, replicas: int | None = None) -> list[str]:
    """Put the four index templates (a PUT replaces one of the same name) and create the indices that
    do not exist yet. Idempotent: every platform process runs it when it starts."""
    settings: dict[str, Any] = {"number_of_shards": 1}
    if replicas is not None:
        settings["number_of_replicas"] = replicas
    made = []
    for kind, name in names(prefix).items():
        es.indices.put_index_template(
            name=name,
            index_patterns=[name],
            priority=500,
            version=TEMPLATE_VERSION,
            template={"settings": settings, "mappings": mappings(kind)},
            meta={"managed_by": "icswatch", "template_version": TEMPLATE_VERSION},
        )
        if not es.indices.exists(index=name):
            try:
                es.indices.create(index=name)
            except Exception as exc:  # another process made it between the check and the create
                if "already_exists" not in str(exc):
                    raise
        made.append(name)
    return made
