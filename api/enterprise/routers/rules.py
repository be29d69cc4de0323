"""/api/v1/rules: the rule set (configured files + the API's switches), switching a rule on or off,
reloading the files without a restart, standing suppressions, and the switches and suppressions in
the configuration file's shape for the sensors."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from alerts.store import AlertQuery
from api.enterprise import auth
from api.enterprise.auth import Principal
from api.enterprise.errors import ApiError, not_found
from api.enterprise.models import ReloadOut, RuleInfo, RuleList, SuppressionIn, SuppressionOut
from api.enterprise.routers.deps import ctx, errors, threaded

router = APIRouter(prefix="/api/v1/rules", tags=["rules"])
RuleId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{2,79}$", description="the rule's id")]
SuppressionId = Annotated[str, Path(pattern=r"^sup_[0-9a-f]{12}$")]


def _listing(c: Any) -> dict[str, Any]:
    items, engine = c.rules.listing()
    counts = {b.key: b.count for b in c.datasets.live.alert_counts("rule")}
    for r in items:
        r["alerts"] = counts.get(r["id"], 0)
    return {
        "items": items,
        "total": len(items),
        "enabled": sum(1 for r in items if r["enabled"]),
        "loaded_at": c.rules.loaded_at,
        "problems": [str(p) for p in engine.problems],
    }


@router.get("", response_model=RuleList, summary="Every rule, enabled or not, with its alert count", responses=errors())
async def list_rules(request: Request, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_listing, ctx(request))


def _suppressions(c: Any) -> list[dict[str, Any]]:
    return c.state.suppressions()


@router.get("/suppressions", response_model=list[SuppressionOut], summary="Standing suppressions made through the API",
            responses=errors())
async def list_suppressions(request: Request, _: Principal = Depends(auth.viewer)) -> list[dict[str, Any]]:
    return await threaded(_suppressions, ctx(request))


def _check_address(c: Any, value: str | None, key: str) -> None:
    """Refuse what the engine would refuse at load (a bad address, an unknown @list) now, with the reason."""
    if not value:
        return
    if value.startswith("@"):
        if value[1:] not in c.rules.engine().lists:
            raise ApiError(422, "invalid_suppression", f"{key}: unknown list {value[1:]!r}")
        return
    from detectors.rules.lists import parse_network

    try:
        parse_network(value)
    except ValueError:
        raise ApiError(422, "invalid_suppression", f"{key}: {value!r} is not an IP address, CIDR network or @list") from None


def _add_suppression(c: Any, body: SuppressionIn, who: Principal) -> dict[str, Any]:
    _check_address(c, body.src, "src")
    _check_address(c, body.dst, "dst")
    until = time.time() + body.days * 86400 if body.days else None
    return c.state.add_suppression("sup_" + secrets.token_hex(6), body.rule, body.src, body.dst, until, body.reason, None, who.actor)


@router.post("/suppressions", response_model=SuppressionOut, status_code=201, summary="Add a standing suppression",
             responses=errors())
async def add_suppression(request: Request, body: SuppressionIn, who: Principal = Depends(auth.admin)) -> dict[str, Any]:
    return await threaded(_add_suppression, ctx(request), body, who)


@router.delete("/suppressions/{suppression_id}", status_code=204, summary="Remove a standing suppression", responses=errors(404))
async def delete_suppression(request: Request, suppression_id: SuppressionId, _: Principal = Depends(auth.admin)) -> None:
    if not await threaded(ctx(request).state.delete_suppression, suppression_id):
        raise not_found("suppression", suppression_id)


@router.get("/overrides", response_model=dict[str, Any],
            summary="The API's switches and suppressions as a `rules:` configuration section (for the sensors)",
            responses=errors())
async def overrides(request: Request, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(ctx(request).rules.export_overrides)


def _reload(c: Any) -> dict[str, Any]:
    engine = c.rules.reload()
    return {
        "rules": len(engine.rules),
        "enabled": len(engine.active),
        "files": len(engine.files),
        "problems": [str(p) for p in engine.problems],
        "loaded_at": c.rules.loaded_at,
    }


@router.post("/reload", response_model=ReloadOut, summary="Read the rule files again (no restart; every worker follows)",
             responses=errors())
async def reload(request: Request, _: Principal = Depends(auth.admin)) -> dict[str, Any]:
    return await threaded(_reload, ctx(request))


def _rule(c: Any, rule_id: str) -> dict[str, Any]:
    engine = c.rules.engine()
    r = engine.rule(rule_id)
    if r is None:
        raise not_found("rule", rule_id)
    out = c.rules.describe(r, engine, c.state.rule_overrides())
    out["alerts"] = c.datasets.live.count_alerts(AlertQuery(rule_ids=[rule_id]))
    return out


@router.get("/{rule_id}", response_model=RuleInfo, summary="One rule", responses=errors(404))
async def get_rule(request: Request, rule_id: RuleId, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_rule, ctx(request), rule_id)


def _switch(c: Any, rule_id: str, enabled: bool, who: Principal) -> dict[str, Any]:
    if c.rules.rule(rule_id) is None:
        raise not_found("rule", rule_id)
    c.state.set_rule_enabled(rule_id, enabled, who.actor)
    return _rule(c, rule_id)


@router.post("/{rule_id}/enable", response_model=RuleInfo, summary="Switch a rule on", responses=errors(404))
async def enable(request: Request, rule_id: RuleId, who: Principal = Depends(auth.admin)) -> dict[str, Any]:
    return await threaded(_switch, ctx(request), rule_id, True, who)


@router.post("/{rule_id}/disable", response_model=RuleInfo, summary="Switch a rule off", responses=errors(404))
async def disable(request: Request, rule_id: RuleId, who: Principal = Depends(auth.admin)) -> dict[str, Any]:
    return await threaded(_switch, ctx(request), rule_id, False, who)
