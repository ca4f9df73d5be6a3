"""Build the small C shim that lets MLX use OpenBLAS from PyPI (see model/blas.py).

Everything else is declared in pyproject.toml. The shim is optional: without a C
compiler the install still succeeds, and glasschat says at start that MLX runs on
its bundled reference BLAS.
"""

import sys

from setuptools import Extension, setup

# Only Linux needs it: on macOS MLX uses Accelerate.
shim = Extension("model._openblas_shim", ["model/openblas_shim.c"], optional=True)
setup(ext_modules=[shim] if sys.platform.startswith("linux") else [])
