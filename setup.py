"""Build glasschat's optional native extensions during `pip install` (everything else is in pyproject.toml).

- model._openblas_shim (Linux): the small C shim that lets MLX use OpenBLAS
  from PyPI (see model/blas.py).
- model.kernels._qmv: the SIMD quantized matvec, attention over the KV cache and the
  small fused ops of a decode step, an MLX custom extension built
  with CMake against the headers and CMake config of the mlx wheel in the
  build environment (model/kernels/CMakeLists.txt; cmake, ninja and nanobind
  come from PyPI through [build-system] requires).

Each is optional and independent: without a compiler, or if a build fails for
any reason, the install still succeeds, and glasschat says what it runs on
instead (the bundled reference BLAS; MLX's own quantized path) in model info.
"""

import os
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class CMakeExtension(Extension):
    """An extension whose sources are a CMake project (mlx.extension.CMakeBuild builds it)."""

    def __init__(self, name: str, sourcedir: str):
        # optional: setuptools then skips copying it into the source tree when it was not built.
        super().__init__(name, sources=[], optional=True)
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class BuildOptionalExtensions(build_ext):
    """Builds each extension if it can: a failure is a warning, never a failed install."""

    def build_extension(self, ext):
        if not isinstance(ext, CMakeExtension):
            return super().build_extension(ext)  # setuptools skips an optional one that fails
        try:
            from mlx.extension import CMakeBuild

            # Ninja from PyPI when it is there; else CMake's default generator.
            if shutil.which("ninja") and "CMAKE_GENERATOR" not in os.environ:
                os.environ["CMAKE_GENERATOR"] = "Ninja"
            CMakeBuild.build_extension(self, ext)
        except Exception as exc:  # any failure leaves the pure-Python install intact
            self.warn(f"glasschat: {ext.name} not built ({exc}); MLX's own path will be used")


extensions = []
if sys.platform.startswith("linux"):  # only Linux needs the shim: on macOS MLX uses Accelerate
    extensions.append(Extension("model._openblas_shim", ["model/openblas_shim.c"], optional=True))
if not os.environ.get("GLASSCHAT_NO_BUILD_KERNEL"):
    extensions.append(CMakeExtension("model.kernels._qmv", sourcedir="model/kernels"))

setup(ext_modules=extensions, cmdclass={"build_ext": BuildOptionalExtensions})
