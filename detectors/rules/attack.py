"""The MITRE ATT&CK for ICS catalogue the rules refer to: technique id -> name and tactics.

Rules name techniques by id (``T0855``); the loader checks the form (``T0`` and three digits) and
looks the name and tactics up here, so a typo in a rule is reported at load time and alerts carry
readable names without every rule repeating them. Tactics drive incident grading (how far along the
kill chain an incident has gone, see docs/incidents.md).

Source: attack.mitre.org/matrices/ics (ATT&CK for ICS v15). Deprecated techniques are left out.
"""

from __future__ import annotations

import re

TECHNIQUE_RE = re.compile(r"^T0\d{3}$")

# Tactics, in kill-chain order (the order is used to describe an incident's chain).
INITIAL_ACCESS = "Initial Access"
EXECUTION = "Execution"
PERSISTENCE = "Persistence"
PRIVILEGE_ESCALATION = "Privilege Escalation"
EVASION = "Evasion"
DISCOVERY = "Discovery"
LATERAL_MOVEMENT = "Lateral Movement"
COLLECTION = "Collection"
COMMAND_AND_CONTROL = "Command and Control"
INHIBIT_RESPONSE_FUNCTION = "Inhibit Response Function"
IMPAIR_PROCESS_CONTROL = "Impair Process Control"
IMPACT = "Impact"
TACTICS = (
    INITIAL_ACCESS,
    EXECUTION,
    PERSISTENCE,
    PRIVILEGE_ESCALATION,
    EVASION,
    DISCOVERY,
    LATERAL_MOVEMENT,
    COLLECTION,
    COMMAND_AND_CONTROL,
    INHIBIT_RESPONSE_FUNCTION,
    IMPAIR_PROCESS_CONTROL,
    IMPACT,
)
# The tactics where the process itself is touched: an incident that reaches one of them is graded up.
EFFECT_TACTICS = frozenset({INHIBIT_RESPONSE_FUNCTION, IMPAIR_PROCESS_CONTROL, IMPACT})

_IA, _EX, _PE, _PR, _EV, _DI = INITIAL_ACCESS, EXECUTION, PERSISTENCE, PRIVILEGE_ESCALATION, EVASION, DISCOVERY
_LM, _CO, _C2, _IRF, _IPC, _IM = (
    LATERAL_MOVEMENT,
    COLLECTION,
    COMMAND_AND_CONTROL,
    INHIBIT_RESPONSE_FUNCTION,
    IMPAIR_PROCESS_CONTROL,
    IMPACT,
)

TECHNIQUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "T0800": ("Activate Firmware Update Mode", (_IRF,)),
    "T0801": ("Monitor Process State", (_CO,)),
    "T0802": ("Automated Collection", (_CO,)),
    "T0803": ("Block Command Message", (_IRF,)),
    "T0804": ("Block Reporting Message", (_IRF,)),
    "T0805": ("Block Serial COM", (_IRF,)),
    "T0806": ("Brute Force I/O", (_IPC,)),
    "T0807": ("Command-Line Interface", (_EX,)),
    "T0809": ("Data Destruction", (_IRF,)),
    "T0811": ("Data from Information Repositories", (_CO,)),
    "T0812": ("Default Credentials", (_LM,)),
    "T0813": ("Denial of Control", (_IM,)),
    "T0814": ("Denial of Service", (_IRF,)),
    "T0815": ("Denial of View", (_IM,)),
    "T0816": ("Device Restart/Shutdown", (_IRF,)),
    "T0817": ("Drive-by Compromise", (_IA,)),
    "T0819": ("Exploit Public-Facing Application", (_IA,)),
    "T0820": ("Exploitation for Evasion", (_EV,)),
    "T0821": ("Modify Controller Tasking", (_EX,)),
    "T0822": ("External Remote Services", (_IA,)),
    "T0823": ("Graphical User Interface", (_EX,)),
    "T0826": ("Loss of Availability", (_IM,)),
    "T0827": ("Loss of Control", (_IM,)),
    "T0828": ("Loss of Productivity and Revenue", (_IM,)),
    "T0829": ("Loss of View", (_IM,)),
    "T0830": ("Adversary-in-the-Middle", (_CO,)),
    "T0831": ("Manipulation of Control", (_IM,)),
    "T0832": ("Manipulation of View", (_IM,)),
    "T0834": ("Native API", (_EX,)),
    "T0835": ("Manipulate I/O Image", (_IRF,)),
    "T0836": ("Modify Parameter", (_IPC,)),
    "T0837": ("Loss of Protection", (_IM,)),
    "T0838": ("Modify Alarm Settings", (_IRF,)),
    "T0839": ("Module Firmware", (_PE, _IPC)),
    "T0840": ("Network Connection Enumeration", (_DI,)),
    "T0842": ("Network Sniffing", (_DI,)),
    "T0843": ("Program Download", (_LM,)),
    "T0845": ("Program Upload", (_CO,)),
    "T0846": ("Remote System Discovery", (_DI,)),
    "T0847": ("Replication Through Removable Media", (_IA,)),
    "T0848": ("Rogue Master", (_IA,)),
    "T0849": ("Masquerading", (_EV,)),
    "T0851": ("Rootkit", (_EV, _IRF)),
    "T0852": ("Screen Capture", (_CO,)),
    "T0853": ("Scripting", (_EX,)),
    "T0855": ("Unauthorized Command Message", (_IPC,)),
    "T0856": ("Spoof Reporting Message", (_EV, _IPC)),
    "T0857": ("System Firmware", (_PE, _IRF)),
    "T0858": ("Change Operating Mode", (_EX, _EV)),
    "T0859": ("Valid Accounts", (_PE, _LM)),
    "T0860": ("Wireless Compromise", (_IA,)),
    "T0861": ("Point & Tag Identification", (_CO,)),
    "T0862": ("Supply Chain Compromise", (_IA,)),
    "T0863": ("User Execution", (_EX,)),
    "T0864": ("Transient Cyber Asset", (_IA,)),
    "T0865": ("Spearphishing Attachment", (_IA,)),
    "T0866": ("Exploitation of Remote Services", (_IA, _LM)),
    "T0867": ("Lateral Tool Transfer", (_LM,)),
    "T0868": ("Detect Operating Mode", (_CO,)),
    "T0869": ("Standard Application Layer Protocol", (_C2,)),
    "T0871": ("Execution through API", (_EX,)),
    "T0872": ("Indicator Removal on Host", (_EV,)),
    "T0873": ("Project File Infection", (_PE,)),
    "T0874": ("Hooking", (_EX, _PR)),
    "T0877": ("I/O Image", (_CO,)),
    "T0878": ("Alarm Suppression", (_IRF,)),
    "T0879": ("Damage to Property", (_IM,)),
    "T0880": ("Loss of Safety", (_IM,)),
    "T0881": ("Service Stop", (_IRF,)),
    "T0882": ("Theft of Operational Information", (_IM,)),
    "T0883": ("Internet Accessible Device", (_IA,)),
    "T0884": ("Connection Proxy", (_C2,)),
    "T0885": ("Commonly Used Port", (_C2,)),
    "T0886": ("Remote Services", (_IA, _LM)),
    "T0887": ("Wireless Sniffing", (_DI, _CO)),
    "T0888": ("Remote System Information Discovery", (_DI,)),
    "T0889": ("Modify Program", (_PE,)),
    "T0890": ("Exploitation for Privilege Escalation", (_PR,)),
    "T0891": ("Hardcoded Credentials", (_LM, _PE)),
    "T0892": ("Change Credential", (_IRF,)),
    "T0893": ("Data from Local System", (_CO,)),
    "T0894": ("System Binary Proxy Execution", (_EV,)),
    "T0895": ("Autorun Image", (_EX,)),
}


def technique_name(tid: str) -> str:
    entry = TECHNIQUES.get(tid)
    return entry[0] if entry else ""


def technique_tactics(tid: str) -> tuple[str, ...]:
    entry = TECHNIQUES.get(tid)
    return entry[1] if entry else ()


def technique_url(tid: str) -> str:
    return f"https://attack.mitre.org/techniques/{tid}/"


def tactic_order(tactic: str) -> int:
    """Position in the kill chain (unknown tactics sort last)."""
    try:
        return TACTICS.index(tactic)
    except ValueError:
        return len(TACTICS)
