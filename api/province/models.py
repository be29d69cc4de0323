"""The platform's wire formats (pydantic): the incident report (schema version 1, published as JSON
Schema at ``GET /api/v1/schema/incident``), its updates, the enterprise registry and advisories.

The report follows the national incident reporting practice: who (enterprise, affected assets),
where (site), when (occurred, discovered), what (category, ATT&CK for ICS techniques and tactics),
how grave (one of the four levels and the criteria that set it), the impact, the measures taken, an
evidence summary, the trend and the follow-up, then the final report. Categories are the classes of
GB/T 20986-2023 (网络安全事件分类分级指南).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from api.province.uscc import normalise, problem

SCHEMA_VERSION = "1"
LEVEL_NAMES = {1: "特别重大", 2: "重大", 3: "较大", 4: "一般"}
LEVEL_NAMES_EN = {1: "especially major", 2: "major", 3: "larger", 4: "general"}
CATEGORIES = (
    "malware",  # 恶意程序事件
    "network_attack",  # 网络攻击事件
    "data_security",  # 数据安全事件
    "information_content",  # 信息内容安全事件
    "equipment_failure",  # 设备设施故障事件
    "improper_operation",  # 违规操作事件
    "vulnerability",  # 安全隐患事件
    "abnormal_behaviour",  # 异常行为事件
    "force_majeure",  # 不可抗力事件
    "other",  # 其他事件
)
STATUSES = ("open", "handling", "contained", "resolved", "closed")
TRENDS = ("developing", "escalating", "stable", "contained", "resolved", "unknown")
SECURITY_CLASSES = {1: "一级", 2: "二级", 3: "三级"}

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{3,127}$"
ENTERPRISE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$"
TECHNIQUE_PATTERN = r"^T\d{4}(\.\d{3})?$"
NAME_PATTERN = r"^[A-Za-z0-9_.+-]{1,40}$"

Short = Field(max_length=200)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AffectedAsset(_Strict):
    address: str = Field(max_length=100, description="address as reported (internal ones usually pseudonymised)")
    asset_type: str = Field(
        "unknown", max_length=50, description="plc, rtu, ied, hmi, engineering_station, server, ..."
    )
    vendor: str | None = Field(None, max_length=200)
    product: str | None = Field(None, max_length=200)
    protocols: list[str] = Field(default_factory=list, max_length=50)
    critical: bool = Field(False, description="in the enterprise's list of critical assets")


class Measure(_Strict):
    at: AwareDatetime | None = None
    text: str = Field(min_length=1, max_length=2000)
    by: str | None = Field(None, max_length=200)


class RuleCount(_Strict):
    id: str = Field(max_length=200)
    name: str | None = Field(None, max_length=300)
    count: int = Field(0, ge=0)


class Evidence(_Strict):
    alert_count: int = Field(0, ge=0)
    rules: list[RuleCount] = Field(default_factory=list, max_length=200)
    sources: list[str] = Field(default_factory=list, max_length=200, description="peers involved (as reported)")
    samples: list[dict[str, Any]] = Field(default_factory=list, max_length=50, description="a few alerts, as summaries")


class FinalReport(_Strict):
    summary: str = Field(min_length=1, max_length=8000)
    root_cause: str = Field("", max_length=8000)
    losses: str = Field("", max_length=4000)
    lessons: str = Field("", max_length=8000)
    closed_at: AwareDatetime | None = None


class Contact(_Strict):
    name: str = Field(max_length=100)
    phone: str = Field("", max_length=50)
    email: str = Field("", max_length=200)
    role: str = Field("", max_length=100)


def _check_level_name(level: int | None, name: str | None) -> None:
    if level is not None and name not in (None, "", LEVEL_NAMES[level]):
        raise ValueError(f"level_name does not match level {level} ({LEVEL_NAMES[level]})")


class IncidentReport(_Strict):
    """An incident report (首报), schema version 1. Times are ISO 8601 with a zone."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"$id": "urn:icswatch:schema:incident-report:1", "title": "icswatch incident report"},
    )

    schema_version: Literal["1"] = Field(description="this schema's version")
    incident_id: str = Field(pattern=ID_PATTERN, description="the enterprise's incident id: intake is idempotent on it")
    enterprise_id: str | None = Field(
        None, pattern=ENTERPRISE_ID_PATTERN, description="must be the credential's enterprise when given"
    )
    title: str = Field(min_length=1, max_length=300)
    category: Literal[CATEGORIES] = "network_attack"  # type: ignore[valid-type]
    level: int = Field(ge=1, le=4, description="1 特别重大, 2 重大, 3 较大, 4 一般")
    level_name: str | None = Field(None, description="the level's Chinese name, checked against level")
    level_criteria: str = Field("", max_length=1000, description="what set the level")
    occurred_at: AwareDatetime | None = Field(None, description="first activity (first evidence)")
    discovered_at: AwareDatetime = Field(
        description="when the enterprise discovered it: the reporting deadline runs from here"
    )
    last_activity_at: AwareDatetime | None = None
    site: str = Field("", max_length=200, description="location: plant / site")
    sensor: str | None = Field(None, max_length=200)
    affected_assets: list[AffectedAsset] = Field(default_factory=list, max_length=100)
    protocols: list[str] = Field(default_factory=list, max_length=50)
    techniques: list[str] = Field(default_factory=list, max_length=100, description="ATT&CK for ICS technique ids")
    tactics: list[str] = Field(default_factory=list, max_length=20)
    impact: str = Field("", max_length=4000)
    measures: list[Measure] = Field(default_factory=list, max_length=200, description="measures taken (处置措施)")
    evidence: Evidence = Field(default_factory=Evidence)
    trend: Literal[TRENDS] = "developing"  # type: ignore[valid-type]
    follow_up: str = Field("", max_length=4000, description="planned follow-up")
    status: Literal[STATUSES] = "open"  # type: ignore[valid-type]
    final_report: FinalReport | None = None
    contact: Contact | None = None

    @field_validator("techniques")
    @classmethod
    def _techniques(cls, v: list[str]) -> list[str]:
        import re

        for i, t in enumerate(v):
            if not re.match(TECHNIQUE_PATTERN, t):
                raise ValueError(f"item {i} is not an ATT&CK technique id such as T0855")
        return v

    @field_validator("protocols")
    @classmethod
    def _protocols(cls, v: list[str]) -> list[str]:
        import re

        for i, p in enumerate(v):
            if not re.match(NAME_PATTERN, p):
                raise ValueError(f"item {i} is not a protocol name (letters, digits, _ . + -)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "IncidentReport":
        _check_level_name(self.level, self.level_name)
        self.level_name = LEVEL_NAMES[self.level]
        return self


class IncidentUpdate(_Strict):
    """A follow-up report (续报) or the final report (终报): the fields given replace the stored ones,
    ``add_measures`` are appended, and ``update_id`` makes it idempotent (a retry is applied once)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"$id": "urn:icswatch:schema:incident-update:1", "title": "icswatch incident update"},
    )

    schema_version: Literal["1"] = "1"
    update_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,159}$", description="unique per incident")
    title: str | None = Field(None, min_length=1, max_length=300)
    category: Literal[CATEGORIES] | None = None  # type: ignore[valid-type]
    level: int | None = Field(None, ge=1, le=4)
    level_name: str | None = None
    level_criteria: str | None = Field(None, max_length=1000)
    last_activity_at: AwareDatetime | None = None
    affected_assets: list[AffectedAsset] | None = Field(None, max_length=100)
    protocols: list[str] | None = Field(None, max_length=50)
    techniques: list[str] | None = Field(None, max_length=100)
    tactics: list[str] | None = Field(None, max_length=20)
    impact: str | None = Field(None, max_length=4000)
    evidence: Evidence | None = None
    trend: Literal[TRENDS] | None = None  # type: ignore[valid-type]
    follow_up: str | None = Field(None, max_length=4000)
    status: Literal[STATUSES] | None = None  # type: ignore[valid-type]
    add_measures: list[Measure] = Field(default_factory=list, max_length=50)
    final_report: FinalReport | None = None
    contact: Contact | None = None

    @model_validator(mode="after")
    def _something(self) -> "IncidentUpdate":
        if not self.changes():
            raise ValueError("an update must change at least one field")
        _check_level_name(self.level, self.level_name)
        return self

    def changes(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True, exclude={"schema_version", "update_id", "level_name"})
        if not data.get("add_measures"):
            data.pop("add_measures", None)
        return data


# -- registry ----------------------------------------------------------------------------------------


class EnterpriseIn(_Strict):
    id: str = Field(pattern=ENTERPRISE_ID_PATTERN, description="short stable id, e.g. the sensor's enterprise_id")
    name: str = Field(min_length=1, max_length=200)
    uscc: str = Field(description="unified social credit code (GB 32100-2015), checked")
    city: str = Field(min_length=1, max_length=50)
    industry: str = Field(min_length=1, max_length=80)
    security_class: int = Field(ge=1, le=3, description="MIIT classification: 1 一级, 2 二级, 3 三级")
    cii: bool = Field(False, description="operates critical information infrastructure (关键信息基础设施)")
    contacts: list[Contact] = Field(default_factory=list, max_length=20)

    @field_validator("uscc")
    @classmethod
    def _uscc(cls, v: str) -> str:
        v = normalise(v)
        why = problem(v)
        if why:
            raise ValueError(f"not a valid unified social credit code: {why}")
        return v


class EnterprisePatch(_Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    city: str | None = Field(None, min_length=1, max_length=50)
    industry: str | None = Field(None, min_length=1, max_length=80)
    security_class: int | None = Field(None, ge=1, le=3)
    cii: bool | None = None
    contacts: list[Contact] | None = Field(None, max_length=20)
    active: bool | None = None


class Targets(_Strict):
    all: bool = False
    cities: list[str] = Field(default_factory=list, max_length=100)
    industries: list[str] = Field(default_factory=list, max_length=100)
    enterprises: list[str] = Field(default_factory=list, max_length=5000)

    @model_validator(mode="after")
    def _some(self) -> "Targets":
        if not (self.all or self.cities or self.industries or self.enterprises):
            raise ValueError("an advisory needs targets: all, cities, industries or enterprises")
        return self


class AdvisoryIn(_Strict):
    title: str = Field(min_length=1, max_length=300)
    body: str = Field(min_length=1, max_length=20000)
    kind: Literal["warning", "notice"] = Field("warning", description="warning 预警 / notice 通报")
    severity: Literal["low", "medium", "high", "critical"] = "medium"
    targets: Targets
    techniques: list[str] = Field(default_factory=list, max_length=50)
    references: list[str] = Field(default_factory=list, max_length=50)
    expires_at: AwareDatetime | None = None


class AckIn(_Strict):
    note: str = Field("", max_length=1000)


class TokenIn(_Strict):
    name: str = Field(min_length=1, max_length=100)
    role: Literal["analyst", "admin"]
    days: float | None = Field(None, gt=0, le=3650, description="lifetime; unset = until revoked")


class CredentialIn(_Strict):
    note: str = Field("", max_length=200)


class RotateIn(_Strict):
    overlap_hours: float = Field(168.0, ge=0, le=24 * 90, description="how long the old key keeps working")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
