"""``python -m zkernels bench``: runs end to end on a tiny array, and its result check can fail."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zkernels import bench

TINY = ["--size", "256", "--repeats", "1", "-q"]
SOME = "read_zstd,read_single_chunks,read_points,write_zstd,overwrite_chunk,read_memory"


def _run(argv: list[str]) -> int:
    from zkernels.__main__ import main

    return main(["bench", *argv])


def test_bench_end_to_end(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    rc = _run(
        [*TINY, "--engines", "default,zkernels", "--workloads", SOME, "--json", str(out_json)]
    )
    text = capsys.readouterr().out
    assert rc == 0, text

    assert "| workload | MB | engine | median | MB/s | vs default | check |" in text
    assert "| workload | zkernels |" in text  # the speedup matrix
    assert "FAILED" not in text and "MISMATCH" not in text and "ERROR" not in text
    for name in SOME.split(","):
        assert f"| {name} |" in text

    report = json.loads(out_json.read_text())
    assert report["ok"] is True
    assert report["engines"] == ["default", "zkernels"]
    assert report["layout"] == {"size": 256, "shard": 128, "chunk": 64, "unsharded_chunk": 64}
    for key in ("date", "cpu", "cpu_count", "usable_cpus", "platform", "versions"):
        assert key in report["meta"]
    assert {"numpy", "zarr", "zkernels"} <= set(report["meta"]["versions"])
    rows = {(r["workload"], r["engine"]): r for r in report["results"]}
    assert set(rows) == {(w, e) for w in SOME.split(",") for e in ("default", "zkernels")}
    for (workload, engine), r in rows.items():
        assert r["status"] == "ok", r
        assert len(r["times_s"]) == 1 and r["warmup_s"] > 0
        assert r["median_s"] > 0 and r["mb_per_s"] > 0 and r["nbytes"] > 0
        assert r["speedup_vs_default"] > 0
        if engine == "default":
            assert r["speedup_vs_default"] == 1.0
    assert rows[("read_points", "default")]["nbytes"] == bench.N_POINTS * 2
    assert rows[("read_zstd", "default")]["nbytes"] == 256 * 256 * 2
    assert report["datasets"]["zstd"]["stored_bytes"] > 0


class ZerosReader(bench.ZarrEngine):
    """Reads through zarr's default pipeline, then hands back zeros."""

    def __init__(self):
        super().__init__("zkernels", bench.DEFAULT_PIPELINE)

    def read(self, handle, selection):
        return np.zeros_like(handle[selection])

    def read_points(self, handle, coords):
        return np.zeros_like(handle.vindex[coords])


class ZerosWriter(bench.ZarrEngine):
    def __init__(self):
        super().__init__("zkernels", bench.DEFAULT_PIPELINE)

    def write(self, handle, selection, value):
        handle[selection] = np.zeros_like(value)


class Raising(bench.ZarrEngine):
    def __init__(self):
        super().__init__("zkernels", bench.DEFAULT_PIPELINE)

    def read(self, handle, selection):
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("engine", "workloads", "status"),
    [
        (ZerosReader, "read_zstd,read_points", "mismatch"),
        (ZerosWriter, "write_zstd,overwrite_chunk", "mismatch"),
        (Raising, "read_uncompressed", "error"),
    ],
)
def test_wrong_results_are_flagged(tmp_path, capsys, monkeypatch, engine, workloads, status):
    monkeypatch.setitem(bench.ENGINES, "zkernels", engine)
    out_json = tmp_path / "bench.json"
    rc = _run(
        [*TINY, "--engines", "default,zkernels", "--workloads", workloads, "--json", str(out_json)]
    )
    text = capsys.readouterr().out
    assert rc == 1
    assert f"**{status.upper()}**" in text
    assert "FAILED the check" in text
    report = json.loads(out_json.read_text())
    assert report["ok"] is False
    for r in report["results"]:
        if r["engine"] == "default":
            assert r["status"] == "ok"
        else:
            assert r["status"] == status
            assert r["reason"]
    if status == "mismatch":
        assert "values differ" in json.dumps(report["results"])


def test_not_applicable_is_not_a_failure(capsys, monkeypatch):
    class Never(bench.ZarrEngine):
        def __init__(self):
            super().__init__("zkernels", bench.DEFAULT_PIPELINE)

        def open(self, target, *, write=False):
            raise bench.NotApplicable("cannot do this one")

    monkeypatch.setitem(bench.ENGINES, "zkernels", Never)
    rc = _run([*TINY, "--engines", "zkernels", "--workloads", "read_slab"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "| n/a |" in text and "cannot do this one" in text


def test_options_and_layout():
    args = bench.build_parser().parse_args(["--quick"])
    cfg = bench.config_from_args(args)
    assert (cfg.size, cfg.repeats, cfg.layout().shard, cfg.layout().chunk) == (1024, 2, 512, 64)
    cfg = bench.config_from_args(bench.build_parser().parse_args(["--quick", "--size", "256"]))
    assert (cfg.size, cfg.layout().shard, cfg.layout().chunk) == (256, 128, 64)  # fits the array
    cfg = bench.config_from_args(bench.build_parser().parse_args([]))
    lay = cfg.layout()
    assert (cfg.size, cfg.repeats, lay.shard, lay.chunk, lay.unsharded_chunk) == (
        8192,
        5,
        2048,
        64,
        256,
    )
    assert bench.main(["--size", "256", "--workloads", "nope", "-q"]) == 2
    assert bench.main(["--size", "256", "--shard", "100", "--chunk", "64", "-q"]) == 2


def test_bad_arguments_are_refused_before_the_run(tmp_path, capsys, monkeypatch):
    """Each is an error (exit code 2, a message naming the flag) before any dataset is made:
    not a silent default, nor a failure of every engine, nor a traceback after the run."""
    monkeypatch.setattr(bench, "run_bench", lambda cfg: pytest.fail("the run started"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv, flag in [
        (["--size", "0"], "--size"), (["--quick", "--size", "1"], "--size"),
        (["--chunk", "-4"], "--chunk"), (["--shard", "-64"], "--shard"), (["--seed", "-1"], "--seed"),
        (["--json", str(tmp_path / "missing" / "t.json")], "--json"),
        (["--json", str(tmp_path)], "--json"),
        (["--plot", str(tmp_path / "p.txt")], "--plot"),
        (["--dir", str(afile)], "--dir"),
    ]:
        assert bench.main(["-q", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("zkernels bench: error: ") and flag in err, (argv, err)


def test_data_is_deterministic_and_compressible():
    import zstandard

    a = bench.make_data(512, seed=3)
    assert a.dtype == np.uint16 and a.shape == (512, 512)
    assert np.array_equal(a, bench.make_data(512, seed=3))
    assert not np.array_equal(a, bench.make_data(512, seed=4))
    ratio = a.nbytes / len(zstandard.ZstdCompressor(level=3).compress(a.tobytes()))
    assert 1.4 < ratio < 10  # neither random noise nor a constant


def test_plot(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    png = tmp_path / "speedup.png"
    argv = [*TINY, "--engines", "default,zkernels", "--workloads", "read_slab", "--plot", str(png)]
    assert _run(argv) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()

    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    monkeypatch.setattr(bench, "run_bench", lambda cfg: pytest.fail("the run started"))
    assert _run(argv) == 3  # told before the run, not after it
    assert "--plot needs matplotlib" in capsys.readouterr().err
