"""Turning zkernels on and off, and asking what it does for an array."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import zarr

PIPELINE_PATH = "zkernels.KernelCodecPipeline"
_DEFAULT_PATH = "zarr.core.codec_pipeline.BatchedCodecPipeline"
_previous: list[str] = []


def enable() -> None:
    """Route every zarr array opened or created from now on through zkernels.

    Arrays already open keep the pipeline they were opened with; reopen them to switch.
    """
    current = zarr.config.get("codec_pipeline.path")
    if current != PIPELINE_PATH:
        _previous.append(current)
    zarr.config.set({"codec_pipeline.path": PIPELINE_PATH})


def disable() -> None:
    """Go back to the pipeline that was configured before :func:`enable`."""
    if zarr.config.get("codec_pipeline.path") != PIPELINE_PATH:
        return
    zarr.config.set({"codec_pipeline.path": _previous.pop() if _previous else _DEFAULT_PATH})


@contextlib.contextmanager
def enabled(**options: Any) -> Iterator[None]:
    """Use zkernels inside a ``with`` block; keyword arguments set zkernels options for it.

    The settings are zarr's process-wide configuration (``zarr.config.set``): every thread sees
    them while the block runs, and they are restored when it ends. From several threads, call
    :func:`enable` once instead.

    >>> with zkernels.enabled(threads=4):  # doctest: +SKIP
    ...     arr = zarr.open_array(path)
    ...     data = arr[:]
    """
    settings: dict[str, Any] = {"codec_pipeline.path": PIPELINE_PATH}
    settings.update({f"codec_pipeline.zkernels.{k}": v for k, v in options.items()})
    with zarr.config.set(settings):
        yield


def explain(array: Any) -> str:
    """Say whether reads and writes of ``array`` go through zkernels, and if not, why."""
    from zkernels.pipeline import KernelCodecPipeline

    pipeline = getattr(array, "codec_pipeline", None)
    if pipeline is None:
        pipeline = getattr(getattr(array, "_async_array", None), "codec_pipeline", None)
    if not isinstance(pipeline, KernelCodecPipeline):
        name = type(pipeline).__name__ if pipeline is not None else "unknown"
        return (
            f"not using zkernels: this array was opened with {name}; call zkernels.enable() "
            "before opening it"
        )
    if not pipeline.accelerated:
        return f"delegated to zarr's default pipeline: {pipeline.fallback_reason}"
    # the codec list is ours; the data type and fill value are judged when a read binds the
    # chunk spec, as the reader's plan does here (zarr v2 variable-length strings, say)
    from zkernels.config import options
    from zkernels.reader import _ArrayPlan

    async_array = getattr(array, "_async_array", array)
    plan = _ArrayPlan(async_array.metadata, async_array.config, options())
    if plan.fallback_reason is not None:
        return f"delegated to zarr's default pipeline: {plan.fallback_reason}"
    return "accelerated by zkernels"
