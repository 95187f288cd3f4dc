"""asv benchmarks for zkernels (one module per kernel, ``bench_pipeline`` for whole reads/writes).

With ``asv run --python=same`` (``environment_type: existing``) asv neither builds nor installs
zkernels: the benchmarks import it from the running Python. When it is not installed there, fall
back to the repository this folder belongs to, i.e. the modules built in place with
``python setup.py build_ext --inplace``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("zkernels") is None:  # pragma: no cover - depends on the environment
    _repo = Path(__file__).resolve().parents[2]
    if (_repo / "zkernels" / "__init__.py").exists():
        sys.path.insert(0, str(_repo))
