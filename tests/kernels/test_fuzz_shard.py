"""A short run of the shard-kernel fuzzer (scripts/fuzz_shard.py) as part of the suite.

The fuzzer's body is imported from the script, so the suite and long standalone runs
(`python scripts/fuzz_shard.py --seconds 600`) exercise the same code.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_shard.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("zkernels_fuzz_shard", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_fuzz_short_run(fuzz):
    n = fuzz.run(seconds=4, seed=20240601)
    assert n >= 200
    # the generator reaches every outcome, not only the error paths
    for outcome in ("parse ok", "parse ChecksumError", "parse ShardIndexError",
                    "check_dense True", "check_dense False", "reconstruct ok (non-empty box)",
                    "reconstruct ShardIndexError", "reconstruct CorruptChunkError"):
        assert fuzz.STATS[outcome] > 0, (outcome, dict(fuzz.STATS))


def test_fuzz_cli(fuzz, capsys):
    assert fuzz.main(["--examples", "50", "--seed", "1", "-q"]) == 0
    assert "ok: 50 cases" in capsys.readouterr().out
