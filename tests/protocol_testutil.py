"""Scaffolding shared by the protocol analyzer tests (tests/test_<protocol>.py).

- Captures: ``replay_capture`` (a capture through a fresh pipeline, keeping the protocol's events),
  ``tshark_fields`` (what tshark shows of some fields, to count as it does), and the crafted captures of
  tools/pcapgen/<protocol>.py: ``crafted_captures_fixture`` (the ``crafted`` fixture), ``write_crafted``
  and ``check_crafted_captures`` (against their committed copies in pcaps/).
- Property tests, "never raise, never loop", seeded from the real captures:
  ``fuzz_examples`` / ``fuzz_settings`` (how many examples; ``ICSWATCH_FUZZ_EXAMPLES`` turns them into
  the long fuzz run outside CI), ``capture_payloads`` (the seeds: transport payloads of real captures),
  two mutators (``MUTATIONS`` + ``mutate``: byte edits drawn up front and applied to any seed;
  ``draw_edits``: edits drawn one at a time, one kind being the protocol's own lie in a length field) and
  ``feed_alternating`` (chunks into an analyzer from either side in turn, then close).
- The documentation's example (docs/protocols/<protocol>.md): ``documented_example`` reads its bytes
  and its events, ``replay_documented_example`` feeds them to a harness and returns the events in the
  form the page shows them, next to the page's.

Test modules import them with ``from protocol_testutil import ...`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from sensor.events import IcsEvent
from sensor.protocols._harness import Harness

# ------------------------------------------------------------------------------------------------
# Captures: replayed, read by tshark, crafted
# ------------------------------------------------------------------------------------------------


def replay_capture(path: Path, *protocols: str) -> tuple[Any, list[IcsEvent]]:
    """(the replay's result, the events of ``protocols``) of a capture through a fresh pipeline."""
    from sensor.pipeline import Pipeline

    events: list[IcsEvent] = []
    result = Pipeline(on_event=events.append).replay_file(path)
    return result, [e for e in events if e.protocol in protocols]


def tshark_fields(tshark: str, path: Path, *fields: str) -> list[list[list[str]]]:
    """Per packet of the capture, per field of ``fields``, every value tshark shows ([] where absent)."""
    cmd = [tshark, "-n", "-r", str(path), "-T", "fields"]
    for field in fields:
        cmd += ["-e", field]
    cmd += ["-E", "occurrence=a", "-E", "aggregator=|"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        columns = line.split("\t")
        columns += [""] * (len(fields) - len(columns))
        rows.append([column.split("|") if column else [] for column in columns])
    return rows


def write_crafted(main: Callable[[Path], Iterable[Path]], folder: Path) -> dict[str, Path]:
    """The captures a capture script's ``main(folder)`` writes (tools/pcapgen/<protocol>.py), by name."""
    return {p.name: p for p in main(folder)}


def crafted_captures_fixture(main: Callable[[Path], Iterable[Path]]) -> Any:
    """A module-scoped fixture: ``write_crafted(main, ...)`` into a fresh temporary folder. Assign it to
    the name of the fixture (``crafted = crafted_captures_fixture(gen.main)``)."""

    @pytest.fixture(scope="module")
    def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
        return write_crafted(main, tmp_path_factory.mktemp("crafted"))

    return crafted


def check_crafted_captures(
    crafted: dict[str, Path], script: str, *, committed_required: bool, again: dict[str, Path] | None = None
) -> None:
    """Each crafted capture is small (under 100 kB), the same bytes as when written ``again`` (if given),
    and byte for byte its committed copy in pcaps/ (which must exist when ``committed_required``);
    ``python -m tools.pcapgen.<script>`` rewrites them."""
    for name, path in crafted.items():
        assert path.stat().st_size < 100_000
        if again is not None:
            assert again[name].read_bytes() == path.read_bytes()
        committed = REPO / "pcaps" / name
        if committed_required:
            assert committed.exists(), f"pcaps/{name} missing: run python -m tools.pcapgen.{script}"
        if committed.exists():
            stale = f"pcaps/{name} is stale: run python -m tools.pcapgen.{script}"
            assert committed.read_bytes() == path.read_bytes(), stale


# ------------------------------------------------------------------------------------------------
# How many examples
# ------------------------------------------------------------------------------------------------


def fuzz_examples(default: int) -> int:
    """Examples per property: ``ICSWATCH_FUZZ_EXAMPLES`` when set and not 0 (1000000 makes the long fuzz
    run, outside CI), else ``default``, small enough to keep the suite fast."""
    return int(os.environ.get("ICSWATCH_FUZZ_EXAMPLES", "0")) or default


def fuzz_settings(
    default_examples: int,
    *,
    deadline: int | None = None,
    suppress: Sequence[HealthCheck] = (HealthCheck.function_scoped_fixture, HealthCheck.too_slow),
) -> settings:
    """The hypothesis settings of a property test with ``fuzz_examples(default_examples)`` examples.

    Suppressed by default: ``function_scoped_fixture`` (the seeds are read-only, sharing them between
    examples is the point) and ``too_slow`` (drawing from large real payloads is slow by nature)."""
    return settings(
        max_examples=fuzz_examples(default_examples), deadline=deadline, suppress_health_check=list(suppress)
    )


# ------------------------------------------------------------------------------------------------
# Seeds from the real captures
# ------------------------------------------------------------------------------------------------


def capture_payloads(
    paths: Iterable[Path],
    transports: Sequence[str] = ("tcp", "udp"),
    keep: Callable[[Any, bytes], bool] = lambda layer, payload: True,
    packets_per_file: int | None = None,
) -> list[bytes]:
    """The distinct transport payloads of the captures' packets, in the order they first appear.

    A packet's payload is that of its first layer of ``transports`` ("tcp", "udp", in that order of
    preference); ``keep(layer, payload)`` filters them (the scapy layer gives the ports), and only the
    first ``packets_per_file`` packets of each capture are read (all when None). scapy extracts them:
    it is a test dependency only, never used by the parsers under test."""
    from scapy.all import TCP, UDP, PcapReader

    layer_types = [{"tcp": TCP, "udp": UDP}[t] for t in transports]
    found: dict[bytes, None] = {}  # a dict keeps the first-seen order
    for path in paths:
        with PcapReader(str(path)) as reader:
            for i, pkt in enumerate(reader):
                if packets_per_file is not None and i >= packets_per_file:
                    break
                layer = next((pkt.getlayer(t) for t in layer_types if t in pkt), None)
                if layer is None:
                    continue
                payload = bytes(layer.payload)
                if keep(layer, payload):
                    found.setdefault(payload)
    return list(found)


# ------------------------------------------------------------------------------------------------
# Mutators
# ------------------------------------------------------------------------------------------------

# Up to six edits (kind, position, value), applied by ``mutate``; positions wrap around the payload.
MUTATIONS = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6)


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """``data`` after the edits of ``MUTATIONS``: 0 flips a bit, 1 sets a byte, 2 inserts one, 3
    deletes one, 4 truncates (an empty payload gets the value as its first byte instead)."""
    b = bytearray(data)
    for kind, pos, val in ops:
        if not b:
            b.append(val)
            continue
        pos %= len(b)
        if kind == 0:
            b[pos] ^= 1 << (val & 7)
        elif kind == 1:
            b[pos] = val
        elif kind == 2:
            b.insert(pos, val)
        elif kind == 3:
            del b[pos]
        else:
            del b[pos:]
    return bytes(b)


def draw_edits(
    data: st.DataObject, payload: bytes, lie_in_a_length: Callable[[st.DataObject, bytearray], None]
) -> bytearray:
    """1 to 8 edits of ``payload`` drawn one at a time: set a byte, insert 1-8 bytes, delete 1-8
    bytes, or ``lie_in_a_length(data, buffer)``, the protocol's own lie in a length field (also what
    an edit of an empty buffer becomes)."""
    base = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.integers(0, 3))
        pos = data.draw(st.integers(0, max(0, len(base) - 1)))
        if op == 0 and base:
            base[pos] = data.draw(st.integers(0, 255))
        elif op == 1:
            base[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == 2 and base:
            del base[pos : pos + data.draw(st.integers(1, 8))]
        else:
            lie_in_a_length(data, base)
    return base


def feed_alternating(h: Harness, chunks: Iterable[bytes]) -> Harness:
    """Feed ``chunks`` to the analyzer, the first from the client then from either side in turn, one
    second apart, and close the flow."""
    for i, c in enumerate(chunks):
        h.analyzer.feed(i % 2 == 0, c, float(i))
    h.analyzer.close(99.0)
    return h


# ------------------------------------------------------------------------------------------------
# The documentation's example
# ------------------------------------------------------------------------------------------------

PROTOCOL_DOCS = REPO / "docs" / "protocols"


def _code_block(text: str, lang: str) -> str:
    start = text.index(f"```{lang}\n") + len(lang) + 4
    return text[start : text.index("```", start)]


def documented_example(page: str) -> tuple[bytes, bytes, list[dict[str, Any]]]:
    """docs/protocols/``page``'s example: the request and the response (its first ```hex block, two
    hex strings) and the events they make (its first ```json block)."""
    text = (PROTOCOL_DOCS / page).read_text()
    request_hex, response_hex = _code_block(text, "hex").split()
    expected = json.loads(_code_block(text, "json"))
    return bytes.fromhex(request_hex), bytes.fromhex(response_hex), expected


def replay_documented_example(
    h: Harness, page: str, request_ts: float, response_ts: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """docs/protocols/``page``'s example through ``h`` (the request from the client at ``request_ts``,
    the response from the server at ``response_ts``): (the events ``h`` made, as the page shows events:
    their JSON form without the id, new on every run; the events the page shows)."""
    request, response, expected = documented_example(page)
    h.client(request, ts=request_ts)
    h.server(response, ts=response_ts)
    got = []
    for ev in h.events:
        d = json.loads(json.dumps(ev.to_dict()))
        d.pop("id")
        got.append(d)
    return got, expected
