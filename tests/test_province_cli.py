"""``icswatch province`` admin commands and ``icswatch linkage`` on a real outbox: registry with the
credit-code check, keys issued / rotated / revoked, tokens, every change audited; linkage status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icswatch.commands.province import main as province
from province_testutil import USCC_A, master_key_b64


@pytest.fixture()
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ICSWATCH_PROVINCE_MASTER_KEY", master_key_b64())
    return tmp_path / "p.db"


def out(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_registry_keys_tokens_and_audit(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--db", str(db)]
    assert (
        province(
            [
                "enterprise",
                "add",
                *base,
                "--id",
                "acme",
                "--name",
                "Acme 化工",
                "--uscc",
                USCC_A,
                "--city",
                "福州",
                "--industry",
                "化工",
                "--class",
                "2",
                "--cii",
                "--contact",
                "张三,138,z@x.cn",
            ]
        )
        == 0
    )
    capsys.readouterr()
    bad = [
        "enterprise",
        "add",
        *base,
        "--id",
        "b",
        "--name",
        "B",
        "--uscc",
        USCC_A[:-1] + "4",
        "--city",
        "x",
        "--industry",
        "y",
        "--class",
        "2",
    ]
    assert province(bad) == 2
    assert "check character" in capsys.readouterr().err
    assert province(["enterprise", "list", *base]) == 0
    assert "acme\tAcme 化工" in capsys.readouterr().out
    assert province(["credential", "issue", *base, "acme"]) == 0
    first = out(capsys)
    assert first["key_id"].startswith("ik_") and first["secret"].startswith("isk_")
    assert province(["credential", "rotate", *base, first["key_id"], "--overlap-hours", "1"]) == 0
    second = out(capsys)
    assert second["previous_key_id"] == first["key_id"]
    assert province(["credential", "revoke", *base, first["key_id"]]) == 0
    capsys.readouterr()
    assert province(["credential", "list", *base, "acme"]) == 0
    states = {json.loads(line)["key_id"]: json.loads(line)["state"] for line in capsys.readouterr().out.splitlines()}
    assert states == {first["key_id"]: "revoked", second["key_id"]: "active"}
    assert province(["token", "issue", *base, "--name", "alice", "--role", "analyst"]) == 0
    tok = out(capsys)
    assert province(["token", "revoke", *base, tok["token_id"]]) == 0
    assert province(["credential", "issue", *base, "nobody"]) == 1
    from api.province.sqlite_store import SQLiteProvinceStore
    from api.province.store import AuditFilter

    store = SQLiteProvinceStore(db)
    actions = [e["action"] for e in store.search_audit(AuditFilter(limit=50)).items]
    store.close()
    assert {
        "enterprise add",
        "credential issue",
        "credential rotate",
        "credential revoke",
        "token issue",
        "token revoke",
    } <= set(actions)
    secrets_in_db = db.read_bytes()
    assert first["secret"].encode() not in secrets_in_db and tok["token"].encode() not in secrets_in_db


def test_wrong_master_key_is_refused(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert province(["token", "issue", "--db", str(db), "--name", "a", "--role", "admin"]) == 0
    monkeypatch.setenv("ICSWATCH_PROVINCE_MASTER_KEY", master_key_b64())
    assert province(["token", "list", "--db", str(db)]) == 1
    assert "not the one the database was created with" in capsys.readouterr().err


def test_linkage_status_on_an_empty_outbox(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from icswatch.cli import main

    assert main(["linkage", "status", "--outbox", str(tmp_path / "o.db"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["entries"] == {"pending": 0, "sent": 0, "failed": 0}
    assert main(["linkage", "send", "--outbox", str(tmp_path / "o.db")]) == 2  # no url / key configured
