"""Developer aid: compare our per-packet PDU counts with tshark's for one capture and protocol.

usage: python tools/dev/diff_tshark.py FILE PDU_FIELD PROTOCOL [extra tshark args...]
Prints the frames where the counts differ (time, ours, tshark).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from sensor.capture import CaptureReader
from sensor.pipeline import Pipeline


def main() -> None:
    path, field, proto = sys.argv[1:4]
    extra = sys.argv[4:]
    out = subprocess.run(
        ["tshark", "-n", "-r", path, *extra, "-T", "fields", "-e", "frame.number", "-e", field, "-E", "occurrence=a", "-E", "aggregator=|"],
        capture_output=True, text=True).stdout
    theirs = Counter()
    for line in out.splitlines():
        num, _, val = line.partition("\t")
        if val:
            theirs[int(num)] += len(val.split("|"))
    ours = Counter()
    state = {"n": 0}
    pipe = Pipeline()
    before = {"pdus": 0}

    pipe.start(path)
    with CaptureReader(path) as r:
        for ts, lt, data, orig in r:
            state["n"] += 1
            pipe.packet(ts, lt, data, orig)
            now = pipe._file.stats.pdus.get(proto, 0)
            if now != before["pdus"]:
                ours[state["n"]] += now - before["pdus"]
                before["pdus"] = now
    pipe.end()
    diffs = [(n, ours[n], theirs[n]) for n in sorted(set(ours) | set(theirs)) if ours[n] != theirs[n]]
    print(f"ours {sum(ours.values())} tshark {sum(theirs.values())}; frames differing: {len(diffs)}")
    for n, a, b in diffs[:40]:
        print(f"frame {n}: ours {a} tshark {b}")


if __name__ == "__main__":
    main()
