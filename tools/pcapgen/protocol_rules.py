"""Crafted captures for the protocol rules: one ``pcaps/rule_<rule-id>.pcap`` per rule in rules/dnp3.yaml,
rules/s7comm.yaml, rules/iec104.yaml, rules/cip.yaml, rules/bacnet.yaml and rules/opcua.yaml, where that
rule fires (the normal captures where none fires are made by the protocol scripts: pcaps/<proto>_normal.pcap).

Run as ``python -m tools.pcapgen.protocol_rules`` (``--out DIR`` to write elsewhere). The protocol bytes
come from the byte builders of the protocol scripts (tools/pcapgen/dnp3.py, s7comm.py, iec104.py, enip.py,
bacnet.py, opcua.py); scapy only wraps them in Ethernet/IP/TCP or UDP (tools/pcapgen/common.py).
Everything is deterministic: the files are byte-identical on every run.

The plants are those of the protocol scripts (rules/lists/default.yaml names their masters and
engineering stations). Each capture holds the operation the rule is about; for most list-based rules
(and for direct operate and BACnet priorities) it first holds the same or the legitimate form of the
operation from an allowed host, which must not fire (tests/test_rules_protocols.py checks both)::

    DNP3     master 10.0.20.1 (link 1)   outstation 10.0.20.10 (link 10)    attacker 10.0.20.66
    S7comm   HMI 10.10.1.20              PLC 10.10.1.10 (rack 0 slot 2)     attacker 10.10.1.66, scanner 10.10.1.99
    IEC 104  master 10.0.104.1           RTU 10.0.104.10 (common address 1) attacker 10.0.104.66
    CIP      HMI 10.0.30.2, EWS 10.0.30.5  PLC 10.0.30.10                   attacker 10.0.30.66
    BACnet   BMS 10.0.47.5               controllers 10.0.47.20 / .21       attacker 10.0.47.66
    OPC UA   HMI 10.0.40.2               server 10.0.40.10                  attacker 10.0.40.66

(In the S7 plant, the HMI 10.10.1.20 is also in engineering_workstations: the Modbus plant's engineering
workstation has the same address.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from scapy.packet import Packet

from tools.pcapgen import bacnet as bn
from tools.pcapgen import dnp3 as d3
from tools.pcapgen import enip as ei
from tools.pcapgen import iec104 as i4
from tools.pcapgen import opcua as ua
from tools.pcapgen import s7comm as s7
from tools.pcapgen.common import PCAP_DIR, T0, Clock, TcpConversation, rule_captures_cli, write_pcap

DNP3_MASTER, DNP3_OUTSTATION, DNP3_ATTACKER = "10.0.20.1", "10.0.20.10", "10.0.20.66"
S7_PLC, S7_HMI, S7_ATTACKER, S7_SCANNER = s7.PLC, s7.HMI, s7.ATTACKER, s7.RECON
IEC_MASTER, IEC_RTU, IEC_ATTACKER = "10.0.104.1", "10.0.104.10", "10.0.104.66"
CIP_PLC, CIP_HMI, CIP_EWS, CIP_ATTACKER = ei.PLC, ei.HMI, ei.ENG, ei.ATTACKER
BAC_BMS, BAC_CTRL_A, BAC_CTRL_B, BAC_ATTACKER = bn.BMS, bn.CTRL_A, bn.CTRL_B, bn.ATTACKER
UA_SERVER, UA_HMI, UA_ATTACKER = ua.SERVER, ua.HMI, ua.ATTACKER

# --------------------------------------------------------------------------------------------------
# DNP3 (IEEE 1815-2012): a master or attacker talking to the outstation, link addresses 1 -> 10
# --------------------------------------------------------------------------------------------------


class Dnp3:
    """One DNP3 TCP connection: application requests and the outstation's responses, with sequence numbers."""

    def __init__(self, client: str, clock: Clock, cport: int) -> None:
        self.conv = TcpConversation(client, cport, DNP3_OUTSTATION, 20000, clock, isn_c=7000, isn_s=9000).handshake()
        self.tseq_m = self.tseq_o = self.aseq = 0

    def ask(self, fc: int, objects: bytes = b"", answer: bytes | None = b"", fc_answer: int = 129,
            iin: int = 0, gap: float = 0.5) -> None:  # fmt: skip
        """A request (function ``fc``) and, unless ``answer`` is None, a response carrying ``answer``."""
        seq = self.aseq
        self.aseq = (self.aseq + 1) & 0x0F
        frag = d3.app_request(fc, seq, objects)
        self.conv.send(True, d3.frames(d3.OUTSTATION, d3.MASTER, frag, self.tseq_m, True), dt=gap)
        self.tseq_m = (self.tseq_m + len(d3.segments(frag))) & 0x3F
        if answer is None:
            return
        resp = d3.app_response(fc_answer, seq, iin, answer)
        self.conv.send(False, d3.frames(d3.MASTER, d3.OUTSTATION, resp, self.tseq_o, False), dt=0.004)
        self.tseq_o = (self.tseq_o + len(d3.segments(resp))) & 0x3F

    def close(self) -> list[Packet]:
        self.conv.close()
        return self.conv.packets


def dnp3_cold_restart(clock: Clock) -> list[Packet]:
    c = Dnp3(DNP3_ATTACKER, clock, 51001)
    c.ask(1, d3.class_read(0), d3.analog_inputs(0, [1000, 1001]))
    c.ask(13, answer=d3.time_delay(10000), iin=0x8000)  # restart time 10 s, IIN1.7 device restart
    return c.close()


def dnp3_warm_restart(clock: Clock) -> list[Packet]:
    c = Dnp3(DNP3_ATTACKER, clock, 51002)
    c.ask(14, answer=d3.time_delay(2000))
    return c.close()


def dnp3_stop_application(clock: Clock) -> list[Packet]:
    c = Dnp3(DNP3_ATTACKER, clock, 51003)
    c.ask(18, bytes((90, 1, 0x06)))  # g90v1 application identifier, qualifier 0x06: all applications
    return c.close()


def dnp3_disable_unsolicited(clock: Clock) -> list[Packet]:
    # The master's start-up sequence disables unsolicited reporting too: it is an allowed master.
    m = Dnp3(DNP3_MASTER, clock, 51004)
    m.ask(21, d3.class_read(1, 2, 3))
    m.ask(1, d3.class_read(1, 2, 3, 0), d3.binary_inputs(0, [1, 0, 1, 1]))
    m.ask(20, d3.class_read(1, 2, 3))
    packets = m.close()
    a = Dnp3(DNP3_ATTACKER, clock, 51005)
    a.ask(21, d3.class_read(1, 2, 3), gap=5.0)
    return packets + a.close()


def dnp3_file_transfer(clock: Clock) -> list[Packet]:
    c = Dnp3(DNP3_ATTACKER, clock, 51006)
    c.ask(25, d3.file_command("/cfg/logic.bin", mode=2, request_id=1, size=300), d3.file_status(0x1234, request_id=1))
    c.ask(2, d3.file_transport(0x1234, 0, b"\xde\xad\xbe\xef" * 40), d3.file_status(0x1234, request_id=1), gap=0.05)
    c.ask(2, d3.file_transport(0x1234, 1, b"\x90" * 140, last=True), d3.file_status(0x1234, request_id=1), gap=0.05)
    c.ask(26, d3.file_status(0x1234, request_id=2), d3.file_status(0x1234, request_id=2), gap=0.05)
    return c.close()


def dnp3_direct_operate(clock: Clock) -> list[Packet]:
    # The allowed master: select-before-operate on point 7 (quiet), then a direct operate on point 3.
    m = Dnp3(DNP3_MASTER, clock, 51007)
    m.ask(3, d3.crob(7, code=0x41, on_ms=500), d3.crob(7, code=0x41, on_ms=500))
    m.ask(4, d3.crob(7, code=0x41, on_ms=500), d3.crob(7, code=0x41, on_ms=500), gap=0.2)
    m.ask(5, d3.crob(3, code=0x81, on_ms=500), d3.crob(3, code=0x81, on_ms=500), gap=3.0)  # pulse on, trip
    return m.close()


def dnp3_control_unauthorized(clock: Clock) -> list[Packet]:
    m = Dnp3(DNP3_MASTER, clock, 51008)  # the master operates point 7: allowed
    m.ask(3, d3.crob(7, code=0x41, on_ms=500), d3.crob(7, code=0x41, on_ms=500))
    m.ask(4, d3.crob(7, code=0x41, on_ms=500), d3.crob(7, code=0x41, on_ms=500), gap=0.2)
    packets = m.close()
    a = Dnp3(DNP3_ATTACKER, clock, 51009)  # the attacker, with the master's link address, opens breaker 8
    a.ask(3, d3.crob(8, code=0x81, on_ms=500), d3.crob(8, code=0x81, on_ms=500), gap=5.0)
    a.ask(4, d3.crob(8, code=0x81, on_ms=500), d3.crob(8, code=0x81, on_ms=500), gap=0.2)
    a.ask(3, d3.analog_output(1, 4000, 1), d3.analog_output(1, 4000, 1), gap=1.0)
    return packets + a.close()


def dnp3_authentication_error(clock: Clock) -> list[Packet]:
    # Secure Authentication v5: the outstation challenges a critical request, the MAC of the reply is wrong.
    c = Dnp3(DNP3_ATTACKER, clock, 51010)
    c.ask(4, d3.crob(9, code=0x03), d3.auth_challenge(1), fc_answer=131)
    c.ask(32, d3.auth_reply(1), d3.auth_error(1, code=1), fc_answer=131, gap=0.1)
    return c.close()


# --------------------------------------------------------------------------------------------------
# S7comm over ISO-on-TCP: COTP connection, setup communication, numbered jobs and userdata
# --------------------------------------------------------------------------------------------------


class S7:
    """One S7 connection to the PLC (RFC 1006 / ISO 8073 class 0, S7 setup communication first)."""

    def __init__(self, client: str, clock: Clock, cport: int, pg: bool = True) -> None:
        calling, called = (s7.TSAP_PG, s7.TSAP_PLC_PG) if pg else (s7.TSAP_OP, s7.TSAP_PLC_OP)
        self.conv = TcpConversation(client, cport, S7_PLC, 102, clock, isn_c=31000, isn_s=41000).handshake()
        self.conv.exchange(s7.cotp_cr(0x0001, calling, called), s7.cotp_cc(0x0001, 0x0044, calling, called))
        self.ref = 0x0100
        self.job(s7.setup_param(480), s7.setup_param(240))

    def next_ref(self) -> int:
        self.ref = (self.ref + 1) & 0xFFFF
        return self.ref

    def job(self, param: bytes, reply_param: bytes, data: bytes = b"", reply_data: bytes = b"",
            gap: float = 0.05) -> None:  # fmt: skip
        ref = self.next_ref()
        self.conv.exchange(s7.job(ref, param, data), s7.ack_data(ref, reply_param, reply_data), gap=gap)

    def plc_job(self, param: bytes, reply_param: bytes, reply_data: bytes = b"") -> None:
        """A job the PLC sends (download block / download ended: it pulls the block)."""
        ref = 0xC100 + (self.next_ref() & 0xFF)
        self.conv.send(False, s7.job(ref, param), dt=0.01)
        self.conv.send(True, s7.ack_data(ref, reply_param, reply_data), dt=0.002)

    def userdata(self, group: int, sub: int, req: bytes, res: bytes = b"", err: int = 0, gap: float = 0.05) -> None:
        ref = self.next_ref()
        self.conv.exchange(
            s7.userdata(ref, 1, group, sub, 0, req), s7.userdata(ref, 2, group, sub, 1, res, err=err), gap=gap
        )

    def close(self) -> list[Packet]:
        self.conv.close()
        return self.conv.packets


def _scrambled(password: str) -> bytes:
    """8 characters, space padded; the XOR obfuscation of the real protocol is irrelevant to the rules."""
    return bytes(b ^ 0x55 for b in password.ljust(8).encode()[:8])


def s7_plc_stop(clock: Clock) -> list[Packet]:
    c = S7(S7_ATTACKER, clock, 50101)
    c.job(s7.plc_stop_param(), b"\x29")
    return c.close()


def s7_program_download(clock: Clock) -> list[Packet]:
    c = S7(S7_ATTACKER, clock, 50102)
    ob1 = s7.filename("08", 1, "P")
    c.job(s7.request_download_param(ob1, 312, 212), b"\x1a")
    c.plc_job(s7.block_param(0x1B, ob1), b"\x1b\x01", s7.block_data(bytes(range(200))))
    c.plc_job(s7.block_param(0x1B, ob1), b"\x1b\x00", s7.block_data(bytes(range(112))))
    c.plc_job(s7.block_param(0x1C, ob1), b"\x1c")
    c.job(s7.pi_param(b"_INSE", s7.pi_blocks(b"0800001P")), b"\x28")
    return c.close()


def s7_block_delete(clock: Clock) -> list[Packet]:
    c = S7(S7_ATTACKER, clock, 50103)
    c.job(s7.pi_param(b"_DELE", s7.pi_blocks(b"0C00001B")), b"\x28")  # FC 1, both filesystems
    return c.close()


def s7_program_upload(clock: Clock) -> list[Packet]:
    c = S7(S7_ATTACKER, clock, 50104)
    ob1 = s7.filename("08", 1, "A")
    body = bytes(range(212))
    c.job(s7.block_param(0x1D, ob1), s7.start_upload_reply(7, len(body)))
    c.job(s7.upload_param(0x1E, 7), b"\x1e\x01", reply_data=s7.block_data(body[:120]))
    c.job(s7.upload_param(0x1E, 7), b"\x1e\x00", reply_data=s7.block_data(body[120:]))
    c.job(s7.upload_param(0x1F, 7), b"\x1f")
    return c.close()


def s7_szl_reconnaissance(clock: Clock) -> list[Packet]:
    # The HMI (an allowed master) reads the CPU's operating mode: quiet.
    h = S7(S7_HMI, clock, 50105, pg=False)
    h.userdata(4, 1, struct.pack(">HH", 0x0424, 0), struct.pack(">HHHH", 0x0424, 0, 20, 1) + bytes(20))
    packets = h.close()
    # A scanner reads the module identification, the component identification and the block list.
    c = S7(S7_SCANNER, clock, 50106)
    ident = [s7.szl_0011_record(1, "6ES7 315-2EH14-0AB0"), s7.szl_0011_record(7, "", b"V\x03", b"\x02\x06")]
    c.userdata(4, 1, struct.pack(">HH", 0x0011, 0), struct.pack(">HHHH", 0x0011, 0, 28, len(ident)) + b"".join(ident),
               gap=2.0)  # fmt: skip
    comp = [s7.szl_001c_record(1, "S7-300 station_1"), s7.szl_001c_record(2, "CPU 315-2 PN/DP")]
    c.userdata(4, 1, struct.pack(">HH", 0x001C, 0), struct.pack(">HHHH", 0x001C, 0, 34, len(comp)) + b"".join(comp))
    c.userdata(3, 1, b"", b"\x30\x38\x00\x01\x30\x41\x00\x02\x30\x43\x00\x03")  # list blocks: OB 1, DB 2, FC 3
    return packets + c.close()


def s7_password_unknown_host(clock: Clock) -> list[Packet]:
    c = S7(S7_ATTACKER, clock, 50107)
    c.userdata(5, 1, _scrambled("s7pass"))  # accepted
    c.job(s7.var_param(0x04, [s7.s7any(s7.AREA_DB, s7.TS_BYTE, 4, 0, db=1)]), b"\x04\x01",
          reply_data=s7.data_items([(0xFF, 4, b"\x00\x01\x02\x03")]))  # fmt: skip
    return c.close()


def s7_password_brute_force(clock: Clock) -> list[Packet]:
    # The engineering station itself (a known host, so s7-password-unknown-host stays quiet) guesses.
    c = S7(S7_HMI, clock, 50108)
    for guess in ("admin", "siemens", "1234", "password", "s7pass"):
        c.userdata(5, 1, _scrambled(guess), err=0 if guess == "s7pass" else 0xD602, gap=2.0)
    return c.close()


# --------------------------------------------------------------------------------------------------
# IEC 60870-5-104: STARTDT, then I-frames numbered by tools.pcapgen.iec104.Link
# --------------------------------------------------------------------------------------------------


def _iec_link(client: str, clock: Clock, cport: int) -> tuple[TcpConversation, i4.Link]:
    conv = TcpConversation(client, cport, IEC_RTU, 2404, clock, isn_c=7000, isn_s=9000).handshake()
    link = i4.Link(conv)
    link.u(True, i4.STARTDT_ACT)
    link.u(False, i4.STARTDT_CON, gap=0.003)
    return conv, link


def _iec_close(conv: TcpConversation, link: i4.Link) -> list[Packet]:
    link.s(True)
    link.u(True, i4.STOPDT_ACT, gap=0.5)
    link.u(False, i4.STOPDT_CON, gap=0.003)
    conv.close()
    return conv.packets


def _iec_command(link: i4.Link, type_id: int, address: int, element: bytes, term: bool = True) -> None:
    link.i(True, i4.command(type_id, i4.ACT, address, element), gap=0.5)
    link.i(False, i4.command(type_id, i4.ACTCON, address, element), gap=0.01)
    if term:
        link.i(False, i4.command(type_id, i4.ACTTERM, address, element), gap=0.05)


def iec104_control_unauthorized(clock: Clock) -> list[Packet]:
    conv, link = _iec_link(IEC_MASTER, clock, 50201)  # the master moves a set point: allowed
    _iec_command(link, 50, 7003, i4.setpoint_flt(80.0), term=False)
    packets = _iec_close(conv, link)
    conv, link = _iec_link(IEC_ATTACKER, clock, 50202)
    _iec_command(link, 45, 6001, i4.sco(0, select=True), term=False)  # open breaker 6001: select ...
    _iec_command(link, 45, 6001, i4.sco(0))  # ... execute
    _iec_command(link, 46, 6002, i4.dco(1, qu=1))  # disconnector off, short pulse
    _iec_command(link, 47, 8001, i4.rco(2))  # tap changer one step higher
    _iec_command(link, 50, 7003, i4.setpoint_flt(95.5), term=False)
    return packets + _iec_close(conv, link)


def iec104_reset_process(clock: Clock) -> list[Packet]:
    conv, link = _iec_link(IEC_MASTER, clock, 50203)  # even the master: the rule does not look at lists
    link.i(True, i4.reset_process(i4.ACT, qrp=1), gap=0.5)
    link.i(False, i4.reset_process(i4.ACTCON, qrp=1), gap=0.01)
    link.i(False, i4.command(70, 4, 0, bytes((0x02,))), gap=2.0)  # M_EI_NA_1: end of initialisation
    return _iec_close(conv, link)


def iec104_clock_sync_unknown(clock: Clock) -> list[Packet]:
    conv, link = _iec_link(IEC_MASTER, clock, 50204)  # the master syncs the clock to the right time
    link.i(True, i4.clock_sync(i4.ACT, clock.t + 0.01))
    link.i(False, i4.clock_sync(i4.ACTCON, clock.t + 0.01), gap=0.004)
    packets = _iec_close(conv, link)
    conv, link = _iec_link(IEC_ATTACKER, clock, 50205)  # an unknown station moves it to 2020
    link.i(True, i4.clock_sync(i4.ACT, i4.epoch_of(2020, 1, 1)), gap=2.0)
    link.i(False, i4.clock_sync(i4.ACTCON, i4.epoch_of(2020, 1, 1)), gap=0.004)
    return packets + _iec_close(conv, link)


def iec104_interrogation_storm(clock: Clock) -> list[Packet]:
    conv, link = _iec_link(IEC_ATTACKER, clock, 50206)
    for _ in range(15):  # 15 general interrogations, one every 0.2 s: fires at the 10th
        link.i(True, i4.interrogation(i4.ACT), gap=0.2)
        link.i(False, i4.interrogation(i4.ACTCON), gap=0.002)
        link.i(False, i4.sequence_objects(1, i4.INROGEN, 1001, [i4.siq(1), i4.siq(0), i4.siq(1)]), gap=0.002)
        link.i(False, i4.interrogation(i4.ACTTERM), gap=0.002)
    return _iec_close(conv, link)


# --------------------------------------------------------------------------------------------------
# EtherNet/IP + CIP: a registered session, unconnected requests (SendRRData)
# --------------------------------------------------------------------------------------------------


def _cip_session(client: str, clock: Clock, cport: int, session: int) -> tuple[TcpConversation, ei.EnipClient]:
    conv = TcpConversation(client, cport, CIP_PLC, 44818, clock, isn_c=10_000, isn_s=20_000).handshake()
    c = ei.EnipClient(conv, session)
    c.register()
    return conv, c


def _cip_close(conv: TcpConversation, c: ei.EnipClient) -> list[Packet]:
    c.unregister()
    conv.close()
    return conv.packets


def cip_controller_stop(clock: Clock) -> list[Packet]:
    conv, c = _cip_session(CIP_ATTACKER, clock, 50301, 0x66000001)
    c.rr(ei.request(0x07, ei.epath(0x8E, 1)), ei.reply(0x07))  # controller -> Program mode
    return _cip_close(conv, c)


def cip_controller_start(clock: Clock) -> list[Packet]:
    conv, c = _cip_session(CIP_ATTACKER, clock, 50302, 0x66000002)
    c.rr(ei.request(0x06, ei.epath(0x8E, 1)), ei.reply(0x06))  # controller -> Run mode
    return _cip_close(conv, c)


def cip_reset(clock: Clock) -> list[Packet]:
    conv, c = _cip_session(CIP_ATTACKER, clock, 50303, 0x66000003)
    c.rr(ei.request(0x05, ei.epath(0x01, 1), b"\x01"), ei.reply(0x05))  # Identity reset to factory defaults
    return _cip_close(conv, c)


def cip_firmware_update(clock: Clock) -> list[Packet]:
    conv, c = _cip_session(CIP_ATTACKER, clock, 50304, 0x66000004)
    c.rr(ei.request(0x0E, ei.epath(0xA1, 1, 4)), ei.reply(0x0E, 0, bytes((20, 11))))  # reads the revision: quiet
    c.rr(ei.request(0x4B, ei.epath(0xA1, 1), bytes(8)), ei.reply(0x4B), gap=1.0)  # begin (as ControlFLASH does)
    for block in range(6):
        c.rr(ei.request(0x4D, ei.epath(0xA1, 1), struct.pack("<I", block) + bytes(128)), ei.reply(0x4D), gap=0.02)
    return _cip_close(conv, c)


def cip_set_attribute_identity(clock: Clock) -> list[Packet]:
    conv, c = _cip_session(CIP_ATTACKER, clock, 50305, 0x66000005)
    c.rr(ei.request(0x10, ei.epath(0x01, 1, 7), b"\x05PWNED"), ei.reply(0x10, 0x0E))  # product name: refused
    return _cip_close(conv, c)


def cip_set_attribute_network(clock: Clock) -> list[Packet]:
    conv, c = _cip_session(CIP_ATTACKER, clock, 50306, 0x66000006)
    new_config = struct.pack("<IIIII", 0x420A000A, 0x00FFFFFF, 0x420A000A, 0, 0) + b"\x00\x00"  # 10.0.10.66/8
    c.rr(ei.request(0x10, ei.epath(0xF5, 1, 5), new_config), ei.reply(0x10))  # TCP/IP interface configuration
    c.rr(ei.request(0x10, ei.epath(0xF6, 1, 6), struct.pack("<HH", 0x0002, 10)), ei.reply(0x10))  # 10 Mb/s forced
    return _cip_close(conv, c)


def _set_clock(us: int) -> bytes:
    """Set Attribute List on the Wall Clock Time object: one attribute (6, local time in microseconds)."""
    return ei.request(0x04, ei.epath(0x8B, 1), struct.pack("<HHQ", 1, 6, us))


def cip_clock_change_unknown(clock: Clock) -> list[Packet]:
    conv, c = _cip_session(CIP_HMI, clock, 50307, 0x22000007)  # the HMI keeps the controller's clock: allowed
    c.rr(_set_clock(int(T0 * 1e6)), ei.reply(0x04, 0, struct.pack("<HHH", 1, 6, 0)))
    packets = _cip_close(conv, c)
    conv, c = _cip_session(CIP_ATTACKER, clock, 50308, 0x66000007)
    c.rr(_set_clock(1_577_836_800_000_000), ei.reply(0x04, 0, struct.pack("<HHH", 1, 6, 0)), gap=2.0)  # 2020-01-01
    return packets + _cip_close(conv, c)


# RSLogix / Studio 5000 walking a project: service 0x4B on the classes of the project structure (tags 0x6B,
# data types 0x6C, undocumented Rockwell classes): the Quickdraw Software Upload capture touches 19 in half a second.
UPLOAD_CLASSES = (0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x70, 0x7E, 0xAC)


def cip_program_upload(clock: Clock) -> list[Packet]:
    conv, c = _cip_session(CIP_ATTACKER, clock, 50309, 0x66000008)
    for cls in UPLOAD_CLASSES:
        c.rr(ei.request(0x4B, ei.epath(cls, 0)), ei.reply(0x4B, 0, struct.pack("<HI", 1, cls)), gap=0.02)
    return _cip_close(conv, c)


def _create_objects(c: ei.EnipClient) -> None:
    """A download recreating 6 objects of class 0x6A and 6 tags (0x6B), as the Quickdraw Reboot capture does."""
    for n in range(6):
        for cls in (0x6A, 0x6B):
            c.rr(ei.request(0x08, ei.epath(cls, 0x1000 + n), struct.pack("<HH", 1, n)),
                 ei.reply(0x08, 0, struct.pack("<H", n)), gap=0.02)  # fmt: skip


def cip_program_download(clock: Clock) -> list[Packet]:
    conv, c = _cip_session(CIP_EWS, clock, 50310, 0x55000009)  # the engineering station downloads: allowed
    _create_objects(c)
    packets = _cip_close(conv, c)
    conv, c = _cip_session(CIP_ATTACKER, clock, 50311, 0x66000009)
    clock.tick(5.0)
    _create_objects(c)
    return packets + _cip_close(conv, c)


# --------------------------------------------------------------------------------------------------
# BACnet/IP: confirmed requests from the attacker's tool (port 47809) and the controllers' answers
# --------------------------------------------------------------------------------------------------

ATTACKER_PORT = 47809


def _bac_request(net: bn.Udp, src: str, dst: str, invoke: int, service: int, params: bytes, gap: float = 0.5) -> None:
    sport = ATTACKER_PORT if src == BAC_ATTACKER else bn.PORT
    apdu = bn.confirmed(invoke, service, params)
    net.send(src, dst, bn.unicast(bn.npdu(apdu, expecting_reply=True)), gap=gap, sport=sport)
    net.send(dst, src, bn.unicast(bn.npdu(bn.simple_ack(invoke, service))), gap=0.02, dport=sport)


def bacnet_reinitialize_device(clock: Clock) -> list[Packet]:
    net = bn.Udp(clock)
    _bac_request(net, BAC_ATTACKER, BAC_CTRL_A, 1, bn.REINITIALIZE_DEVICE, bn.reinitialize_device(1, "admin"))
    return net.packets


def bacnet_device_communication_control(clock: Clock) -> list[Packet]:
    net = bn.Udp(clock)
    params = bn.device_communication_control(1, 60, "admin")  # disable for 60 minutes
    _bac_request(net, BAC_ATTACKER, BAC_CTRL_B, 2, bn.DEVICE_COMMUNICATION_CONTROL, params)
    return net.packets


def bacnet_write_priority_array(clock: Clock) -> list[Packet]:
    net = bn.Udp(clock)
    # The BMS operator writes a set point at the manual-operator priority 8: quiet.
    op = bn.write_property((bn.ANALOG_VALUE, 1), bn.PRESENT_VALUE, bn.app_real(21.5), priority=8)
    _bac_request(net, BAC_BMS, BAC_CTRL_A, 3, bn.WRITE_PROPERTY, op)
    # The attacker commands the supply fan off at priority 1 (manual life safety), then writes slot 1 of
    # an analog output's priority array directly.
    fan = bn.write_property((bn.BINARY_OUTPUT, 3), bn.PRESENT_VALUE, bn.app_enum(0), priority=1)
    _bac_request(net, BAC_ATTACKER, BAC_CTRL_A, 4, bn.WRITE_PROPERTY, fan, gap=3.0)
    slot = bn.write_property((bn.ANALOG_OUTPUT, 2), bn.PRIORITY_ARRAY, bn.app_real(100.0), index=1)
    _bac_request(net, BAC_ATTACKER, BAC_CTRL_A, 5, bn.WRITE_PROPERTY, slot)
    return net.packets


# --------------------------------------------------------------------------------------------------
# OPC UA binary: tools.pcapgen.opcua.UaClient on a None channel
# --------------------------------------------------------------------------------------------------


def _ua_session(client: str, clock: Clock, cport: int, channel: int, user: str | None) -> ua.UaClient:
    conv = TcpConversation(client, cport, UA_SERVER, 4840, clock, isn_c=50_000, isn_s=60_000).handshake()
    c = ua.UaClient(conv, channel=channel, session=channel * 100 + 1)
    c.open()
    c.login(f"urn:{client}:client", "session", user)
    return c


def _ua_close(c: ua.UaClient) -> list[Packet]:
    c.close()
    c.conv.close()
    return c.conv.packets


def opcua_security_policy_none(clock: Clock) -> list[Packet]:
    hmi = _ua_session(UA_HMI, clock, 50401, 7, "operator")  # the legacy HMI on its None channel: allowed
    packets = _ua_close(hmi)
    clock.tick(2.0)
    packets += _ua_close(_ua_session(UA_ATTACKER, clock, 50402, 66, "operator"))
    return packets


def opcua_anonymous_session(clock: Clock) -> list[Packet]:
    c = _ua_session(UA_ATTACKER, clock, 50403, 67, None)  # AnonymousIdentityToken
    h = c.next_handle()
    c.call(ua.browse_request(h, c.auth, 85), ua.simple_response(530, h, 0, ua.array([]) + ua.array([])))
    return _ua_close(c)


def opcua_write_unknown(clock: Clock) -> list[Packet]:
    c = _ua_session(UA_ATTACKER, clock, 50404, 68, "operator")
    h = c.next_handle()
    c.call(ua.write_request(h, c.auth, (2, "Line1.SpeedSP", 99.0)), ua.write_response(h, 0))
    return _ua_close(c)


def opcua_call_unknown(clock: Clock) -> list[Packet]:
    c = _ua_session(UA_ATTACKER, clock, 50405, 69, "operator")
    h = c.next_handle()
    c.call(ua.call_request(h, c.auth, (2, "Pump1"), (2, "Pump1.Stop"), True), ua.call_response(h))
    return _ua_close(c)


# --------------------------------------------------------------------------------------------------
# The captures
# --------------------------------------------------------------------------------------------------

# rule id -> how its capture is made
RULE_CAPTURES: dict[str, Callable[[Clock], list[Packet]]] = {
    "dnp3-cold-restart": dnp3_cold_restart,
    "dnp3-warm-restart": dnp3_warm_restart,
    "dnp3-stop-application": dnp3_stop_application,
    "dnp3-disable-unsolicited-unknown-host": dnp3_disable_unsolicited,
    "dnp3-file-transfer": dnp3_file_transfer,
    "dnp3-direct-operate": dnp3_direct_operate,
    "dnp3-control-unauthorized-master": dnp3_control_unauthorized,
    "dnp3-authentication-error": dnp3_authentication_error,
    "s7-plc-stop": s7_plc_stop,
    "s7-program-download": s7_program_download,
    "s7-block-delete": s7_block_delete,
    "s7-program-upload": s7_program_upload,
    "s7-szl-reconnaissance": s7_szl_reconnaissance,
    "s7-password-unknown-host": s7_password_unknown_host,
    "s7-password-brute-force": s7_password_brute_force,
    "iec104-control-unauthorized-station": iec104_control_unauthorized,
    "iec104-reset-process": iec104_reset_process,
    "iec104-clock-sync-unknown-station": iec104_clock_sync_unknown,
    "iec104-interrogation-storm": iec104_interrogation_storm,
    "cip-controller-stop": cip_controller_stop,
    "cip-controller-start": cip_controller_start,
    "cip-reset": cip_reset,
    "cip-firmware-update": cip_firmware_update,
    "cip-set-attribute-identity": cip_set_attribute_identity,
    "cip-set-attribute-network": cip_set_attribute_network,
    "cip-clock-change-unknown-host": cip_clock_change_unknown,
    "cip-program-upload": cip_program_upload,
    "cip-program-download": cip_program_download,
    "bacnet-reinitialize-device": bacnet_reinitialize_device,
    "bacnet-device-communication-control": bacnet_device_communication_control,
    "bacnet-write-priority-array": bacnet_write_priority_array,
    "opcua-security-policy-none": opcua_security_policy_none,
    "opcua-anonymous-session": opcua_anonymous_session,
    "opcua-write-unknown-client": opcua_write_unknown,
    "opcua-call-unknown-client": opcua_call_unknown,
}


def generate(out: Path = PCAP_DIR) -> list[Path]:
    """Write every rule's capture into ``out``; each starts at the plants' clock origin T0."""
    written = []
    for rule_id, make in RULE_CAPTURES.items():
        written.append(write_pcap(f"rule_{rule_id}.pcap", make(Clock(T0)), out))
    return written


def main(argv: list[str] | None = None) -> int:
    return rule_captures_cli(__doc__.splitlines()[0], generate, argv)


if __name__ == "__main__":
    raise SystemExit(main())
