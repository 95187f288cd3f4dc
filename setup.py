"""Build the zkernels Cython extensions.

Environment switches:
  ZKERNELS_DEBUG=1     bounds and wraparound checks on, -O0 -g (the test suite must pass this way too)
  ZKERNELS_ANNOTATE=1  write Cython's annotated HTML next to each .pyx
  ZKERNELS_MODULES=a,b build only these modules (developer convenience, e.g. "_crc32c")
  ZKERNELS_SANITIZE=address,undefined
                       build with these gcc/clang sanitizers (-O1 -g); run Python with the sanitizer
                       runtime preloaded, as docs/testing.md shows
"""

import os
import sys
from pathlib import Path

import Cython
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
DEBUG = os.environ.get("ZKERNELS_DEBUG", "0") not in ("", "0")
ANNOTATE = os.environ.get("ZKERNELS_ANNOTATE", "0") not in ("", "0")
ONLY = [m for m in os.environ.get("ZKERNELS_MODULES", "").split(",") if m]
SANITIZE = os.environ.get("ZKERNELS_SANITIZE", "").strip()

# One set of directives for every module (scikit-learn style), not per file.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    "binding": False,
}

if sys.platform == "win32":
    cflags = ["/O2"]
else:
    if SANITIZE:
        # -O1 keeps the reports' stacks readable; no recovery, so any finding ends the run.
        cflags = ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={SANITIZE}",
                  "-fno-sanitize-recover=all"]
    else:
        cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
    cflags += ["-Wno-unused-function", "-Wno-unreachable-code"]

macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    macros.append(("ZK_DEBUG", "1"))

modules = sorted(p.stem for p in (HERE / "zkernels").glob("_*.pyx"))
if ONLY:
    modules = [m for m in modules if m in ONLY]

extensions = [
    Extension(
        f"zkernels.{name}",
        [f"zkernels/{name}.pyx"],
        include_dirs=[np.get_include(), "zkernels/src"],
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=[f"-fsanitize={SANITIZE}"] if SANITIZE and sys.platform != "win32" else [],
    )
    for name in modules
]

# The generated C depends on the directives, on Cython and on numpy's .pxd: regenerate it whenever
# one changes, so a release build never reuses C generated with bounds checks on (or the reverse),
# and venvs sharing this in-place build (other numpy) never compile C made for another numpy.
MODE_STAMP = HERE / "build" / "zkernels-cython-mode"
mode = f"debug={int(DEBUG)} sanitize={SANITIZE} cython={Cython.__version__} numpy={np.__version__}"
force = not MODE_STAMP.exists() or MODE_STAMP.read_text() != mode

ext_modules = cythonize(
    extensions,
    compiler_directives=DIRECTIVES,
    annotate=ANNOTATE,
    include_path=["zkernels"],
    force=force,
)
MODE_STAMP.parent.mkdir(exist_ok=True)
MODE_STAMP.write_text(mode)

setup(ext_modules=ext_modules)
