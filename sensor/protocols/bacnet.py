"""BACnet/IP (UDP 47808) and BACnet over ISO 8802-2 LLC: BVLC, NPDU and APDU decoding.

Layers, with the ANSI/ASHRAE 135-2020 clauses they come from:

- **BVLC** (Annex J.2): type 0x81, function, 16-bit length of the whole BVLL message. Original-Unicast,
  Original-Broadcast and Distribute-Broadcast-To-Network carry an NPDU; Forwarded-NPDU carries the
  6-octet B/IP address of the original sender first (reported as ``fields["forwarded_from"]``); the
  rest (BVLC-Result, Read/Write-Broadcast-Distribution-Table, Register-Foreign-Device, Read-FDT,
  Delete-FDT-Entry, Secure-BVLL) are BBMD management with no NPDU. BVLC type 0x82 (BACnet/IPv6,
  Annex U) is framed too, with its 3-octet virtual MAC addresses.
- **NPDU** (clause 6.2): version 1, control octet (network-layer message, DNET/SNET present, expecting
  reply, priority), optional DNET/DLEN/DADR, SNET/SLEN/SADR, hop count, and either a network-layer
  message (clause 6.4, with a vendor id for types >= 0x80) or an APDU.
- **APDU** (clause 20.1): PDU type in the high nibble, then per type the segmentation bits, invoke id,
  sequence number and window size, and the service choice; the service parameters are ASN.1 in the
  BACnet encoding of clause 20.2 (tag number, class, length/value/type, opening and closing tags).

What this module reports, and why it is shaped this way:

- One ``IcsEvent`` per APDU, and one per BVLC management message or network-layer message (those have
  no APDU; ``fields["layer"]`` says "bvlc" / "network" / "apdu"). ``function`` is the service choice
  and ``function_name`` its lower_snake name (``"write_property"``, ``"who_is"``, ``"i_am"``);
  segment-ACK, reject and abort carry no service choice (function -1, ``fields["service"]`` names the
  paired request when it was seen).
- Counting follows Wireshark 4.0: one ``bacnet`` PDU per APDU (``bacapp.type``), and
  ``confirmed:<n>`` for every confirmed-request, simple-ACK, complex-ACK (each segment) and error PDU,
  ``unconfirmed:<n>`` for every unconfirmed request. A pure BVLC/NPDU message counts nothing.
- Service parameters are decoded for the services a detector needs (ReadProperty(Multiple),
  WriteProperty(Multiple), ReinitializeDevice, DeviceCommunicationControl, Atomic{Read,Write}File,
  SubscribeCOV(Property), COV and event notifications, Create/DeleteObject, list elements, ReadRange,
  Who-Is/I-Am, Who-Has/I-Have, time synchronisation, private transfer, life safety, errors) into
  ``objects`` ("analog-value:3"), ``values``, ``address`` (first object instance) and ``fields``
  (property names, array index, write priority, error class/code, identity...). Passwords are never
  reported, only their presence and length.
- The tag walker is a flat loop with an explicit depth (max 16) and a tag budget (512): no recursion,
  no unbounded work, whatever the datagram holds. Nothing here raises on wire data.

Categories (see docs/protocols/bacnet.md): reads and subscriptions ``read``; writes, list edits,
time synchronisation ``write``; file transfer and object creation/deletion ``program``;
ReinitializeDevice and DeviceCommunicationControl ``diagnostic``; alarm acknowledgement and life
safety operations ``control``; Who-Is/I-Am/Who-Has/I-Have ``discovery``; virtual terminal,
authentication and BVLC foreign-device registration ``session``.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from typing import Any, ClassVar

from sensor.events import (
    CONTROL,
    DIAGNOSTIC,
    DISCOVERY,
    EXCEPTION,
    MALFORMED,
    OK,
    OTHER,
    PROGRAM,
    READ,
    REQUEST,
    RESPONSE,
    SESSION,
    UNSOLICITED,
    WRITE,
    IcsEvent,
)
from sensor.protocols.base import Analyzer, ProtocolSpec, Session, pair_latency

PROTO = "bacnet"
PORT = 47808  # 0xBAC0
LLC_SAP = 0x82  # ISO 8802-2 SAP assigned to BACnet (clause 7)
MAX_TAGS = 512  # tags decoded per APDU
MAX_DEPTH = 16  # nesting of opening tags
MAX_VALUES = 32  # values kept per event
MAX_OBJECTS = 64  # objects kept per event
MAX_STRING = 256  # characters kept from a character string
PENDING_CAP = 256  # outstanding confirmed requests kept per flow for pairing

_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")

# --- BVLC functions (Annex J.2) and BACnet/IPv6 BVLC functions (Annex U.2).
BVLC_FUNCTIONS: dict[int, str] = {
    0x00: "bvlc_result",
    0x01: "write_broadcast_distribution_table",
    0x02: "read_broadcast_distribution_table",
    0x03: "read_broadcast_distribution_table_ack",
    0x04: "forwarded_npdu",
    0x05: "register_foreign_device",
    0x06: "read_foreign_device_table",
    0x07: "read_foreign_device_table_ack",
    0x08: "delete_foreign_device_table_entry",
    0x09: "distribute_broadcast_to_network",
    0x0A: "original_unicast_npdu",
    0x0B: "original_broadcast_npdu",
    0x0C: "secure_bvll",
}
BVLC_RESULTS: dict[int, str] = {
    0x0000: "successful_completion",
    0x0010: "write_bdt_nak",
    0x0020: "read_bdt_nak",
    0x0030: "register_foreign_device_nak",
    0x0040: "read_fdt_nak",
    0x0050: "delete_fdt_entry_nak",
    0x0060: "distribute_broadcast_to_network_nak",
}
_BVLC_NPDU_OFFSET = {0x04: 10, 0x09: 4, 0x0A: 4, 0x0B: 4}  # where the NPDU starts, per function
# BVLC management: category and direction of the message itself
_BVLC_KIND: dict[int, tuple[str, str]] = {
    0x00: (SESSION, RESPONSE),
    0x01: (WRITE, REQUEST),
    0x02: (DISCOVERY, REQUEST),
    0x03: (DISCOVERY, RESPONSE),
    0x05: (SESSION, REQUEST),
    0x06: (DISCOVERY, REQUEST),
    0x07: (DISCOVERY, RESPONSE),
    0x08: (WRITE, REQUEST),
    0x0C: (SESSION, REQUEST),
}
BVLC6_FUNCTIONS: dict[int, str] = {
    0x00: "bvlc_result",
    0x01: "original_unicast_npdu",
    0x02: "original_broadcast_npdu",
    0x03: "address_resolution",
    0x04: "forwarded_address_resolution",
    0x05: "address_resolution_ack",
    0x06: "virtual_address_resolution",
    0x07: "virtual_address_resolution_ack",
    0x08: "forwarded_npdu",
    0x09: "register_foreign_device",
    0x0A: "delete_foreign_device_table_entry",
    0x0B: "secure_bvll",
    0x0C: "distribute_broadcast_to_network",
}
_BVLC6_NPDU_OFFSET = {0x01: 10, 0x02: 7, 0x08: 25, 0x0C: 7}

# --- Network layer messages (clause 6.2.4).
NETWORK_MESSAGES: dict[int, str] = {
    0x00: "who_is_router_to_network",
    0x01: "i_am_router_to_network",
    0x02: "i_could_be_router_to_network",
    0x03: "reject_message_to_network",
    0x04: "router_busy_to_network",
    0x05: "router_available_to_network",
    0x06: "initialize_routing_table",
    0x07: "initialize_routing_table_ack",
    0x08: "establish_connection_to_network",
    0x09: "disconnect_connection_to_network",
    0x0A: "challenge_request",
    0x0B: "security_payload",
    0x0C: "security_response",
    0x0D: "request_key_update",
    0x0E: "update_key_set",
    0x0F: "update_distribution_key",
    0x10: "request_master_key",
    0x11: "set_master_key",
    0x12: "what_is_network_number",
    0x13: "network_number_is",
}
_NETWORK_KIND: dict[int, tuple[str, str]] = {
    0x00: (DISCOVERY, REQUEST),
    0x01: (DISCOVERY, RESPONSE),
    0x02: (DISCOVERY, RESPONSE),
    0x03: (SESSION, RESPONSE),
    0x04: (SESSION, UNSOLICITED),
    0x05: (SESSION, UNSOLICITED),
    0x06: (WRITE, REQUEST),
    0x07: (WRITE, RESPONSE),
    0x08: (SESSION, REQUEST),
    0x09: (SESSION, REQUEST),
    0x12: (DISCOVERY, REQUEST),
    0x13: (DISCOVERY, RESPONSE),
}

# --- APDU types (clause 20.1.1) and services (clause 21, BACnetConfirmedServiceChoice and
# BACnetUnconfirmedServiceChoice).
APDU_TYPES = (
    "confirmed_request", "unconfirmed_request", "simple_ack", "complex_ack",
    "segment_ack", "error", "reject", "abort",
)
CONFIRMED_SERVICES: dict[int, str] = {
    0: "acknowledge_alarm", 1: "confirmed_cov_notification", 2: "confirmed_event_notification",
    3: "get_alarm_summary", 4: "get_enrollment_summary", 5: "subscribe_cov", 6: "atomic_read_file",
    7: "atomic_write_file", 8: "add_list_element", 9: "remove_list_element", 10: "create_object",
    11: "delete_object", 12: "read_property", 13: "read_property_conditional", 14: "read_property_multiple",
    15: "write_property", 16: "write_property_multiple", 17: "device_communication_control",
    18: "confirmed_private_transfer", 19: "confirmed_text_message", 20: "reinitialize_device",
    21: "vt_open", 22: "vt_close", 23: "vt_data", 24: "authenticate", 25: "request_key", 26: "read_range",
    27: "life_safety_operation", 28: "subscribe_cov_property", 29: "get_event_information",
    30: "subscribe_cov_property_multiple", 31: "confirmed_cov_notification_multiple",
    32: "confirmed_audit_notification", 33: "audit_log_query",
}
UNCONFIRMED_SERVICES: dict[int, str] = {
    0: "i_am", 1: "i_have", 2: "unconfirmed_cov_notification", 3: "unconfirmed_event_notification",
    4: "unconfirmed_private_transfer", 5: "unconfirmed_text_message", 6: "time_synchronization",
    7: "who_has", 8: "who_is", 9: "utc_time_synchronization", 10: "write_group",
    11: "unconfirmed_cov_notification_multiple", 12: "unconfirmed_audit_notification", 13: "who_am_i",
    14: "you_are",
}
CONFIRMED_CATEGORY: dict[int, str] = {
    0: CONTROL, 1: READ, 2: READ, 3: READ, 4: READ, 5: READ, 6: PROGRAM, 7: PROGRAM, 8: WRITE, 9: WRITE,
    10: PROGRAM, 11: PROGRAM, 12: READ, 13: READ, 14: READ, 15: WRITE, 16: WRITE, 17: DIAGNOSTIC, 18: OTHER,
    19: OTHER, 20: DIAGNOSTIC, 21: SESSION, 22: SESSION, 23: SESSION, 24: SESSION, 25: SESSION, 26: READ,
    27: CONTROL, 28: READ, 29: READ, 30: READ, 31: READ, 32: OTHER, 33: READ,
}
UNCONFIRMED_CATEGORY: dict[int, str] = {
    0: DISCOVERY, 1: DISCOVERY, 2: READ, 3: READ, 4: OTHER, 5: OTHER, 6: WRITE, 7: DISCOVERY, 8: DISCOVERY,
    9: WRITE, 10: WRITE, 11: READ, 12: OTHER, 13: DISCOVERY, 14: DISCOVERY,
}
# Fixed APDU header length per PDU type up to and including the service choice / reason (20.1.2-20.1.9);
# segmented confirmed requests and complex ACKs carry two more octets (sequence number, window).
# Wireshark 4.0 adds bacapp.type to a Segment-ACK before reading anything else: one octet is enough.
_APDU_HEADER = (4, 2, 3, 3, 1, 3, 3, 3)
_CUT_BY_SEGMENTATION = ("bacnet_bad_tag", "bacnet_unclosed_tag")
# Confirmed notifications are reports too: the device speaks first (the SimpleACK is the response).
_CONFIRMED_DIRECTION: dict[int, str] = {1: UNSOLICITED, 2: UNSOLICITED, 31: UNSOLICITED, 32: UNSOLICITED}
# Unconfirmed services that report rather than ask (direction unsolicited / response).
_UNCONFIRMED_DIRECTION: dict[int, str] = {0: RESPONSE, 1: RESPONSE, 2: UNSOLICITED, 3: UNSOLICITED,
                                          11: UNSOLICITED, 12: UNSOLICITED, 14: RESPONSE}

# --- Enumerations (clause 21).
OBJECT_TYPES: dict[int, str] = {
    0: "analog-input", 1: "analog-output", 2: "analog-value", 3: "binary-input", 4: "binary-output",
    5: "binary-value", 6: "calendar", 7: "command", 8: "device", 9: "event-enrollment", 10: "file",
    11: "group", 12: "loop", 13: "multi-state-input", 14: "multi-state-output", 15: "notification-class",
    16: "program", 17: "schedule", 18: "averaging", 19: "multi-state-value", 20: "trend-log",
    21: "life-safety-point", 22: "life-safety-zone", 23: "accumulator", 24: "pulse-converter",
    25: "event-log", 26: "global-group", 27: "trend-log-multiple", 28: "load-control",
    29: "structured-view", 30: "access-door", 31: "timer", 32: "access-credential", 33: "access-point",
    34: "access-rights", 35: "access-user", 36: "access-zone", 37: "credential-data-input",
    38: "network-security", 39: "bitstring-value", 40: "characterstring-value", 41: "date-pattern-value",
    42: "date-value", 43: "datetime-pattern-value", 44: "datetime-value", 45: "integer-value",
    46: "large-analog-value", 47: "octetstring-value", 48: "positive-integer-value",
    49: "time-pattern-value", 50: "time-value", 51: "notification-forwarder", 52: "alert-enrollment",
    53: "channel", 54: "lighting-output", 55: "binary-lighting-output", 56: "network-port",
    57: "elevator-group", 58: "escalator", 59: "lift", 60: "staging", 61: "audit-log",
    62: "audit-reporter", 63: "color", 64: "color-temperature",
}
DEVICE = 8
FILE = 10
PROPERTIES: dict[int, str] = {
    0: "acked-transitions", 1: "ack-required", 2: "action", 3: "action-text", 4: "active-text",
    5: "active-vt-sessions", 6: "alarm-value", 7: "alarm-values", 8: "all", 9: "all-writes-successful",
    10: "apdu-segment-timeout", 11: "apdu-timeout", 12: "application-software-version", 13: "archive",
    14: "bias", 15: "change-of-state-count", 16: "change-of-state-time", 17: "notification-class",
    19: "controlled-variable-reference", 20: "controlled-variable-units", 21: "controlled-variable-value",
    22: "cov-increment", 23: "date-list", 24: "daylight-savings-status", 25: "deadband",
    26: "derivative-constant", 27: "derivative-constant-units", 28: "description", 29: "description-of-halt",
    30: "device-address-binding", 31: "device-type", 32: "effective-period", 33: "elapsed-active-time",
    34: "error-limit", 35: "event-enable", 36: "event-state", 37: "event-type", 38: "exception-schedule",
    39: "fault-values", 40: "feedback-value", 41: "file-access-method", 42: "file-size", 43: "file-type",
    44: "firmware-revision", 45: "high-limit", 46: "inactive-text", 47: "in-process", 48: "instance-of",
    49: "integral-constant", 50: "integral-constant-units", 52: "limit-enable", 53: "list-of-group-members",
    54: "list-of-object-property-references", 56: "local-date", 57: "local-time", 58: "location",
    59: "low-limit", 60: "manipulated-variable-reference", 61: "maximum-output",
    62: "max-apdu-length-accepted", 63: "max-info-frames", 64: "max-master", 65: "max-pres-value",
    66: "minimum-off-time", 67: "minimum-on-time", 68: "minimum-output", 69: "min-pres-value",
    70: "model-name", 71: "modification-date", 72: "notify-type", 73: "number-of-apdu-retries",
    74: "number-of-states", 75: "object-identifier", 76: "object-list", 77: "object-name",
    78: "object-property-reference", 79: "object-type", 80: "optional", 81: "out-of-service",
    82: "output-units", 83: "event-parameters", 84: "polarity", 85: "present-value", 86: "priority",
    87: "priority-array", 88: "priority-for-writing", 89: "process-identifier", 90: "program-change",
    91: "program-location", 92: "program-state", 93: "proportional-constant",
    94: "proportional-constant-units", 96: "protocol-object-types-supported",
    97: "protocol-services-supported", 98: "protocol-version", 99: "read-only", 100: "reason-for-halt",
    102: "recipient-list", 103: "reliability", 104: "relinquish-default", 105: "required",
    106: "resolution", 107: "segmentation-supported", 108: "setpoint", 109: "setpoint-reference",
    110: "state-text", 111: "status-flags", 112: "system-status", 113: "time-delay",
    114: "time-of-active-time-reset", 115: "time-of-state-count-reset",
    116: "time-synchronization-recipients", 117: "units", 118: "update-interval", 119: "utc-offset",
    120: "vendor-identifier", 121: "vendor-name", 122: "vt-classes-supported", 123: "weekly-schedule",
    124: "attempted-samples", 125: "average-value", 126: "buffer-size", 127: "client-cov-increment",
    128: "cov-resubscription-interval", 130: "event-time-stamps", 131: "log-buffer",
    132: "log-device-object-property", 133: "enable", 134: "log-interval", 135: "maximum-value",
    136: "minimum-value", 137: "notification-threshold", 139: "protocol-revision",
    140: "records-since-notification", 141: "record-count", 142: "start-time", 143: "stop-time",
    144: "stop-when-full", 145: "total-record-count", 146: "valid-samples", 147: "window-interval",
    148: "window-samples", 149: "maximum-value-timestamp", 150: "minimum-value-timestamp",
    151: "variance-value", 152: "active-cov-subscriptions", 153: "backup-failure-timeout",
    154: "configuration-files", 155: "database-revision", 156: "direct-reading", 157: "last-restore-time",
    158: "maintenance-required", 159: "member-of", 160: "mode", 161: "operation-expected", 162: "setting",
    163: "silenced", 164: "tracking-value", 165: "zone-members", 166: "life-safety-alarm-values",
    167: "max-segments-accepted", 168: "profile-name", 169: "auto-slave-discovery",
    170: "manual-slave-address-binding", 171: "slave-address-binding", 172: "slave-proxy-enable",
    173: "last-notify-record", 174: "schedule-default", 175: "accepted-modes", 176: "adjust-value",
    177: "count", 178: "count-before-change", 179: "count-change-time", 180: "cov-period",
    181: "input-reference", 182: "limit-monitoring-interval", 183: "logging-object", 184: "logging-record",
    185: "prescale", 186: "pulse-rate", 187: "scale", 188: "scale-factor", 189: "update-time",
    190: "value-before-change", 191: "value-set", 192: "value-change-time", 193: "align-intervals",
    195: "interval-offset", 196: "last-restart-reason", 197: "logging-type",
    202: "restart-notification-recipients", 203: "time-of-device-restart",
    204: "time-synchronization-interval", 205: "trigger", 206: "utc-time-synchronization-recipients",
    371: "property-list", 485: "network-number",
}
PRESENT_VALUE = 85
PRIORITY_ARRAY = 87
# Device properties that identify the product, reported as ``fields["identity"]`` from read acks.
IDENTITY_PROPERTIES: dict[int, str] = {
    77: "object_name", 121: "vendor_name", 120: "vendor_id", 70: "model_name", 44: "firmware_revision",
    12: "application_software_version", 28: "description", 58: "location", 139: "protocol_revision",
}
# A selection of the ASHRAE vendor id register (bacnet.org/assigned-vendor-ids): the vendors met most.
VENDORS: dict[int, str] = {
    0: "ASHRAE", 1: "NIST", 2: "Trane", 3: "Daikin Applied (McQuay)", 4: "PolarSoft", 5: "Johnson Controls",
    6: "American Auto-Matrix", 7: "Siemens (Landis & Staefa)", 8: "Delta Controls", 9: "Siemens",
    10: "Schneider Electric (Andover)", 11: "TAC", 12: "Orion Analysis", 13: "Teletrol Systems",
    14: "Cimetrics", 15: "Cornell University", 16: "Carrier", 17: "Honeywell", 18: "Alerton / Honeywell",
    19: "TAC AB", 20: "Hewlett-Packard", 21: "Dorsette's", 22: "Siemens (Cerberus)", 23: "York",
    24: "Automated Logic", 25: "CSI Control Systems International", 26: "Phoenix Controls",
    27: "Innovex Technologies", 28: "KMC Controls", 29: "Xn Technologies", 30: "Hyundai Information Technology",
    31: "Tokimec", 32: "Simplex", 33: "North Building Technologies", 34: "Notifier",
    35: "Reliable Controls", 36: "Tridium", 37: "Sierra Monitor", 38: "Silicon Energy",
    39: "Kieback & Peter", 40: "Anacon Systems", 42: "Lithonia Lighting", 53: "Daikin Industries",
    56: "Liebert", 73: "ABB (Gebaudetechnik)", 74: "KNX Association", 77: "Carel", 80: "Sauter",
    82: "Mitsubishi Electric", 86: "Watt Stopper", 89: "Saia-Burgess Controls", 90: "Hitachi",
    91: "Trend Control Systems", 95: "Richards-Zeta", 98: "Toshiba", 105: "Priva", 111: "Leviton",
    112: "Fujitsu", 113: "Emerson Network Power", 127: "ABB", 140: "Viconics", 141: "Yaskawa",
    150: "Advantech", 160: "Rockwell Automation", 171: "Cylon Controls", 176: "Lutron", 178: "LOYTEC",
    187: "Softing", 189: "Schneider Toshiba Inverter", 190: "Danfoss Drives", 191: "Eaton",
    196: "Yokogawa", 211: "VIPA", 217: "Samsung SDS", 222: "WAGO", 226: "Phoenix Contact",
    227: "Grundfos", 233: "Red Lion Controls", 245: "Contemporary Controls", 246: "Intesis",
    255: "Lennox", 260: "BACnet Stack at SourceForge", 264: "Regin", 276: "GE Consumer & Industrial",
    303: "Real Time Automation", 313: "Siemens Energy & Automation", 335: "Schneider Electric",
    339: "Vaisala", 343: "BACnet Interoperability Testing Services", 364: "Distech Controls",
    366: "ICONICS", 388: "Carlo Gavazzi", 389: "Chipkin Automation", 415: "Beckhoff", 423: "Belimo",
    432: "LG Electronics", 435: "Delta Electronics",
}
MAX_APDU_CODES = (50, 128, 206, 480, 1024, 1476)
MAX_SEGMENTS_CODES = (0, 2, 4, 8, 16, 32, 64, 65)  # 0 = unspecified, 65 = more than 64
SEGMENTATION: dict[int, str] = {0: "both", 1: "transmit", 2: "receive", 3: "none"}
REINIT_STATES: dict[int, str] = {
    0: "coldstart", 1: "warmstart", 2: "start_backup", 3: "end_backup", 4: "start_restore",
    5: "end_restore", 6: "abort_restore", 7: "activate_changes",
}
DCC_STATES: dict[int, str] = {0: "enable", 1: "disable", 2: "disable_initiation"}
ERROR_CLASSES: dict[int, str] = {
    0: "device", 1: "object", 2: "property", 3: "resources", 4: "security", 5: "services", 6: "vt",
    7: "communication",
}
ERROR_CODES: dict[int, str] = {
    0: "other", 1: "authentication_failed", 2: "configuration_in_progress", 3: "device_busy",
    4: "dynamic_creation_not_supported", 5: "file_access_denied", 6: "incompatible_security_levels",
    7: "inconsistent_parameters", 8: "inconsistent_selection_criterion", 9: "invalid_data_type",
    10: "invalid_file_access_method", 11: "invalid_file_start_position", 12: "invalid_operator_name",
    13: "invalid_parameter_data_type", 14: "invalid_time_stamp", 15: "key_generation_error",
    16: "missing_required_parameter", 17: "no_objects_of_specified_type", 18: "no_space_for_object",
    19: "no_space_to_add_list_element", 20: "no_space_to_write_property", 21: "no_vt_sessions_available",
    22: "property_is_not_a_list", 23: "object_deletion_not_permitted", 24: "object_identifier_already_exists",
    25: "operational_problem", 26: "password_failure", 27: "read_access_denied", 28: "security_not_supported",
    29: "service_request_denied", 30: "timeout", 31: "unknown_object", 32: "unknown_property",
    34: "unknown_vt_class", 35: "unknown_vt_session", 36: "unsupported_object_type",
    37: "value_out_of_range", 38: "vt_session_already_closed", 39: "vt_session_termination_failure",
    40: "write_access_denied", 41: "character_set_not_supported", 42: "invalid_array_index",
    43: "cov_subscription_failed", 44: "not_cov_property", 45: "optional_functionality_not_supported",
    46: "invalid_configuration_data", 47: "datatype_not_supported", 48: "duplicate_name",
    49: "duplicate_object_id", 50: "property_is_not_an_array", 51: "abort_buffer_overflow",
    52: "abort_invalid_apdu_in_this_state", 53: "abort_preempted_by_higher_priority_task",
    54: "abort_segmentation_not_supported", 55: "abort_proprietary", 56: "abort_other", 57: "invalid_tag",
    58: "network_down", 59: "reject_buffer_overflow", 60: "reject_inconsistent_parameters",
    61: "reject_invalid_parameter_data_type", 62: "reject_invalid_tag", 63: "reject_missing_required_parameter",
    64: "reject_parameter_out_of_range", 65: "reject_too_many_arguments", 66: "reject_undefined_enumeration",
    67: "reject_unrecognized_service", 68: "reject_proprietary", 69: "reject_other", 70: "unknown_device",
    71: "unknown_route", 72: "value_not_initialized", 73: "invalid_event_state", 74: "no_alarm_configured",
    75: "log_buffer_full", 76: "logged_value_purged", 77: "no_property_specified",
    78: "not_configured_for_triggered_logging", 79: "unknown_subscription", 80: "parameter_out_of_range",
    81: "list_element_not_found", 82: "busy", 83: "communication_disabled",
}
REJECT_REASONS: dict[int, str] = {
    0: "other", 1: "buffer_overflow", 2: "inconsistent_parameters", 3: "invalid_parameter_data_type",
    4: "invalid_tag", 5: "missing_required_parameter", 6: "parameter_out_of_range", 7: "too_many_arguments",
    8: "undefined_enumeration", 9: "unrecognized_service", 10: "invalid_data_encoding",
}
ABORT_REASONS: dict[int, str] = {
    0: "other", 1: "buffer_overflow", 2: "invalid_apdu_in_this_state", 3: "preempted_by_higher_priority_task",
    4: "segmentation_not_supported", 5: "security_error", 6: "insufficient_security",
    7: "window_size_out_of_range", 8: "application_exceeded_reply_time", 9: "out_of_resources",
    10: "tsm_timeout", 11: "apdu_too_long",
}
LIFE_SAFETY_OPERATIONS: dict[int, str] = {
    0: "none", 1: "silence", 2: "silence_audible", 3: "silence_visual", 4: "reset", 5: "reset_alarm",
    6: "reset_fault", 7: "unsilence", 8: "unsilence_audible", 9: "unsilence_visual",
}


def object_name(oid: int) -> str:
    """``"analog-value:3"`` for a 32-bit BACnetObjectIdentifier (type in bits 31-22, instance 21-0)."""
    t = oid >> 22
    return f"{OBJECT_TYPES.get(t, f'object-{t}')}:{oid & 0x3FFFFF}"


def property_name(pid: int) -> str:
    return PROPERTIES.get(pid, f"property-{pid}")


# --- ASN.1 tags (clause 20.2.1). A decoded tag is a tuple:
#   (depth, number, is_context, kind, data offset, data length, lvt, parent)
# kind: PRIM / OPEN / CLOSE; ``lvt`` keeps the raw length/value/type bits (the value of an application
# BOOLEAN); ``parent`` is the tag number of the innermost enclosing context opening tag (-1 at top).
PRIM, OPEN, CLOSE = 0, 1, 2
Tag = tuple[int, int, bool, int, int, int, int, int]


def tokenize(b: bytes, o: int, end: int, max_tags: int = MAX_TAGS) -> tuple[list[Tag], str | None]:
    """Flat list of the tags in ``b[o:end]``; returns (tags, anomaly or None). Never raises, no recursion."""
    tags: list[Tag] = []
    append = tags.append
    stack: list[int] = []  # tag numbers of the open context tags
    depth = 0  # len(stack), kept in a local: this loop runs once per tag of every APDU
    parent = -1  # stack[-1], or -1 at the top level
    count = 0  # len(tags)
    while o < end:
        if count >= max_tags:
            return tags, "bacnet_tag_budget"
        count += 1
        t = b[o]
        o += 1
        num = t >> 4
        ctx = t & 0x08 != 0
        lvt = t & 0x07
        if num == 15:
            if o >= end:
                return tags, "bacnet_bad_tag"
            num = b[o]
            o += 1
        if ctx and lvt == 6:
            if depth >= MAX_DEPTH:
                return tags, "bacnet_tag_depth"
            append((depth, num, True, OPEN, o, 0, lvt, parent))
            stack.append(num)
            depth += 1
            parent = num
            continue
        if ctx and lvt == 7:
            if not depth or parent != num:
                return tags, "bacnet_bad_tag"
            stack.pop()
            depth -= 1
            parent = stack[-1] if depth else -1
            append((depth, num, True, CLOSE, o, 0, lvt, parent))
            continue
        if not ctx and num == 1:  # application BOOLEAN: the value is in the LVT bits, no content octets
            append((depth, 1, False, PRIM, o, 0, lvt, parent))
            continue
        if lvt == 5:  # extended length
            if o >= end:
                return tags, "bacnet_bad_tag"
            ln = b[o]
            o += 1
            if ln == 254:
                if o + 2 > end:
                    return tags, "bacnet_bad_tag"
                ln = _BE16.unpack_from(b, o)[0]
                o += 2
            elif ln == 255:
                if o + 4 > end:
                    return tags, "bacnet_bad_tag"
                ln = _BE32.unpack_from(b, o)[0]
                o += 4
        else:
            ln = lvt
        if o + ln > end:
            return tags, "bacnet_bad_tag"
        append((depth, num, ctx, PRIM, o, ln, lvt, parent))
        o += ln
    if depth:
        return tags, "bacnet_unclosed_tag"
    return tags, None


def uint(b: bytes, o: int, ln: int) -> int:
    """Unsigned, big-endian (clause 20.2.4); at most 8 octets are read (longer values are clipped)."""
    return int.from_bytes(b[o : o + min(ln, 8)], "big")


def sint(b: bytes, o: int, ln: int) -> int:
    return int.from_bytes(b[o : o + min(ln, 8)], "big", signed=True)


def char_string(b: bytes, o: int, ln: int) -> str:
    """CharacterString (clause 20.2.9): the first octet names the character set."""
    if ln < 1:
        return ""
    cs = b[o]
    raw = b[o + 1 : o + min(ln, 4 * MAX_STRING + 1)]
    if cs == 0:
        text = raw.decode("utf-8", "replace")
    elif cs == 4:
        text = raw.decode("utf-16-be", "replace")
    elif cs == 3:
        text = raw.decode("utf-32-be", "replace")
    else:  # 1 = IBM DBCS, 2 = JIS X 0208, 5 = ISO 8859-1: read as Latin-1 (never fails)
        text = raw.decode("latin-1")
    return text[:MAX_STRING]


def _date(b: bytes, o: int) -> str:
    y, m, d = b[o], b[o + 1], b[o + 2]
    ys = "*" if y == 255 else str(1900 + y)
    ms = "*" if m == 255 else f"{m:02d}"  # 13/14 = odd/even months
    ds = "*" if d == 255 else f"{d:02d}"  # 32 = last day of month
    return f"{ys}-{ms}-{ds}"


def _time(b: bytes, o: int) -> str:
    parts = [("*" if x == 255 else f"{x:02d}") for x in (b[o], b[o + 1], b[o + 2], b[o + 3])]
    return f"{parts[0]}:{parts[1]}:{parts[2]}.{parts[3]}"


def _finite(x: float) -> float | str:
    """NaN and the infinities are not JSON numbers (the event outputs and Elasticsearch reject them):
    they are kept as their text, "nan", "inf" or "-inf", as DNP3 and S7comm do."""
    return x if math.isfinite(x) else repr(x)


def app_value(b: bytes, tag: Tag) -> Any:
    """Decode an application-tagged primitive (clause 20.2.2-20.2.14) into a JSON-friendly value."""
    num, o, ln = tag[1], tag[4], tag[5]
    if num == 0:
        return None
    if num == 1:
        return bool(tag[6])
    if num == 2:
        return uint(b, o, ln)
    if num == 3:
        return sint(b, o, ln)
    if num == 4:
        return _finite(_F32.unpack_from(b, o)[0]) if ln == 4 else None
    if num == 5:
        return _finite(_F64.unpack_from(b, o)[0]) if ln == 8 else None
    if num == 6:
        return b[o : o + min(ln, 64)].hex()
    if num == 7:
        return char_string(b, o, ln)
    if num == 8:
        if ln < 1:
            return ""
        unused = b[o] & 0x07
        bits = "".join(f"{x:08b}" for x in b[o + 1 : o + min(ln, 17)])
        return bits[: max(0, len(bits) - unused)] if ln <= 17 else bits
    if num == 9:
        return uint(b, o, ln)
    if num == 10:
        return _date(b, o) if ln == 4 else None
    if num == 11:
        return _time(b, o) if ln == 4 else None
    if num == 12:
        return object_name(_BE32.unpack_from(b, o)[0]) if ln == 4 else None
    return b[o : o + min(ln, 64)].hex()  # reserved application tags 13-15


# --- Service parameter walker. Each service names the roles of its context tags by
# (parent opening tag number or -1, tag number). Roles: "obj" (object id), "dev" (a device object id:
# also the unit), "prop", "idx", "prio", "val" (an opening tag whose content are values), "err" (an
# opening tag holding error class and code), "otype" (an object type enumeration).
Roles = dict[tuple[int, int], str]
_RP: Roles = {(-1, 0): "obj", (-1, 1): "prop", (-1, 2): "idx", (-1, 3): "val", (-1, 4): "prio"}
_RPM_REQ: Roles = {(-1, 0): "obj", (1, 0): "prop", (1, 1): "idx"}
_RPM_ACK: Roles = {(-1, 0): "obj", (1, 2): "prop", (1, 3): "idx", (1, 4): "val", (1, 5): "err"}
_WPM: Roles = {(-1, 0): "obj", (1, 0): "prop", (1, 1): "idx", (1, 2): "val", (1, 3): "prio"}
_COV: Roles = {(-1, 1): "dev", (-1, 2): "obj", (4, 0): "prop", (4, 1): "idx", (4, 2): "val", (4, 3): "prio"}
_COV_MULTI: Roles = {(-1, 1): "dev", (4, 0): "obj", (1, 0): "prop", (1, 1): "idx", (1, 2): "val"}
_SUB_COV: Roles = {(-1, 1): "obj", (4, 0): "prop", (4, 1): "idx"}
_EVENT: Roles = {(-1, 1): "dev", (-1, 2): "obj"}
_LIST: Roles = {(-1, 0): "obj", (-1, 1): "prop", (-1, 2): "idx", (-1, 3): "val"}
_READ_RANGE: Roles = {(-1, 0): "obj", (-1, 1): "prop", (-1, 2): "idx", (-1, 5): "val"}
_CREATE: Roles = {(0, 0): "otype", (0, 1): "obj", (1, 0): "prop", (1, 1): "idx", (1, 2): "val", (1, 3): "prio"}
_ACK_ALARM: Roles = {(-1, 1): "obj"}
_LIFE_SAFETY: Roles = {(-1, 3): "obj"}
_WHO_HAS: Roles = {(-1, 2): "obj"}
_TEXT: Roles = {(-1, 0): "dev"}

CONFIRMED_REQUEST_ROLES: dict[int, Roles] = {
    0: _ACK_ALARM, 1: _COV, 2: _EVENT, 5: _SUB_COV, 8: _LIST, 9: _LIST, 10: _CREATE, 12: _RP,
    14: _RPM_REQ, 15: _RP, 16: _WPM, 19: _TEXT, 26: _READ_RANGE, 27: _LIFE_SAFETY,
    28: _SUB_COV, 31: _COV_MULTI,
}
COMPLEX_ACK_ROLES: dict[int, Roles] = {12: _RP, 14: _RPM_ACK, 26: _READ_RANGE}
UNCONFIRMED_ROLES: dict[int, Roles] = {2: _COV, 3: _EVENT, 5: _TEXT, 7: _WHO_HAS, 11: _COV_MULTI}
# Private transfer parameters are vendor-defined ([2] serviceParameters): not walked, and encoding
# errors inside them are the vendor's business, not an anomaly of ours.
_OPAQUE_CONFIRMED = frozenset({18})
_OPAQUE_UNCONFIRMED = frozenset({4})


class Info:
    """What the service walker found in one APDU (one object per APDU, slotted)."""

    __slots__ = ("error", "fields", "identity", "objects", "props", "unit", "values")

    def __init__(self) -> None:
        self.objects: list[str] = []
        self.props: list[str] = []
        self.values: list[Any] = []
        self.fields: dict[str, Any] = {}
        self.unit: int | None = None
        self.identity: dict[str, Any] | None = None
        self.error: tuple[int, int] | None = None

    def add_object(self, oid: int) -> None:
        name = object_name(oid)
        if name not in self.objects and len(self.objects) < MAX_OBJECTS:
            self.objects.append(name)


def walk(b: bytes, tags: list[Tag], roles: Roles, info: Info) -> None:
    """Apply a service's role map to its tag list: objects, properties, values, priority, errors."""
    cur_obj = -1
    cur_prop = -1
    val_depth = -1  # depth of the opening tag whose content is being collected as values
    err_depth = -1
    err_vals: list[int] = []
    identity_seen = False
    values = info.values
    for tag in tags:
        depth, num, ctx, kind, o, ln, _lvt, parent = tag
        if val_depth >= 0:
            if kind == CLOSE and depth == val_depth:
                val_depth = -1
            elif kind == PRIM and not ctx:
                value = app_value(b, tag)
                if len(values) < MAX_VALUES:
                    values.append(value)
                if (cur_obj >> 22) == DEVICE and cur_prop in IDENTITY_PROPERTIES and not identity_seen:
                    identity_seen = True
                    ident = info.identity
                    if ident is None:
                        ident = info.identity = {"device_instance": cur_obj & 0x3FFFFF}
                    key = IDENTITY_PROPERTIES[cur_prop]
                    ident[key] = value
                    if cur_prop == 120 and isinstance(value, int):
                        ident["vendor"] = VENDORS.get(value, f"vendor-{value}")
            continue
        if err_depth >= 0:
            if kind == CLOSE and depth == err_depth:
                err_depth = -1
                if len(err_vals) >= 2 and info.error is None:
                    info.error = (err_vals[0], err_vals[1])
            elif kind == PRIM and not ctx and num == 9:
                err_vals.append(uint(b, o, ln))
            continue
        if not ctx:
            continue
        role = roles.get((parent, num))
        if role is None:
            continue
        if kind == OPEN:
            if role == "val":
                val_depth = depth
                identity_seen = False
            elif role == "err":
                err_depth = depth
                err_vals = []
            continue
        if kind != PRIM:
            continue
        if role == "obj" or role == "dev":
            if ln == 4:
                cur_obj = _BE32.unpack_from(b, o)[0]
                info.add_object(cur_obj)
                if (cur_obj >> 22) == DEVICE and info.unit is None:
                    info.unit = cur_obj & 0x3FFFFF
        elif role == "prop":
            cur_prop = uint(b, o, ln)
            name = property_name(cur_prop)
            if name not in info.props and len(info.props) < MAX_OBJECTS:
                info.props.append(name)
        elif role == "idx":
            info.fields.setdefault("array_index", uint(b, o, ln))
        elif role == "prio":
            info.fields.setdefault("priority", uint(b, o, ln))
        elif role == "otype":
            t = uint(b, o, ln)
            info.fields["object_type"] = OBJECT_TYPES.get(t, f"object-{t}")


def _ctx(tags: list[Tag], parent: int, num: int) -> Tag | None:
    """First primitive context tag ``[num]`` directly under ``parent`` (-1 = top level)."""
    for tag in tags:
        if tag[2] and tag[3] == PRIM and tag[1] == num and tag[7] == parent and (parent >= 0 or tag[0] == 0):
            return tag
    return None


def _top_app(tags: list[Tag]) -> list[Tag]:
    """Application-tagged primitives at the top level, in order."""
    return [t for t in tags if not t[2] and t[3] == PRIM and t[0] == 0]


# --- Service-specific decoders for what the role walker cannot express.
def _d_reinitialize(b: bytes, tags: list[Tag], info: Info) -> None:
    t = _ctx(tags, -1, 0)
    if t is not None:
        state = uint(b, t[4], t[5])
        info.fields["reinit_state"] = REINIT_STATES.get(state, f"state-{state}")
        info.values.append(state)
    p = _ctx(tags, -1, 1)
    info.fields["password_present"] = p is not None
    if p is not None:
        info.fields["password_length"] = max(0, p[5] - 1)


def _d_dcc(b: bytes, tags: list[Tag], info: Info) -> None:
    d = _ctx(tags, -1, 0)
    if d is not None:
        info.fields["duration_minutes"] = uint(b, d[4], d[5])
    e = _ctx(tags, -1, 1)
    if e is not None:
        state = uint(b, e[4], e[5])
        info.fields["dcc_state"] = DCC_STATES.get(state, f"state-{state}")
        info.values.append(state)
    p = _ctx(tags, -1, 2)
    info.fields["password_present"] = p is not None
    if p is not None:
        info.fields["password_length"] = max(0, p[5] - 1)


def _file_access(b: bytes, tags: list[Tag], info: Info, write: bool) -> None:
    """Atomic{Read,Write}File request (clause 15.1, 15.2): file id, stream/record access, sizes."""
    apps = _top_app(tags)
    if apps and apps[0][1] == 12 and apps[0][5] == 4:
        info.add_object(_BE32.unpack_from(b, apps[0][4])[0])
    for tag in tags:
        if tag[2] and tag[3] == OPEN and tag[0] == 0 and tag[1] in (0, 1):
            info.fields["access"] = "stream" if tag[1] == 0 else "record"
            break
    inner = [t for t in tags if not t[2] and t[3] == PRIM and t[0] == 1]
    if inner:
        if inner[0][1] == 3:
            info.fields["file_start"] = sint(b, inner[0][4], inner[0][5])
        if write:
            data = [t for t in inner[1:] if t[1] == 6]
            info.fields["file_bytes"] = sum(t[5] for t in data)
            if info.fields.get("access") == "record" and len(inner) > 1 and inner[1][1] == 2:
                info.fields["record_count"] = uint(b, inner[1][4], inner[1][5])
        elif len(inner) > 1 and inner[1][1] == 2:
            info.fields["requested_count"] = uint(b, inner[1][4], inner[1][5])


def _d_read_file(b: bytes, tags: list[Tag], info: Info) -> None:
    _file_access(b, tags, info, write=False)


def _d_write_file(b: bytes, tags: list[Tag], info: Info) -> None:
    _file_access(b, tags, info, write=True)


def _d_read_file_ack(b: bytes, tags: list[Tag], info: Info) -> None:
    apps = _top_app(tags)
    if apps and apps[0][1] == 1:
        info.fields["end_of_file"] = bool(apps[0][6])
    data = [t for t in tags if not t[2] and t[3] == PRIM and t[0] == 1 and t[1] == 6]
    info.fields["file_bytes"] = sum(t[5] for t in data)


def _d_write_file_ack(b: bytes, tags: list[Tag], info: Info) -> None:
    t = _ctx(tags, -1, 0) or _ctx(tags, -1, 1)
    if t is not None:
        info.fields["file_start"] = sint(b, t[4], t[5])


def _d_object_id_only(b: bytes, tags: list[Tag], info: Info) -> None:
    apps = _top_app(tags)
    if apps and apps[0][1] == 12 and apps[0][5] == 4:
        info.add_object(_BE32.unpack_from(b, apps[0][4])[0])


def _d_subscribe_cov(b: bytes, tags: list[Tag], info: Info) -> None:
    pid = _ctx(tags, -1, 0)
    if pid is not None:
        info.fields["process_id"] = uint(b, pid[4], pid[5])
    conf = _ctx(tags, -1, 2)
    life = _ctx(tags, -1, 3)
    if conf is not None:
        info.fields["confirmed_notifications"] = bool(uint(b, conf[4], conf[5]))
    if life is not None:
        info.fields["lifetime"] = uint(b, life[4], life[5])
    info.fields["cancel"] = conf is None and life is None


def _d_cov_notification(b: bytes, tags: list[Tag], info: Info) -> None:
    pid = _ctx(tags, -1, 0)
    if pid is not None:
        info.fields["process_id"] = uint(b, pid[4], pid[5])
    rem = _ctx(tags, -1, 3)
    if rem is not None:
        info.fields["time_remaining"] = uint(b, rem[4], rem[5])


def _d_event_notification(b: bytes, tags: list[Tag], info: Info) -> None:
    for num, key in ((4, "notification_class"), (5, "event_priority"), (6, "event_type"), (8, "notify_type"),
                     (10, "from_state"), (11, "to_state")):
        t = _ctx(tags, -1, num)
        if t is not None:
            info.fields[key] = uint(b, t[4], t[5])


def _d_private_transfer(b: bytes, tags: list[Tag], info: Info) -> None:
    v = _ctx(tags, -1, 0)
    s = _ctx(tags, -1, 1)
    if v is not None:
        vid = uint(b, v[4], v[5])
        info.fields["vendor_id"] = vid
        info.fields["vendor"] = VENDORS.get(vid, f"vendor-{vid}")
    if s is not None:
        info.fields["service_number"] = uint(b, s[4], s[5])


def _d_life_safety(b: bytes, tags: list[Tag], info: Info) -> None:
    t = _ctx(tags, -1, 2)
    if t is not None:
        op = uint(b, t[4], t[5])
        info.fields["operation"] = LIFE_SAFETY_OPERATIONS.get(op, f"operation-{op}")
        info.values.append(op)


def _d_i_am(b: bytes, tags: list[Tag], info: Info) -> None:
    """I-Am (clause 16.1.2): device id, max APDU, segmentation supported, vendor id."""
    apps = _top_app(tags)
    if len(apps) < 4 or apps[0][1] != 12 or apps[0][5] != 4:
        info.fields["incomplete"] = True
        if apps and apps[0][1] == 12 and apps[0][5] == 4:
            info.add_object(_BE32.unpack_from(b, apps[0][4])[0])
        return
    oid = _BE32.unpack_from(b, apps[0][4])[0]
    info.add_object(oid)
    inst = oid & 0x3FFFFF
    info.unit = inst
    max_apdu = uint(b, apps[1][4], apps[1][5])
    seg = uint(b, apps[2][4], apps[2][5])
    vid = uint(b, apps[3][4], apps[3][5])
    info.identity = {
        "device_instance": inst,
        "vendor_id": vid,
        "vendor": VENDORS.get(vid, f"vendor-{vid}"),
        "max_apdu": max_apdu,
        "segmentation": SEGMENTATION.get(seg, f"segmentation-{seg}"),
    }


def _d_i_have(b: bytes, tags: list[Tag], info: Info) -> None:
    apps = _top_app(tags)
    if apps and apps[0][1] == 12 and apps[0][5] == 4:
        dev = _BE32.unpack_from(b, apps[0][4])[0]
        info.add_object(dev)
        info.unit = dev & 0x3FFFFF
    if len(apps) > 1 and apps[1][1] == 12 and apps[1][5] == 4:
        info.add_object(_BE32.unpack_from(b, apps[1][4])[0])
    if len(apps) > 2 and apps[2][1] == 7:
        info.fields["object_name"] = char_string(b, apps[2][4], apps[2][5])


def _d_who_is(b: bytes, tags: list[Tag], info: Info) -> None:
    lo = _ctx(tags, -1, 0)
    hi = _ctx(tags, -1, 1)
    if lo is not None and hi is not None:
        info.fields["range"] = [uint(b, lo[4], lo[5]), uint(b, hi[4], hi[5])]
    elif lo is not None or hi is not None:
        info.fields["incomplete"] = True  # clause 16.10.1: both limits or neither


def _d_who_has(b: bytes, tags: list[Tag], info: Info) -> None:
    _d_who_is(b, tags, info)
    name = _ctx(tags, -1, 3)
    if name is not None:
        info.fields["object_name"] = char_string(b, name[4], name[5])


def _d_time_sync(b: bytes, tags: list[Tag], info: Info) -> None:
    apps = _top_app(tags)
    if len(apps) >= 2 and apps[0][1] == 10 and apps[1][1] == 11 and apps[0][5] == 4 and apps[1][5] == 4:
        text = f"{_date(b, apps[0][4])}T{_time(b, apps[1][4])}"
        info.fields["time"] = text
        info.values.append(text)
    else:
        info.fields["incomplete"] = True


def _d_write_group(b: bytes, tags: list[Tag], info: Info) -> None:
    g = _ctx(tags, -1, 0)
    p = _ctx(tags, -1, 1)
    if g is not None:
        info.fields["group_number"] = uint(b, g[4], g[5])
    if p is not None:
        info.fields["priority"] = uint(b, p[4], p[5])


def _d_error(b: bytes, tags: list[Tag], info: Info) -> None:
    """Error-PDU body (clause 21, BACnet-Error and the service-specific error types): the first two
    application ENUMERATED found (top level, or inside the [0] errorType of the extended forms)."""
    enums = [t for t in tags if not t[2] and t[3] == PRIM and t[1] == 9 and t[0] <= 1]
    if len(enums) >= 2:
        info.error = (uint(b, enums[0][4], enums[0][5]), uint(b, enums[1][4], enums[1][5]))
    first_failed = _ctx(tags, -1, 1)
    if first_failed is not None and tags and tags[0][2] and tags[0][3] == OPEN:
        info.fields["first_failed_element"] = uint(b, first_failed[4], first_failed[5])


Special = Any  # Callable[[bytes, list[Tag], Info], None]
CONFIRMED_REQUEST_SPECIAL: dict[int, Special] = {
    1: _d_cov_notification, 2: _d_event_notification, 5: _d_subscribe_cov, 6: _d_read_file,
    7: _d_write_file, 11: _d_object_id_only, 17: _d_dcc, 18: _d_private_transfer, 20: _d_reinitialize,
    27: _d_life_safety, 28: _d_subscribe_cov,
}
COMPLEX_ACK_SPECIAL: dict[int, Special] = {
    6: _d_read_file_ack, 7: _d_write_file_ack, 10: _d_object_id_only, 18: _d_private_transfer,
}
UNCONFIRMED_SPECIAL: dict[int, Special] = {
    0: _d_i_am, 1: _d_i_have, 2: _d_cov_notification, 3: _d_event_notification, 4: _d_private_transfer,
    6: _d_time_sync, 7: _d_who_has, 8: _d_who_is, 9: _d_time_sync, 10: _d_write_group,
}


def decode_service(
    b: bytes, o: int, end: int, roles: Roles | None, special: Special | None, info: Info, opaque: bool = False
) -> str | None:
    """Tokenize ``b[o:end]`` once and run the role walker and the special decoder on it."""
    if roles is None and special is None or o >= end:
        return None
    tags, anomaly = tokenize(b, o, end)
    if opaque:
        anomaly = None
    if roles is not None:
        walk(b, tags, roles, info)
    if special is not None:
        special(b, tags, info)
    return anomaly


# A head-end polls the same points with byte-identical requests every cycle (the invoke id sits in the
# APDU header, not in the service parameters), and tokenizing + walking them was the largest cost of a
# BACnet capture. Confirmed requests are therefore decoded once per distinct parameter bytes; the memo
# keeps an immutable snapshot and every event gets fresh containers (nothing is shared between events).
_SERVICE_MEMO: dict[tuple[int, bytes], tuple[Any, ...] | None] = {}
_SERVICE_MEMO_MAX = 4096  # distinct request encodings remembered (process-wide; cleared when full)
_SCALARS = (int, float, str, bool, type(None))


def decode_request_memo(b: bytes, o: int, end: int, svc: int, info: Info) -> str | None:
    """``decode_service`` for a confirmed request of service ``svc``, memoised on its parameter bytes.

    The result is a pure function of ``b[o:end]`` and ``svc``; only results made of scalars are
    remembered, so copying the containers is a complete copy.
    """
    key = (svc, bytes(b[o:end]))  # bytes() is free on bytes, and makes a view hashable
    hit = _SERVICE_MEMO.get(key)
    if hit is not None:
        anomaly, objects, props, values, fields, unit, identity, error = hit
        info.objects = list(objects)
        info.props = list(props)
        info.values = list(values)
        info.fields = dict(fields)
        info.unit = unit
        info.identity = dict(identity) if identity is not None else None
        info.error = error
        return anomaly  # type: ignore[no-any-return]
    anomaly = decode_service(b, o, end, CONFIRMED_REQUEST_ROLES.get(svc), CONFIRMED_REQUEST_SPECIAL.get(svc), info,
                             svc in _OPAQUE_CONFIRMED)
    if key not in _SERVICE_MEMO and all(isinstance(v, _SCALARS) for v in info.fields.values()) and all(
            isinstance(v, _SCALARS) for v in info.values) and (
            info.identity is None or all(isinstance(v, _SCALARS) for v in info.identity.values())):
        if len(_SERVICE_MEMO) >= _SERVICE_MEMO_MAX:
            _SERVICE_MEMO.clear()
        _SERVICE_MEMO[key] = (anomaly, tuple(info.objects), tuple(info.props), tuple(info.values),
                              tuple(info.fields.items()), info.unit,
                              tuple(info.identity.items()) if info.identity is not None else None, info.error)
    return anomaly


_CONFIRMED_KEYS = tuple(f"confirmed:{i}" for i in range(256))  # histogram keys, precomputed
_UNCONFIRMED_KEYS = tuple(f"unconfirmed:{i}" for i in range(256))


def probe(payload: bytes, from_client: bool) -> bool:
    """BACnet/IP on a non-standard port: BVLC type 0x81, a known function, a length equal to the datagram,
    and, when the function carries one, an NPDU of version 1."""
    n = len(payload)
    if n < 4 or payload[0] != 0x81 or payload[1] not in BVLC_FUNCTIONS:
        return False
    if _BE16.unpack_from(payload, 2)[0] != n:
        return False
    start = _BVLC_NPDU_OFFSET.get(payload[1])
    if start is not None:
        return n > start + 1 and payload[start] == 0x01
    return True


class BacnetAnalyzer(Analyzer):
    """One BACnet conversation (a UDP flow, or the LLC frames between two MAC addresses)."""

    protocol: ClassVar[str] = PROTO

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        # (side that sent the confirmed request, invoke id) -> (ts, service)
        self._pending: dict[tuple[bool, int], tuple[float, int]] = {}
        self._hist: Counter[str] | None = None  # this protocol's function histogram, fetched once

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        b = bytes(data)
        n = len(b)
        if n < 2:
            self._malformed(from_client, ts, "bacnet_short", n, None)
            return
        first = b[0]
        fields: dict[str, Any] = {}
        if first == 0x81:
            self._bvlc(from_client, ts, b, fields)
        elif first == 0x82 and n >= 3 and b[1] == LLC_SAP and b[2] == 0x03:
            fields["datalink"] = "llc"
            self._npdu(from_client, ts, b, 3, n, fields)  # ISO 8802-2 LLC header DSAP SSAP UI (clause 7)
        elif first == 0x82:
            self._bvlc6(from_client, ts, b, fields)
        elif first == 0x01 and self.session.transport != "udp":
            fields["datalink"] = "llc"
            self._npdu(from_client, ts, b, 0, n, fields)  # an LLC payload handed over without its header
        else:
            self._malformed(from_client, ts, "bacnet_unknown_datalink", n, None)

    # -- BVLC (Annex J) --------------------------------------------------------------------------------
    def _bvlc(self, from_client: bool, ts: float, b: bytes, fields: dict[str, Any]) -> None:
        n = len(b)
        if n < 4:
            self._malformed(from_client, ts, "bvlc_short", n, None)
            return
        func = b[1]
        length = _BE16.unpack_from(b, 2)[0]
        fields["bvlc_function"] = BVLC_FUNCTIONS.get(func, f"bvlc-{func}")
        end = n
        if length != n:
            self.session.anomaly("bvlc_length_mismatch")
            fields["bvlc_length"] = length
            if 4 <= length < n:
                end = length  # trailing octets are not part of the message
        start = _BVLC_NPDU_OFFSET.get(func)
        if start is not None:
            if func == 0x04:
                if end < 10:
                    self._malformed(from_client, ts, "bvlc_short", n, fields)
                    return
                fields["forwarded_from"] = f"{b[4]}.{b[5]}.{b[6]}.{b[7]}:{_BE16.unpack_from(b, 8)[0]}"
            self._npdu(from_client, ts, b, start, end, fields)
            return
        self._bvlc_management(from_client, ts, b, func, end, fields)

    def _bvlc_management(self, from_client: bool, ts: float, b: bytes, func: int, end: int, fields: dict[str, Any]) -> None:
        name = BVLC_FUNCTIONS.get(func, f"bvlc-{func}")
        category, direction = _BVLC_KIND.get(func, (OTHER, REQUEST if from_client else RESPONSE))
        fields["layer"] = "bvlc"
        result = OK
        code = None
        anomaly = None
        if func == 0x00 and end >= 6:
            code = _BE16.unpack_from(b, 4)[0]
            fields["result"] = BVLC_RESULTS.get(code, f"result-{code}")
            if code:
                result = EXCEPTION
        elif func == 0x05 and end >= 6:
            fields["ttl"] = _BE16.unpack_from(b, 4)[0]
        elif func in (0x01, 0x03):
            entries: list[str] = []
            o = 4
            while o + 10 <= end and len(entries) < MAX_OBJECTS:
                entries.append(f"{b[o]}.{b[o + 1]}.{b[o + 2]}.{b[o + 3]}:{_BE16.unpack_from(b, o + 4)[0]}")
                o += 10
            fields["bdt"] = entries
            if (end - 4) % 10:
                anomaly = "bvlc_bad_table"
        elif func == 0x08 and end >= 10:
            fields["fdt_entry"] = f"{b[4]}.{b[5]}.{b[6]}.{b[7]}:{_BE16.unpack_from(b, 8)[0]}"
        elif func not in BVLC_FUNCTIONS:
            anomaly = "bvlc_unknown_function"
        if anomaly:
            self.session.anomaly(anomaly)
            result = MALFORMED
        self.session.event(
            from_client, ts, PROTO, direction, func, name, category,
            result=result, code=code, anomaly=anomaly, fields=fields, size=len(b),
        )

    def _bvlc6(self, from_client: bool, ts: float, b: bytes, fields: dict[str, Any]) -> None:
        """BACnet/IPv6 BVLC (Annex U.2): type 0x82, function, length, virtual MAC addresses."""
        n = len(b)
        if n < 4:
            self._malformed(from_client, ts, "bvlc_short", n, None)
            return
        func = b[1]
        fields["bvlc_function"] = BVLC6_FUNCTIONS.get(func, f"bvlc6-{func}")
        fields["bvlc_version"] = 6
        end = n
        length = _BE16.unpack_from(b, 2)[0]
        if length != n:
            self.session.anomaly("bvlc_length_mismatch")
            if 4 <= length < n:
                end = length
        start = _BVLC6_NPDU_OFFSET.get(func)
        if start is None:
            fields["layer"] = "bvlc"
            anomaly = None if func in BVLC6_FUNCTIONS else "bvlc_unknown_function"
            if anomaly:
                self.session.anomaly(anomaly)
            self.session.event(
                from_client, ts, PROTO, REQUEST if from_client else RESPONSE, func,
                BVLC6_FUNCTIONS.get(func, f"bvlc6-{func}"), OTHER if anomaly else SESSION,
                result=MALFORMED if anomaly else OK, anomaly=anomaly, fields=fields, size=n,
            )
            return
        if end < start:
            self._malformed(from_client, ts, "bvlc_short", n, fields)
            return
        self._npdu(from_client, ts, b, start, end, fields)

    # -- NPDU (clause 6.2) -----------------------------------------------------------------------------
    def _npdu(self, from_client: bool, ts: float, b: bytes, o: int, end: int, fields: dict[str, Any]) -> None:
        size = end  # the whole BVLL message (or LLC frame payload): what the event's ``size`` reports
        if end - o < 2:
            self._malformed(from_client, ts, "npdu_short", size, fields)
            return
        version = b[o]
        ctrl = b[o + 1]
        if version != 0x01:
            # Wireshark still hands the rest to the APDU dissector; we report and stop here
            self._malformed(from_client, ts, "npdu_bad_version", size, fields)
            return
        o += 2
        if ctrl & 0x03:
            fields["npdu_priority"] = ctrl & 0x03  # network priority (0-3); "priority" is the write priority (1-16)
        if ctrl & 0x04:
            fields["expecting_reply"] = True
        if ctrl & 0x20:  # DNET, DLEN, DADR
            if o + 3 > end:
                self._malformed(from_client, ts, "npdu_short", size, fields)
                return
            fields["dnet"] = _BE16.unpack_from(b, o)[0]
            dlen = b[o + 2]
            o += 3
            if o + dlen > end:
                self._malformed(from_client, ts, "npdu_short", size, fields)
                return
            if dlen:
                fields["dadr"] = b[o : o + dlen].hex()
            o += dlen
        if ctrl & 0x08:  # SNET, SLEN, SADR
            if o + 3 > end:
                self._malformed(from_client, ts, "npdu_short", size, fields)
                return
            fields["snet"] = _BE16.unpack_from(b, o)[0]
            slen = b[o + 2]
            o += 3
            if slen == 0:  # clause 6.2.2: "SLEN = 0 is invalid" (a source is never a broadcast)
                self.session.anomaly("npdu_bad_slen")
            if o + slen > end:
                self._malformed(from_client, ts, "npdu_short", size, fields)
                return
            fields["sadr"] = b[o : o + slen].hex()
            o += slen
        if ctrl & 0x20:
            if o >= end:
                self._malformed(from_client, ts, "npdu_short", size, fields)
                return
            fields["hop_count"] = b[o]
            o += 1
        if ctrl & 0x80:
            self._network_message(from_client, ts, b, o, end, fields, size)
            return
        if o >= end:
            self._malformed(from_client, ts, "apdu_missing", size, fields)
            return
        self._apdu(from_client, ts, b, o, end, fields, size)

    def _network_message(self, from_client: bool, ts: float, b: bytes, o: int, end: int, fields: dict[str, Any], size: int) -> None:
        if o >= end:
            self._malformed(from_client, ts, "npdu_short", size, fields)
            return
        mtype = b[o]
        o += 1
        fields["layer"] = "network"
        if mtype >= 0x80:
            name = f"proprietary-{mtype}"
            if o + 2 <= end:
                fields["vendor_id"] = _BE16.unpack_from(b, o)[0]
        else:
            name = NETWORK_MESSAGES.get(mtype, f"network-{mtype}")
        category, direction = _NETWORK_KIND.get(mtype, (OTHER, REQUEST if from_client else RESPONSE))
        if mtype in (0x00, 0x04, 0x05, 0x09, 0x13) and o + 2 <= end:
            fields["network"] = _BE16.unpack_from(b, o)[0]
        elif mtype in (0x01, 0x02, 0x03) and o + 2 <= end:
            nets: list[int] = []
            p = o + (1 if mtype == 0x03 else 0)
            if mtype == 0x03:
                fields["reject_reason"] = b[o]
            while p + 2 <= end and len(nets) < MAX_OBJECTS:
                nets.append(_BE16.unpack_from(b, p)[0])
                p += 2
                if mtype != 0x01:
                    break
            fields["networks"] = nets
        self.session.event(
            from_client, ts, PROTO, direction, mtype, name, category, fields=fields, size=size,
        )

    # -- APDU (clause 20.1) ----------------------------------------------------------------------------
    def _apdu(self, from_client: bool, ts: float, b: bytes, o: int, end: int, fields: dict[str, Any], size: int) -> None:
        b0 = b[o]
        ptype = b0 >> 4
        if ptype > 7:  # reserved PDU types (20.1.1): not an APDU, and Wireshark shows no bacapp.type
            self._malformed(from_client, ts, "apdu_unknown_type", size, fields)
            return
        seg = bool(b0 & 0x08) and ptype in (0, 3)
        n = end - o
        if n < _APDU_HEADER[ptype] + (2 if seg else 0):
            # Wireshark reads the whole fixed header before it adds any field: a cut header is no PDU
            self._malformed(from_client, ts, "apdu_short", size, fields)
            return
        stats = self.session.stats
        stats.pdus[PROTO] += 1  # Wireshark: one bacapp.type per APDU
        hist = self._hist
        if hist is None:
            hist = self._hist = stats.hist(PROTO)
        fields["layer"] = "apdu"
        fields["pdu_type"] = APDU_TYPES[ptype]
        info = Info()
        direction = RESPONSE
        result = OK
        code: int | None = None
        anomaly: str | None = None
        latency: float | None = None
        function = -1
        name = APDU_TYPES[ptype]
        category = OTHER
        if ptype == 0:  # Confirmed-Request (20.1.2)
            invoke = b[o + 2]
            fields["invoke_id"] = invoke
            fields["max_segments"] = MAX_SEGMENTS_CODES[(b[o + 1] >> 4) & 0x07]
            code_apdu = b[o + 1] & 0x0F
            fields["max_apdu"] = MAX_APDU_CODES[code_apdu] if code_apdu < 6 else code_apdu
            if b0 & 0x02:
                fields["segmented_response_accepted"] = True
            hdr = 3
            first_segment = True
            if seg:
                hdr = 5
                first_segment = self._segment_fields(b, o + 3, b0, fields)
            svc = b[o + hdr]
            hist[_CONFIRMED_KEYS[svc]] += 1
            function = svc
            name = CONFIRMED_SERVICES.get(svc, f"confirmed-{svc}")
            category = CONFIRMED_CATEGORY.get(svc, OTHER)
            direction = _CONFIRMED_DIRECTION.get(svc, REQUEST)
            key = (from_client, invoke)
            if key not in self._pending:  # later segments keep the first segment's time
                if len(self._pending) >= PENDING_CAP:
                    del self._pending[next(iter(self._pending))]
                self._pending[key] = (ts, svc)
            if first_segment:
                anomaly = decode_request_memo(b, o + hdr + 1, end, svc, info)
                if seg and anomaly in _CUT_BY_SEGMENTATION:
                    anomaly = None  # a first segment ends mid-encoding by construction
        elif ptype == 1:  # Unconfirmed-Request (20.1.3)
            svc = b[o + 1]
            hist[_UNCONFIRMED_KEYS[svc]] += 1
            function = svc
            name = UNCONFIRMED_SERVICES.get(svc, f"unconfirmed-{svc}")
            category = UNCONFIRMED_CATEGORY.get(svc, OTHER)
            direction = _UNCONFIRMED_DIRECTION.get(svc, REQUEST)
            anomaly = decode_service(b, o + 2, end, UNCONFIRMED_ROLES.get(svc), UNCONFIRMED_SPECIAL.get(svc),
                                     info, svc in _OPAQUE_UNCONFIRMED)
        elif ptype in (2, 3, 5):  # Simple-ACK (20.1.4), Complex-ACK (20.1.5), Error (20.1.7)
            invoke = b[o + 1]
            fields["invoke_id"] = invoke
            hdr = 2
            first_segment = True
            if seg:
                hdr = 4
                first_segment = self._segment_fields(b, o + 2, b0, fields)
            svc = b[o + hdr]
            hist[_CONFIRMED_KEYS[svc]] += 1
            function = svc
            name = CONFIRMED_SERVICES.get(svc, f"confirmed-{svc}")
            category = CONFIRMED_CATEGORY.get(svc, OTHER)
            latency = self._pair(not from_client, invoke, ts, keep=seg and bool(b0 & 0x04))
            body = o + hdr + 1
            if ptype == 3 and first_segment:
                anomaly = decode_service(b, body, end, COMPLEX_ACK_ROLES.get(svc), COMPLEX_ACK_SPECIAL.get(svc),
                                         info, svc in _OPAQUE_CONFIRMED)
                if seg and anomaly in _CUT_BY_SEGMENTATION:
                    anomaly = None
            elif ptype == 5:
                result = EXCEPTION
                anomaly = decode_service(b, body, end, None, _d_error, info)
                if info.error is not None:
                    cls, err = info.error
                    code = err
                    fields["error_class"] = ERROR_CLASSES.get(cls, f"class-{cls}")
                    fields["error_code"] = ERROR_CODES.get(err, f"code-{err}")
                    info.error = None
                else:
                    anomaly = anomaly or "apdu_error_incomplete"
        elif ptype == 4 and n < 4:  # a cut Segment-ACK: counted (as tshark does), not decoded
            anomaly = "apdu_short"
            result = MALFORMED
            category = SESSION
        elif ptype == 4:  # Segment-ACK (20.1.6)
            invoke = b[o + 1]
            server = bool(b0 & 0x01)
            direction = RESPONSE if server else REQUEST
            fields["invoke_id"] = invoke
            fields["sequence"] = b[o + 2]
            fields["window"] = b[o + 3]
            fields["negative"] = bool(b0 & 0x02)
            fields["server"] = server
            # SRV set: the server acknowledges segments of a request, so the requester is the peer
            asked = self._service_of(not from_client if server else from_client, invoke)
            if asked is not None:
                fields["service"] = CONFIRMED_SERVICES.get(asked, f"confirmed-{asked}")
            category = SESSION
        else:  # Reject (20.1.8), Abort (20.1.9)
            invoke = b[o + 1]
            reason = b[o + 2]
            result = EXCEPTION
            code = reason
            fields["invoke_id"] = invoke
            fields["reason"] = (REJECT_REASONS if ptype == 6 else ABORT_REASONS).get(reason, f"reason-{reason}")
            server = ptype == 6 or bool(b0 & 0x01)  # a reject always comes from the server
            if ptype == 7:
                fields["server"] = server
                direction = RESPONSE if server else REQUEST
            requester = not from_client if server else from_client
            asked = self._service_of(requester, invoke)
            if asked is not None:
                fields["service"] = CONFIRMED_SERVICES.get(asked, f"confirmed-{asked}")
                category = CONFIRMED_CATEGORY.get(asked, OTHER)
            latency = self._pair(requester, invoke, ts, keep=False)
        if anomaly:
            self.session.anomaly(anomaly)
        if info.fields:
            fields.update(info.fields)
        if info.props:
            fields["properties"] = info.props
        if info.identity is not None:
            fields["identity"] = info.identity
        if info.error is not None:
            cls, err = info.error  # an element of a ReadPropertyMultiple-ACK failed, not the request
            fields["error_class"] = ERROR_CLASSES.get(cls, f"class-{cls}")
            fields["error_code"] = ERROR_CODES.get(err, f"code-{err}")
        address = None
        if info.objects:
            address = int(info.objects[0].rsplit(":", 1)[1])
        # Built positionally (what Session.event does, without its keyword plumbing): one per APDU.
        session = self.session
        if from_client:
            addr = session.client_ip, session.client_port, session.server_ip, session.server_port
            smac, dmac = session.client_mac, session.server_mac
        else:
            addr = session.server_ip, session.server_port, session.client_ip, session.client_port
            smac, dmac = session.server_mac, session.client_mac
        session.emit(
            IcsEvent(
                ts, PROTO, *addr, session.transport, direction, function, name, category, info.unit, address,
                len(info.props) or len(info.objects) or None, tuple(info.values) if info.values else None,
                tuple(info.objects) if info.objects else None, result, code, latency, anomaly, fields,
                session.flow_id, smac, dmac, size,
            )
        )  # fmt: skip

    @staticmethod
    def _segment_fields(b: bytes, o: int, b0: int, fields: dict[str, Any]) -> bool:
        """Sequence number and window of a segmented message (20.1.2.7-8); True for the first segment."""
        fields["segmented"] = True
        fields["more_follows"] = bool(b0 & 0x04)
        fields["sequence"] = b[o]
        fields["window"] = b[o + 1]
        return b[o] == 0

    def _pair(self, requester: bool, invoke: int, ts: float, keep: bool) -> float | None:
        """Match an answer with its confirmed request (requesting side, invoke id: clause 5.4)."""
        key = (requester, invoke)
        entry = self._pending.get(key)
        if entry is None:
            return None
        if not keep:
            del self._pending[key]
        t0, _svc = entry
        return pair_latency(t0, ts)

    def _service_of(self, requester: bool, invoke: int) -> int | None:
        entry = self._pending.get((requester, invoke))
        return entry[1] if entry else None

    def _malformed(self, from_client: bool, ts: float, anomaly: str, size: int, fields: dict[str, Any] | None) -> None:
        self.session.anomaly(anomaly)
        self.session.event(
            from_client, ts, PROTO, REQUEST if from_client else RESPONSE, -1, "malformed", OTHER,
            result=MALFORMED, anomaly=anomaly, fields=fields or None, size=size,
        )


SPEC = ProtocolSpec(
    name=PROTO,
    analyzer=BacnetAnalyzer,
    udp_ports=frozenset({PORT}),
    # BACnet/Ethernet (clause 7): ISO 8802-2 LLC frames with DSAP = SSAP = 0x82. The decoder hands LLC
    # UI frames to the layer-2 table under their SAP, a value below 0x0600 that no ethertype can take.
    ethertypes=frozenset({LLC_SAP}),
    probe=probe,
    probe_order=40,
)
