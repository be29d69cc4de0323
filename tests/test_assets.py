"""Passive asset inventory (sensor/assets.py), its store (alerts/asset_store.py) and ``icswatch assets``.

- MAC vendors from the IEEE registry of Debian's ieee-data (longest prefix first; none for locally
  administered or group MACs; a one-line warning when the registry is not installed);
- who is client and server (registered port, else direction);
- the crafted plant: roles, vendors, identities, protocols as client and server, first/last seen;
- bounds (a cap on hosts, counted);
- the store: own tables and own schema version in the alert store's file, merge on save;
- the CLI: table, CSV, JSON, --from captures, --db;
- identities from real captures checked against what tshark shows for the same packets (CIP
  ListIdentity / Identity object, Modbus 43/14, S7 SZL, BACnet I-Am).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SHARED_PCAPS, require_shared

from alerts.asset_store import VERSION_TABLE, AssetStore, AssetStoreError
from sensor.assets import (
    MAX_MACS,
    MAX_PEERS,
    AssetInventory,
    OuiDatabase,
    build_inventory,
    infer_role,
    is_host_address,
    orient,
    oui_database,
)
from sensor.events import IcsEvent

ATTACK = REPO / "pcaps" / "plant_attack.pcap"
OUI_DIR = Path("/usr/share/ieee-data")


def ev(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    direction: str = "request",
    fn: str = "read_holding_registers",
    cat: str = "read",
    proto: str = "modbus",
    **kw: Any,
) -> IcsEvent:
    return IcsEvent(1000.0, proto, src, sport, dst, dport, "tcp", direction, 3, fn, cat, **kw)


# --------------------------------------------------------------------------------------------------
# OUI
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oui() -> OuiDatabase:
    if not (OUI_DIR / "oui.txt").is_file() and not (OUI_DIR / "oui.csv").is_file():
        pytest.skip("ieee-data is not installed (apt-get install ieee-data; .ci/setup-system.sh does it)")
    return oui_database()


def test_oui_lookup(oui: OuiDatabase) -> None:
    assert oui.lookup("00:0e:8c:01:02:03") == "Siemens AG"
    assert oui.lookup("00-1D-9C-AA-BB-CC") == "Rockwell Automation"
    assert oui.lookup("00:80:f4:00:00:01") == "TELEMECANIQUE ELECTRIQUE"
    assert oui.lookup("02:00:0a:14:01:0a") is None  # locally administered
    assert oui.lookup("01:0c:cd:01:00:01") is None  # group (IEC 61850 GOOSE multicast)
    assert oui.lookup("not a mac") is None and oui.lookup(None) is None


def test_oui_longest_prefix_wins(oui: OuiDatabase) -> None:
    # 70:B3:D5 is the IEEE's own MA-L; its 36-bit blocks belong to other companies (oui36)
    if not oui.by_len[9]:
        pytest.skip("no MA-S registry in this ieee-data")
    prefix, org = next(iter(sorted(oui.by_len[9].items())))
    mac = ":".join(prefix[i : i + 2] for i in range(0, 8, 2)) + f":{prefix[8]}0:01"
    assert oui.lookup(mac) == org


def test_oui_missing_registry_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sensor.assets"):
        db = OuiDatabase(tmp_path)
    assert not db.available and db.lookup("00:0e:8c:01:02:03") is None
    [rec] = caplog.records
    assert "apt-get install ieee-data" in rec.getMessage()


# --------------------------------------------------------------------------------------------------
# orientation, roles, bounds
# --------------------------------------------------------------------------------------------------


def test_orient_by_port_then_direction() -> None:
    assert orient(ev("10.0.0.1", 40000, "10.0.0.2", 502)) == ("10.0.0.1", "10.0.0.2", True)
    assert orient(ev("10.0.0.2", 502, "10.0.0.1", 40000, "response")) == ("10.0.0.1", "10.0.0.2", False)
    # an IEC 104 S-frame from the master is reported as a "response": the port still says who is who
    s = ev("10.0.0.1", 40000, "10.0.0.2", 2404, "response", "s_frame", "session", "iec104")
    assert orient(s)[:2] == ("10.0.0.1", "10.0.0.2")
    # BACnet: 47808 on both sides: the direction decides (I-Am is unsolicited, from the device)
    iam = ev("10.0.0.9", 47808, "255.255.255.255", 47808, "unsolicited", "i_am", "discovery", "bacnet")
    assert orient(iam)[:2] == ("255.255.255.255", "10.0.0.9")
    assert not is_host_address("255.255.255.255") and not is_host_address("224.0.0.1") and is_host_address("10.0.0.9")


def test_roles_from_what_assets_initiate() -> None:
    inv = AssetInventory()
    inv.observe(ev("10.0.0.1", 40000, "10.0.0.2", 502, fn="write_single_register", cat="write"))
    inv.observe(ev("10.0.0.3", 40000, "10.0.0.2", 502))
    inv.observe(ev("10.0.0.4", 40000, "10.0.0.2", 502, fn="umas_read_id", cat="discovery"))
    inv.observe(ev("10.0.0.5", 40000, "10.0.0.6", 2404, fn="c_ic_na_1", proto="iec104"))
    roles = {a: infer_role(x)[0] for a, x in inv.assets.items()}
    assert roles == {
        "10.0.0.1": "hmi",
        "10.0.0.2": "plc",
        "10.0.0.3": "master",
        "10.0.0.4": "engineering_station",
        "10.0.0.5": "master",
        "10.0.0.6": "rtu",
    }


def test_inventory_is_bounded_and_counts_what_it_drops() -> None:
    inv = AssetInventory(max_assets=10)
    for i in range(50):
        inv.observe(ev(f"10.1.0.{i + 1}", 40000, "10.0.0.2", 502, src_mac=f"00:0e:8c:00:00:{i:02x}"))
    assert len(inv.assets) == 10 and inv.dropped == 41  # 1 server + 9 clients kept
    a = inv.assets["10.0.0.2"]
    assert a.peer_count == 50 and a.events == 50  # its peers are counted even when they are not kept as assets
    for i in range(10):  # a host seen with many MACs keeps a few
        inv.observe(ev("10.1.0.1", 40000, "10.0.0.2", 502, src_mac=f"00:0e:8c:01:00:{i:02x}"))
    assert len(inv.assets["10.1.0.1"].macs) == MAX_MACS


def test_peers_beyond_the_kept_sample_are_counted_once() -> None:
    """A server with 100 masters, each polling with three function codes on its own flow: three
    signatures per peer are folded in, and each peer counts once (64 are kept by name)."""
    inv = AssetInventory()
    for i in range(100):
        for fn in ("read_coils", "read_holding_registers", "read_input_registers"):
            inv.observe(ev(f"10.2.0.{i + 1}", 40000 + i, "10.0.0.2", 502, fn=fn, flow_id=i + 1))
    server = inv.assets["10.0.0.2"]
    assert server.peer_count == 100 and len(server.peers) == MAX_PEERS and server.events == 300
    again = AssetInventory()
    again.merge([server, server])  # a stored copy merged twice: still 100 distinct peers
    assert again.assets["10.0.0.2"].peer_count == 100


# --------------------------------------------------------------------------------------------------
# the crafted plant
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plant() -> AssetInventory:
    inv, _ = build_inventory([ATTACK])
    return inv


def test_plant_inventory(plant: AssetInventory, oui: OuiDatabase) -> None:
    recs = {r["address"]: r for r in plant.records()}
    assert list(recs) == [
        "10.20.1.10",
        "10.20.1.20",
        "10.20.1.66",
        "10.20.2.11",
        "10.20.2.12",
        "10.20.2.13",
        "10.20.3.40",
    ]
    hmi, ews, intruder, plc1, plc2, plc3, rtu = recs.values()
    assert (hmi["role"], ews["role"], intruder["role"], rtu["role"]) == ("hmi", "engineering_station", "master", "rtu")
    assert plc1["role"] == plc2["role"] == plc3["role"] == "plc"
    assert "umas" in ews["role_reason"]
    assert plc1["mac_vendor"] == "TELEMECANIQUE ELECTRIQUE" and plc3["mac_vendor"] == "Siemens AG"
    assert rtu["mac_vendor"] == "SCHWEITZER ENGINEERING" and intruder["mac_vendor"] == "Raspberry Pi Foundation"
    # identities the PLCs gave of themselves (Modbus 43/14 to the engineering station)
    assert (plc1["vendor"], plc1["product"], plc1["firmware"]) == ("Schneider Electric", "BMX P34 2020", "v3.20")
    assert (plc3["vendor"], plc3["product"]) == ("Siemens", "S7-1200 CPU 1214C")
    assert set(hmi["client_protocols"]) == {"iec104", "modbus"} and not hmi["server_protocols"]
    assert set(rtu["server_protocols"]) == {"iec104", "modbus"}  # the attack's Modbus probe is on record
    assert plc1["units"] == [1]
    assert hmi["first_seen"] < intruder["first_seen"] <= intruder["last_seen"] < hmi["last_seen"]
    assert intruder["last_seen"] - intruder["first_seen"] < 5


# --------------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------------


def test_store_shares_the_alert_database_with_its_own_versions(tmp_path: Path, plant: AssetInventory) -> None:
    from alerts.sqlite_store import SCHEMA_VERSION as ALERT_VERSION
    from alerts.sqlite_store import SQLiteStore

    db = tmp_path / "icswatch.db"
    SQLiteStore(db).close()
    with AssetStore(db) as store:
        assert store.migrated == [1]
        assert store.save(plant) == 7
    with AssetStore(db) as store:  # a second open applies nothing, a second save merges
        assert store.migrated == []
        store.save(plant)
        got = store.get("10.20.2.11")
        assert got is not None and got["events"] == 2 * plant.assets["10.20.2.11"].events
        assert store.count() == 7 and store.addresses()[0] == "10.20.1.10"
        again = {r["address"]: r for r in store.records()}
        assert again["10.20.2.11"]["product"] == "BMX P34 2020"
    SQLiteStore(db).close()  # the alert store still opens the file: its own versions are untouched
    c = sqlite3.connect(db)
    assert c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == ALERT_VERSION
    assert c.execute(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()[0] == 1
    c.execute(f"INSERT INTO {VERSION_TABLE} VALUES (99, 'x', 'from the future')")
    c.commit()
    c.close()
    with pytest.raises(AssetStoreError, match="newer"):
        AssetStore(db)


# --------------------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    from icswatch.cli import main

    return main(list(argv))


def test_cli_from_captures_json_csv_and_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "a.db"
    assert run_cli("assets", "--from", str(ATTACK), "--json", "-") == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["address"] for r in records][:2] == ["10.20.1.10", "10.20.1.20"]
    assert run_cli("assets", "--from", str(ATTACK), "--save", "--db", str(db), "--csv", str(tmp_path / "a.csv")) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "a.csv").read_text())))
    by = {r["address"]: r for r in rows}
    assert by["10.20.2.12"]["product"] == "Micro850 2080-LC50" and by["10.20.2.12"]["role"] == "plc"
    assert by["10.20.1.10"]["client_protocols"].startswith("iec104:")
    assert by["10.20.2.12"]["first_seen"].endswith("Z")
    capsys.readouterr()
    assert run_cli("assets", "--db", str(db)) == 0
    table = capsys.readouterr().out
    assert "10.20.2.13" in table and "engineering_station" in table
    assert run_cli("assets", "--db", str(tmp_path / "none.db")) == 1
    assert run_cli("assets", "--from", str(tmp_path / "none.pcap")) == 1


# --------------------------------------------------------------------------------------------------
# identities from real captures, checked against tshark
# --------------------------------------------------------------------------------------------------

# capture, tshark display filter, fields whose values must appear in the sender's identity
IDENTITY_CASES = [
    (
        "enip/icsmaster__enip_test.pcap",
        "enip.lir.name",
        ("enip.lir.name", "enip.lir.serial", "enip.lir.vendor", "enip.lir.revision"),
    ),
    ("enip/suricata__enip_test1.pcap", "enip.lir.name", ("enip.lir.name", "enip.lir.serial", "enip.lir.vendor")),
    (
        "enip/iti__CL5000EIP-Software_Upload.pcap",
        "cip.id.product_name",
        ("cip.id.product_name", "cip.id.serial_number", "cip.id.vendor_id"),
    ),
    (
        "enip/iti__CL5000EIP-Change_Port_Configuration_Attempt.pcap",
        "cip.id.product_name",
        ("cip.id.product_name", "cip.id.serial_number"),
    ),
    ("modbus/icsnpp__modbus_example.pcap", "modbus.object_str_value", ("modbus.object_str_value",)),
    ("s7comm/icsnpp__snap7.pcap", "s7comm.szl.xy11.0001.anz", ("s7comm.szl.xy11.0001.anz",)),
    (
        "s7comm/icsnpp__snap7.pcap",
        "s7comm.szl.001c.0005.serialn",
        ("s7comm.szl.001c.0005.serialn", "s7comm.szl.001c.0002.name"),
    ),
    (
        "s7comm/iti__s7comm_reading_plc_status.pcap",
        "s7comm.szl.001c.0005.serialn",
        ("s7comm.szl.001c.0005.serialn", "s7comm.szl.001c.0002.name"),
    ),
    (
        "bacnet/icsnpp__bacnet_segmented_data.pcap",
        "bacapp.unconfirmed_service == 0",
        ("bacapp.instance_number", "bacapp.vendor_identifier"),
    ),
    (
        "bacnet/icsnpp__bacnet_error_reject_abort.pcap",
        "bacapp.unconfirmed_service == 0",
        ("bacapp.instance_number", "bacapp.vendor_identifier"),
    ),
]


def tshark_values(
    tshark: str, capture: Path, display_filter: str, fields: tuple[str, ...]
) -> list[tuple[str, dict[str, list[str]]]]:
    """(sender IP, field -> values) per matching packet: tshark's raw ``show`` value and the value it
    displays (the PDML showname: a vendor's name, a revision as ``4.03``); either may match ours."""
    out = subprocess.run(
        [tshark, "-r", str(capture), "-Y", display_filter, "-T", "pdml"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for pkt in ET.fromstring(out).iter("packet"):
        src = None
        vals: dict[str, list[str]] = {}
        for f in pkt.iter("field"):
            name = f.get("name")
            if name == "ip.src" and src is None:
                src = f.get("show")
            if name in fields:
                show = (f.get("show") or "").strip()
                vals.setdefault(name, []).append(show)
                shown = f.get("showname") or ""
                if ": " in shown:  # "Vendor ID: Rockwell Automation/Allen-Bradley (0x0001)", "Revision: 4.03"
                    vals[name].append(shown.split(": ", 1)[1].rsplit(" (", 1)[0].strip())
        if src and vals:
            found.append((src, vals))
    return found


def _norm(v: Any) -> set[str]:
    s = str(v).strip()
    out = {s, s.lower()}
    try:
        out.add(str(int(s, 0)))  # "0x0001" -> "1", "0x00524d8e" -> its decimal
    except ValueError:
        pass
    return out


@pytest.mark.parametrize(
    "capture,display_filter,fields", IDENTITY_CASES, ids=[c[0] + ":" + c[1] for c in IDENTITY_CASES]
)
def test_identity_matches_tshark(tshark: str, capture: str, display_filter: str, fields: tuple[str, ...]) -> None:
    require_shared()
    path = SHARED_PCAPS / capture
    expected = tshark_values(tshark, path, display_filter, fields)
    assert expected, f"tshark shows no {display_filter} in {capture}"
    inv, _ = build_inventory([path])
    for src, vals in expected:
        asset = inv.assets.get(src)
        assert asset is not None and asset.identity, f"{capture}: no identity for {src}"
        ours: set[str] = set()
        for ident in asset.identity.values():
            for v in ident.values():
                ours |= _norm(v)
        for name, shown in vals.items():
            assert any(_norm(x) & ours for x in shown if x), f"{capture}: {src} {name}={shown} not in {asset.identity}"


def test_connection_attempts_make_no_assets_but_add_to_known_ones() -> None:
    """A SYN flood from spoofed sources must not fill the inventory: a bare connection attempt only adds
    to hosts already seen exchanging ICS traffic."""
    from sensor.assets import AssetInventory
    from sensor.events import IcsEvent

    def attempt(src: str, dst: str, flow: int) -> IcsEvent:
        return IcsEvent(100.0 + flow, "tcp", src, 40000 + flow, dst, 502, "tcp", "request", -1, "connection_attempt",
                        "discovery", fields={"ics_protocol": "modbus"}, flow_id=flow)  # fmt: skip

    inv = AssetInventory()
    real = IcsEvent(50.0, "modbus", "10.0.0.5", 40000, "10.0.0.9", 502, "tcp", "request", 3,
                    "read_holding_registers", "read", unit=1, flow_id=1)  # fmt: skip
    inv.observe(real)
    for i in range(2, 1002):  # a thousand spoofed sources
        inv.observe(attempt(f"172.16.{i // 256}.{i % 256}", "10.0.0.9", i))
    inv.observe(attempt("10.0.0.5", "10.0.0.9", 5000))  # the real master opens a second connection
    inv.observe(attempt("10.0.0.5", "10.0.0.77", 5001))  # and probes a host nobody has seen
    assets = inv.assets
    assert sorted(assets) == ["10.0.0.5", "10.0.0.9"]
    plc = assets["10.0.0.9"]
    assert plc.peer_count == 1 and list(plc.peers) == ["10.0.0.5"]  # spoofed sources are not peers
    assert plc.events == 1 + 1000 + 1  # the attempts it received still count for the PLC itself
    assert assets["10.0.0.5"].events == 3  # its request, its second connection, its probe
    assert "10.0.0.77" not in assets["10.0.0.5"].peers  # a probe of an unknown host makes no peer
    assert inv.events == 1 + 1000 + 2
