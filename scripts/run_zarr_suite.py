#!/usr/bin/env python
"""Run zarr-python's own test suite with zkernels' pipeline (and with zarr's default, to compare).

    python scripts/run_zarr_suite.py                       # both runs, then the differences
    python scripts/run_zarr_suite.py --only zkernels -- tests/test_codecs -x
    python scripts/run_zarr_suite.py --zarr-src /tmp/zarr-3.1.6.tar.gz

zarr's tests ship in its sdist only. ``--zarr-src`` takes the sdist (``.tar.gz``) or an extracted
source tree; without it the sdist of the *installed* zarr version is fetched with
``pip download zarr==<version> --no-binary :all: --no-deps`` and extracted under ``--work-dir``.

Each run is ``python -m pytest tests`` from the zarr source tree (so zarr's own pytest settings
apply: warnings are errors, strict markers), with ``-p no:cacheprovider``, a JUnit XML report, and
``scripts/zarr_suite_plugin.py``, which checks that the intended pipeline is configured and counts
the calls that reach ``KernelCodecPipeline``. The pipeline is chosen with the environment variable
``ZARR_CODEC_PIPELINE__PATH`` (donfig), which survives zarr's per-test ``config.reset()``.
zarr's test dependencies: ``python -m pip install -e ".[test,zarr-suite]"``.
Tests that need network or missing optional packages (s3fs/moto, obstore, cupy, ...) skip
themselves. Arguments after ``--`` go to pytest (paths, ``-k``, ``-x``, ...).

Exit status: 0 when every test that fails with zkernels and passes with the default pipeline is
one of the ``KNOWN`` differences (or, with ``--only``, when that run had no failures), else 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIPELINES = {
    "default": "zarr.core.codec_pipeline.BatchedCodecPipeline",
    "zkernels": "zkernels.KernelCodecPipeline",
}

# Tests of zarr 3.1 that pass with the default pipeline and fail with ours by design (test id
# without parameters -> reason); docs/testing.md explains each. They do not fail the run.
KNOWN = {
    "tests.test_array::test_create_array_with_data_num_gets": (
        "counts store gets: zarr's sharding codec reads every shard before rewriting it, even "
        "when the write covers it completely (the test says this get is not needed); zkernels "
        "does not read a shard it overwrites completely"
    ),
    "tests.test_config::test_config_codec_pipeline_class": (
        "asserts that the configured pipeline is zarr's BatchedCodecPipeline after setting an "
        "unrelated key (codec_pipeline.name); true only when the default pipeline is selected"
    ),
}


def _extract(sdist: Path, dest: Path) -> Path:
    with tarfile.open(sdist) as tf:
        top = tf.getnames()[0].split("/")[0]
        target = dest / top
        if not (target / "tests").is_dir():
            tf.extractall(dest, filter="data")
    return target


def locate_source(zarr_src: str | None, work_dir: Path) -> Path:
    """A zarr source tree with ``tests/`` for the installed zarr version."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if zarr_src:
        src = Path(zarr_src)
        tree = _extract(src, work_dir) if src.is_file() else src
    else:
        ver = version("zarr")
        found = sorted(work_dir.glob(f"zarr-{ver}.tar.gz"))
        if not found:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", f"zarr=={ver}", "--no-binary", ":all:",
                 "--no-deps", "-d", str(work_dir)],
                check=True,
            )
            found = sorted(work_dir.glob(f"zarr-{ver}.tar.gz"))
        tree = _extract(found[0], work_dir)
    if not (tree / "tests").is_dir():
        raise SystemExit(f"no tests/ directory in {tree}")
    return tree


def run(name: str, tree: Path, out_dir: Path, pytest_args: list[str]) -> dict[str, str]:
    """Run the suite with one pipeline; return {test id: outcome}."""
    xml = out_dir / f"{name}.xml"
    env = dict(os.environ)
    env["ZARR_CODEC_PIPELINE__PATH"] = PIPELINES[name]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    args = pytest_args or ["tests"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "zarr_suite_plugin",
           "-o", "log_cli_level=WARNING", f"--junitxml={xml}", *args]
    print(f"== {name}: {' '.join(cmd)}  (in {tree})", flush=True)
    subprocess.run(cmd, cwd=tree, env=env)
    return outcomes(xml)


def outcomes(xml: Path) -> dict[str, str]:
    if not xml.exists():
        return {}
    result = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            result[test_id] = "failed"
        elif "error" in kinds:
            # an error in teardown comes after a pass: count it as an error anyway
            result[test_id] = "error"
        elif "skipped" in kinds:
            skip = case.find("skipped")
            result[test_id] = "xfailed" if skip.get("type") == "pytest.xfail" else "skipped"
        else:
            result[test_id] = "passed"
    return result


def summary(res: dict[str, str]) -> str:
    counts = {k: 0 for k in ("passed", "failed", "error", "skipped", "xfailed")}
    for v in res.values():
        counts[v] += 1
    return ", ".join(f"{v} {k}" for k, v in counts.items())


def check_plugins() -> None:
    missing = [m for m in ("pytest_asyncio", "pytest_benchmark", "numpydoc", "tomlkit")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(
            f"zarr's test suite needs {', '.join(missing)}: "
            'python -m pip install -e ".[test,zarr-suite]"'
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zarr-src", help="zarr sdist (.tar.gz) or extracted source tree")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "zkernels-zarr-suite"),
                        help="where the sdist is downloaded/extracted and reports are written")
    parser.add_argument("--only", choices=sorted(PIPELINES), help="run with one pipeline only")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    ns = parser.parse_args(argv)

    check_plugins()
    work_dir = Path(ns.work_dir)
    tree = locate_source(ns.zarr_src, work_dir)
    names = [ns.only] if ns.only else ["default", "zkernels"]
    results = {name: run(name, tree, work_dir, ns.pytest_args) for name in names}

    print()
    for name, res in results.items():
        print(f"{name:>9}: {summary(res)}")
    if ns.only:
        bad = [t for t, o in results[ns.only].items() if o in ("failed", "error")]
        return 1 if bad else 0

    base, ours = results["default"], results["zkernels"]
    only_ours = sorted(t for t, o in ours.items() if o in ("failed", "error")
                       and base.get(t) == "passed")
    only_base = sorted(t for t, o in base.items() if o in ("failed", "error")
                       and ours.get(t) == "passed")
    known = [t for t in only_ours if t.split("[")[0] in KNOWN]
    unexpected = [t for t in only_ours if t not in known]
    print(f"\nfailing with zkernels only, known ({len(known)}):")
    for base_id in sorted({t.split("[")[0] for t in known}):
        ids = [t[len(base_id):] or "" for t in known if t.split("[")[0] == base_id]
        print(f"  {base_id} {' '.join(ids)}\n      {KNOWN[base_id]}")
    print(f"\nfailing with zkernels only, unexpected ({len(unexpected)}):")
    for t in unexpected:
        print(f"  {t}  [{ours[t]}]")
    if only_base:
        print(f"\nfailing with the default pipeline only ({len(only_base)}):")
        for t in only_base:
            print(f"  {t}  [{base[t]}]")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
