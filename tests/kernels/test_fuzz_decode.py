"""A short run of the decode-kernel fuzzer (scripts/fuzz_decode.py) as part of the suite.

The fuzzer's body is imported from the script, so the suite and long standalone runs
(`python scripts/fuzz_decode.py --seconds 600`) exercise the same code.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from zkernels._decode import can_decode

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_decode.py"

pytestmark = pytest.mark.skipif(not (can_decode(["zstd"]) and can_decode(["blosc"])),
                                reason="codec libraries not found")


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("zkernels_fuzz_decode", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_fuzz_short_run(fuzz):
    n = fuzz.run(seconds=3, seed=20240607)
    assert n >= 200
    # the generator reaches every outcome of every kind of chain, not only the error paths
    for chain in ("raw", "crc32c", "zstd", "blosc", "crc32c+zstd", "crc32c+crc32c+blosc"):
        assert fuzz.STATS[f"{chain}: ok (non-empty)"] > 0, (chain, dict(fuzz.STATS))
    for outcome in ("zstd: CorruptChunkError", "blosc: CorruptChunkError",
                    "crc32c: ChecksumError", "crc32c+zstd: ChecksumError",
                    "zstd: ShardIndexError"):
        assert fuzz.STATS[outcome] > 0, (outcome, dict(fuzz.STATS))


def test_fuzz_cli(fuzz, capsys):
    assert fuzz.main(["--examples", "50", "--seed", "1", "-q"]) == 0
    assert "ok: 50 cases" in capsys.readouterr().out


@pytest.mark.parametrize("at_end,index", [(True, "n"), (False, "-1")])
def test_guard_pages_fault(at_end, index):
    """The fuzzer's guarded buffers really fault one byte past (or before) the data."""
    code = (
        "import ctypes, importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('f', {str(SCRIPT)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"v = m.guarded(b'x' * 100, at_end={at_end})\n"
        "n = len(v)\n"
        "assert bytes(v) == b'x' * 100\n"
        "print('ok', flush=True)\n"
        f"ctypes.c_uint8.from_address(v.ctypes.data + {index}).value\n"
        "print('not reached', flush=True)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.stdout.strip() == "ok", (r.stdout, r.stderr)
    assert r.returncode != 0  # SIGSEGV
