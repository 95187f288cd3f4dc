"""pytest plugin for running zarr-python's own test suite with zkernels' pipeline.

Loaded by ``scripts/run_zarr_suite.py`` with ``-p zarr_suite_plugin`` (``scripts/`` on
``PYTHONPATH``). It imports zkernels (so the pipeline is registered even where the entry point is
not), checks at start-up that ``codec_pipeline.path`` really names the pipeline the run asked for,
and counts the reads and writes that went through ``KernelCodecPipeline`` (and how many of those it
handed to zarr's pipeline, for whatever reason), so a run that silently used the default pipeline
shows up.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

_COUNTS: Counter[str] = Counter()
ZK = "zkernels.KernelCodecPipeline"


def _wrap(cls, name: str) -> None:
    orig = getattr(cls, name)

    async def wrapper(self, *args, **kwargs):
        _COUNTS[name] += 1
        return await orig(self, *args, **kwargs)

    wrapper.__wrapped__ = orig
    setattr(cls, name, wrapper)


def _count_fallbacks(cls) -> None:
    # every call handed to zarr's pipeline, whatever the reason (codecs, data type, buffer type)
    orig = cls._fall_back

    async def wrapper(self, reason, opts, method, *args):
        _COUNTS[f"{method} handed to zarr"] += 1
        return await orig(self, reason, opts, method, *args)

    wrapper.__wrapped__ = orig
    cls._fall_back = wrapper


def pytest_configure(config: pytest.Config) -> None:
    import zarr
    import zarr.registry

    import zkernels

    expected = os.environ.get("ZARR_CODEC_PIPELINE__PATH")
    actual = zarr.config.get("codec_pipeline.path")
    if expected and actual != expected:
        raise pytest.UsageError(f"codec_pipeline.path is {actual!r}, expected {expected!r}")
    if actual == ZK:
        cls = zarr.registry.get_pipeline_class()
        if cls is not zkernels.KernelCodecPipeline:
            raise pytest.UsageError(f"zarr resolves {ZK!r} to {cls!r}")
        _wrap(zkernels.KernelCodecPipeline, "read")
        _wrap(zkernels.KernelCodecPipeline, "write")
        _count_fallbacks(zkernels.KernelCodecPipeline)
    config.stash[_key] = actual


_key = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"zarr codec_pipeline.path: {config.stash[_key]}"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    path = config.stash[_key]
    if path != ZK:
        terminalreporter.write_line(f"codec pipeline: {path}")
        return
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(_COUNTS.items()))
    if counts:
        terminalreporter.write_line(f"KernelCodecPipeline calls: {counts}")
    else:
        terminalreporter.write_line("WARNING: no read or write reached KernelCodecPipeline", red=True)
