"""Unified social credit code (统一社会信用代码), GB 32100-2015.

Eighteen characters from the 31-character set ``0-9 A-H J-N P-R T U W-Y`` (no I, O, Z, S, V):

1. registration authority (登记管理部门代码): one character;
2. organisation type (机构类别代码): one character;
3. positions 3-8: administrative division code (登记管理机关行政区划码, GB/T 2260): six digits;
4. positions 9-17: the organisation's identifier (主体标识码, the GB 11714 organisation code);
5. position 18: check character. With the characters' values c_i (their index in the set) and the
   weights w_i = 3^(i-1) mod 31 (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28),
   the check value is ``31 - (sum c_i * w_i mod 31)``, where 31 is written 0.

Example: ``91350100M000100Y43`` is well formed (check ``3``).
"""

from __future__ import annotations

CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_VALUE = {ch: i for i, ch in enumerate(CHARSET)}


def check_char(first17: str) -> str:
    """The check character for the first 17 characters (which must be from CHARSET)."""
    total = sum(_VALUE[ch] * w for ch, w in zip(first17, WEIGHTS))
    return CHARSET[(31 - total % 31) % 31]


def problem(code: str) -> str | None:
    """Why ``code`` is not a valid unified social credit code, or None when it is."""
    if len(code) != 18:
        return f"must be 18 characters, not {len(code)}"
    bad = sorted({ch for ch in code if ch not in _VALUE})
    if bad:
        return f"characters not allowed: {''.join(bad)} (allowed: 0-9 and A-Z without I, O, Z, S, V)"
    if not code[2:8].isdigit():
        return "positions 3-8 (administrative division code) must be digits"
    want = check_char(code[:17])
    if code[17] != want:
        return f"check character is {code[17]!r}, expected {want!r}"
    return None


def normalise(code: str) -> str:
    return code.strip().upper()
