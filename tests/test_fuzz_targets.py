"""The short fuzz run of CI: every atheris target for a few seconds on a small seed corpus from the
real captures; any crash (exception, invariant violation, hang, out-of-memory) fails the test and
prints the reproducer. The long campaign is ``make fuzz FUZZ_SECONDS=600`` (docs/fuzzing.md).

The harness pieces that do not need atheris (the record layout, the seed corpus) are tested always;
the runs skip, saying why, where atheris has no wheel (it is installed with the dev extra on
CPython < 3.12).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SHARED_PCAPS, require_shared

from fuzz import corpus, records
from fuzz.targets import TARGETS

SECONDS_PER_TARGET = 2  # 11 targets: about 35 s of CPU in all with start-up and the seeds
SEEDS_PER_TARGET = 12

HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None
needs_atheris = pytest.mark.skipif(
    not HAVE_ATHERIS,
    reason=f"atheris is not importable on Python {sys.version_info.major}.{sys.version_info.minor} "
    "(no wheel; the dev extra installs it on CPython < 3.12): the fuzz targets cannot run",
)


@pytest.fixture(scope="module")
def seed_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_shared()
    out = tmp_path_factory.mktemp("fuzz-corpus")
    written = corpus.build([SHARED_PCAPS, REPO / "pcaps"], out, SEEDS_PER_TARGET, 2048, list(TARGETS))
    assert all(written[t] > 0 for t in TARGETS), f"targets without seeds: {written}"
    return out


def test_records_round_trip() -> None:
    recs = [(1, b"\x00\x06hello"), (0x86, b""), (0xFF, bytes(range(256)) * 3)]
    selector, got = records.split(records.encode(5, recs))
    assert selector == 5 and list(got) == recs


def test_records_cut_lengths_to_what_is_left() -> None:
    # the second record announces 0x0100 bytes but only 2 follow; a lone control byte ends the input
    data = bytes((9, 1, 0, 1, 0xAA, 0, 1, 0, 0xBB, 0xCC))
    assert list(records.records(data, 1)) == [(1, b"\xaa"), (0, b"\xbb\xcc")]
    assert list(records.records(b"\x07\x00")) == [(7, b"\x00")]


def test_every_seed_passes_its_target_without_atheris(seed_corpus: Path) -> None:
    """The seeds are real traffic: the targets' checks must hold on all of them (no false alarm)."""
    for target in TARGETS:
        module = importlib.import_module(f"fuzz.targets.{target}")
        for seed in sorted((seed_corpus / target).iterdir()):
            module.test_one_input(seed.read_bytes())


@needs_atheris
@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", TARGETS)
def test_short_fuzz_run_finds_no_crash(target: str, seed_corpus: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "crashes"
    artifacts.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "fuzz",
        target,
        f"-max_total_time={SECONDS_PER_TARGET}",
        "-timeout=10",
        "-max_len=4096",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(seed_corpus / target),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=110, check=False)
    log = proc.stdout + proc.stderr
    found = sorted(artifacts.iterdir())
    assert proc.returncode == 0 and not found, (
        f"{target} crashed (exit {proc.returncode}); reproducers: {[str(p) for p in found]}\n"
        f"reproduce with: python -m fuzz.reproduce {target} FILE\n{log[-6000:]}"
    )
    runs = re.search(r"stat::number_of_executed_units: (\d+)", log)
    assert runs and int(runs.group(1)) > SEEDS_PER_TARGET, f"{target} did not fuzz:\n{log[-3000:]}"
