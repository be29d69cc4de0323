"""Allow-listing: accept a baseline alert's deviation into the baseline, with who, why and when.

Every protect-mode alert carries ``extra["change"]``: what the baseline would need to hold for the
alert not to fire (a new asset and the relation it was seen in, a pair, a function, an address
range, a value, a sequence anomaly, a wider poll period, a poll that no longer runs). ``accept``
applies that change and appends a record to ``baseline.accepted``::

    - alert: 5e0c9d8f2a41b7c3d9e1f0a2
      rule: baseline-value-out-of-range
      by: alice
      why: new recipe, set point range raised (change request CR-2291)
      at: '2026-01-04T09:12:44Z'
      explanation: 10.20.1.10 -> 10.20.2.11 modbus write_single_register unit 1 wrote 9999 ...
      change: {kind: value, client: 10.20.1.10, server: 10.20.2.11, ...}

Accepting the same alert twice changes nothing the second time (refused with a message).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from detectors.baseline.model import AssetEntry, Baseline, PairEntry


class AcceptError(ValueError):
    """The alert cannot be accepted into this baseline; the message says why."""


def accept(
    baseline: Baseline,
    alert_id: str,
    rule_id: str,
    details: dict[str, Any],
    by: str,
    why: str,
    at: str | None = None,
) -> dict[str, Any]:
    """Apply the alert's change, record it, return the record."""
    if not rule_id.startswith("baseline-"):
        raise AcceptError(f"alert {alert_id} was raised by {rule_id!r}, not by the baseline: nothing to accept")
    if any(a.get("alert") == alert_id for a in baseline.accepted):
        raise AcceptError(f"alert {alert_id} is already accepted into this baseline")
    if not by.strip() or not why.strip():
        raise AcceptError("say who accepts (--by) and why (--why): the baseline records both")
    change = details.get("change")
    if not isinstance(change, dict) or "kind" not in change:
        raise AcceptError(f"alert {alert_id} carries no baseline change (was it raised by an older icswatch?)")
    apply_change(baseline, change)
    record = {
        "alert": alert_id,
        "rule": rule_id,
        "by": by.strip(),
        "why": why.strip(),
        "at": at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "explanation": str(details.get("explanation", "")),
        "change": _plain(change),
    }
    baseline.accepted.append(record)
    return record


def apply_change(b: Baseline, change: dict[str, Any]) -> None:
    kind = change["kind"]
    if kind == "asset":
        _asset(b, change["address"], change.get("mac"), change.get("role"), change.get("protocol"))
        if change.get("client") and change.get("server"):
            _relation(b, change)
        return
    if kind in ("pair", "function", "range"):
        _relation(b, change)
        return
    pair = _existing_pair(b, change)
    if kind == "value":
        fe = pair.functions.get((change.get("from", "client"), change["function"]))
        if fe is None:
            raise AcceptError(f"the baseline has no function {change['function']} on this pair any more")
        ue = b.unit(fe, change.get("unit"))
        if ue is None:
            raise AcceptError("too many units on this function to add one")
        _value(ue, int(change["address"]), float(change["value"]))
        return
    if kind == "sequence":
        pair.sequence[str(change["anomaly"])] = pair.sequence.get(str(change["anomaly"]), 0) + 1
        return
    if kind in ("poll", "poll_stopped"):
        sig = _sig(change["signature"])
        pe = pair.polls.get(sig)
        if pe is None:
            raise AcceptError("the baseline has no such periodic request any more")
        if kind == "poll_stopped":
            del pair.polls[sig]  # it is no longer expected to run
            return
        dt = float(change["interval"])
        pe.low = min(pe.low, dt * 0.95)
        pe.high = max(pe.high, dt * 1.05)
        pe.stop_after = max(pe.stop_after, pe.high * 1.5)
        return
    raise AcceptError(f"unknown change kind {kind!r}")


def _asset(b: Baseline, address: str, mac: str | None, role: str | None, protocol: str | None) -> AssetEntry:
    a = b.assets.get(address) or b.asset(address)
    if a is None:
        raise AcceptError("the baseline holds the maximum number of assets")
    if mac and not a.mac:
        a.mac = mac
    if protocol and role in ("client", "server"):
        (a.client if role == "client" else a.server).add(protocol)
    return a


def _relation(b: Baseline, c: dict[str, Any]) -> None:
    client, server, proto = str(c["client"]), str(c["server"]), str(c["protocol"])
    _asset(b, client, None, "client", proto)
    _asset(b, server, None, "server", proto)
    pair = b.pair(client, server, proto)
    if pair is None:
        raise AcceptError("the baseline holds the maximum number of talker pairs")
    if c.get("port"):
        pair.ports.add(int(c["port"]))
    if not c.get("function"):
        return
    # A request function accepted implies its response (and the reverse): both sides are added, the
    # values written only on the side that sent them.
    sent_by = str(c.get("from", "client"))
    for side in (sent_by, "server" if sent_by == "client" else "client"):
        fe = b.function(pair, side, str(c["function"]), str(c.get("category", "other")))
        if fe is None:
            raise AcceptError("the pair holds the maximum number of functions")
        fe.count = max(fe.count, 1)
        rng = c.get("range")
        if rng:
            ue = b.unit(fe, c.get("unit"))
            if ue is None:
                raise AcceptError("too many units on this function to add one")
            ue.addresses.add(int(rng[0]), int(rng[1]))
            if side == sent_by:
                for addr, v in c.get("values") or ():
                    _value(ue, int(addr), float(v))


def _value(ue: Any, address: int, v: float) -> None:
    r = ue.values.get(address)
    if r is None and ue.values_any is not None and address not in ue.values:
        ue.values_any = [min(ue.values_any[0], v), max(ue.values_any[1], v)]
    elif r is None:
        ue.values[address] = [v, v]
    else:
        r[0] = min(r[0], v)
        r[1] = max(r[1], v)


def _existing_pair(b: Baseline, c: dict[str, Any]) -> PairEntry:
    pair = b.pairs.get((str(c["client"]), str(c["server"]), str(c["protocol"])))
    if pair is None:
        raise AcceptError(f"the baseline has no pair {c['client']} -> {c['server']} {c['protocol']} any more")
    return pair


def _sig(s: Any) -> tuple:
    side, fn, unit, addr, qty = s
    return (side, fn, unit, addr, qty)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def alert_from_store(db: str, alert_id: str) -> tuple[str, dict[str, Any]]:
    """(rule id, details) of a stored alert (the SQLite alert store's ECS document)."""
    from alerts.sqlite_store import SQLiteStore

    store = SQLiteStore(db)
    try:
        doc = store.get_alert(alert_id)
    finally:
        store.close()
    if doc is None:
        raise AcceptError(f"no alert {alert_id} in {db}")
    return _from_doc(doc, alert_id)


def alert_from_jsonl(path: str, alert_id: str) -> tuple[str, dict[str, Any]]:
    """The same from an ECS JSON Lines alert file (``--alerts-out``)."""
    import json

    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if alert_id in line:
                doc = json.loads(line)
                if doc.get("event", {}).get("id") == alert_id:
                    return _from_doc(doc, alert_id)
    raise AcceptError(f"no alert {alert_id} in {path}")


def _from_doc(doc: dict[str, Any], alert_id: str) -> tuple[str, dict[str, Any]]:
    rule = (doc.get("rule") or {}).get("id", "")
    details = (doc.get("icswatch") or {}).get("details") or {}
    if not details:
        raise AcceptError(f"alert {alert_id} has no details to accept")
    return str(rule), details
