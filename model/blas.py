"""Give MLX's CPU backend an optimised BLAS on Linux: OpenBLAS from PyPI, loaded before mlx.

The `mlx[cpu]` wheel bundles the reference BLAS: single-threaded, about 4 GFLOP/s
on a float32 GEMM. libmlx.so leaves its BLAS and LAPACK symbols (`cblas_sgemm`,
`sgesdd_`, ...) to the dynamic linker, which searches the libraries loaded with
RTLD_GLOBAL before libmlx's own dependencies. So an OpenBLAS loaded that way
before the first `import mlx` is the one MLX calls (60-190 GFLOP/s on 2 cores).
`model/__init__.py` calls `load_blas()` first for that reason.

In order of preference:
1. OpenBLAS from the PyPI wheel scipy-openblas32, a dependency. Its symbols carry a
   `scipy_` prefix, so a small C shim built at install (model/openblas_shim.c)
   exports the names MLX calls and forwards them.
2. The system OpenBLAS (`libopenblas.so.0`), where the shim could not be built.
3. The reference BLAS, said in one line (`note`).
`GLASSCHAT_BLAS=pypi|system|reference` asks for one, to compare them.

OpenBLAS's kernels ("core") must fit the CPU; see `model.openblas_core`.
"""

import ctypes
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Union

from model.openblas_core import CORE_FOR_SIMD, cpu_flags, generic_on, probe_core

SYSTEM_OPENBLAS = "libopenblas.so.0"
REFERENCE = "MLX runs on its bundled reference BLAS (single-threaded, about 4 GFLOP/s)"


@dataclass(frozen=True)
class BlasInfo:
    name: str  # OpenBLAS, reference BLAS, Accelerate, unknown
    source: str = ""  # where it came from: the PyPI wheel, the system, mlx's wheel
    version: str = ""
    core: str = ""  # OpenBLAS's kernel set, as it names itself
    core_origin: str = ""  # detected by OpenBLAS, forced by OPENBLAS_CORETYPE, or chosen here for this CPU
    note: str = ""  # one line for the user when the BLAS is slower than this machine allows

    def summary(self) -> str:
        """One line for model info and the bench: name, version, core, source."""
        text = " ".join(p for p in (self.name, self.version) if p)
        if self.core:
            text += f", core {self.core}" + (f" ({self.core_origin})" if self.core_origin != "detected" else "")
        return text + (f" · {self.source}" if self.source else "")

    def as_dict(self) -> dict:
        return asdict(self)


_state: dict = {"info": BlasInfo("unknown", note="glasschat's BLAS set-up has not run")}


def load_blas() -> None:
    """Pick and load the BLAS MLX will use; run once, before the first `import mlx`."""
    _state["info"] = _choose()


def blas_info() -> BlasInfo:
    return _state["info"]


def blas_in_use() -> str:
    return blas_info().summary()


def set_threads(count: int) -> Optional[int]:
    """Ask the OpenBLAS in use for `count` threads; the count it then runs, None without OpenBLAS.

    Ranks that share one machine's cores each keep their share: the PyPI build's threads
    spin while they wait, so two processes with a thread per core stall each other."""
    handle = _state.get("openblas")
    if handle is None:
        return None
    lib, prefix = handle
    getattr(lib, prefix + "openblas_set_num_threads")(ctypes.c_int(max(1, count)))
    get = getattr(lib, prefix + "openblas_get_num_threads")
    get.restype = ctypes.c_int
    return get()


def _choose() -> BlasInfo:
    if sys.platform == "darwin":
        return BlasInfo("Accelerate", "macOS")
    if sys.platform != "linux":
        return BlasInfo("platform default")
    if "mlx.core" in sys.modules:
        return BlasInfo("unknown", note="mlx was imported before glasschat, so its BLAS could not be chosen")
    wanted = os.environ.get("GLASSCHAT_BLAS", "auto")
    info = _first_that_loads(wanted)
    if wanted not in LOADERS:
        return replace(info, note=f"GLASSCHAT_BLAS={wanted} is not one of {', '.join(LOADERS)}. {info.note}".strip())
    return info


def _first_that_loads(wanted: str) -> BlasInfo:
    reasons = ["as GLASSCHAT_BLAS=reference asks"] if wanted == "reference" else []
    for loader in LOADERS.get(wanted, LOADERS["auto"]):
        found = loader()
        if isinstance(found, BlasInfo):
            return found
        reasons.append(found)
    return BlasInfo("reference BLAS", "bundled with mlx", note=f"{REFERENCE}: {'; '.join(reasons)}.")


def shim_path() -> Optional[Path]:
    """The shim `pip install` built next to this file, if it did."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = Path(__file__).with_name("_openblas_shim" + suffix)
        if path.exists():
            return path
    return None


def _pypi_openblas() -> Union[BlasInfo, str]:
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or spec.origin is None:
        return "the scipy-openblas32 package is not installed"
    libs = sorted((Path(spec.origin).parent / "lib").glob("libscipy_openblas*.so"))
    if not libs:
        return "the scipy-openblas32 package has no library"
    shim = shim_path()
    if shim is None:
        return "OpenBLAS from PyPI needs a shim that was not built at install (no C compiler?)"
    # Not `import scipy_openblas32`: that loads the library at once, before a core can be chosen.
    return _load_openblas(str(libs[0]), "scipy_", "scipy-openblas32 (PyPI)", shim)


def _system_openblas() -> Union[BlasInfo, str]:
    return _load_openblas(SYSTEM_OPENBLAS, "", f"system {SYSTEM_OPENBLAS}")


LOADERS = {
    "auto": [_pypi_openblas, _system_openblas],
    "pypi": [_pypi_openblas],
    "system": [_system_openblas],
    "reference": [],
}


def _load_openblas(library: str, prefix: str, source: str, shim: Optional[Path] = None) -> Union[BlasInfo, str]:
    flags = cpu_flags()
    forced = os.environ.get("OPENBLAS_CORETYPE")
    detected = chosen = None
    if not forced:
        detected = probe_core(library, prefix)
        # Only a generic pick is overruled: OpenBLAS knows the finer points of the CPUs it knows.
        chosen = CORE_FOR_SIMD.get(generic_on(detected, flags)) if detected else None
    try:
        lib = _load_with_coretype(library, chosen)
        if shim is not None:
            ctypes.CDLL(str(shim), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        # The system library is often just absent; that needs no more words.
        return f"no {source}" if "No such file" in str(exc) else f"{source} did not load ({exc})"
    _state["openblas"] = (lib, prefix)  # for `set_threads`
    core = _openblas_string(lib, prefix + "openblas_get_corename")
    words = _openblas_string(lib, prefix + "openblas_get_config").split()  # "OpenBLAS 0.3.34 DYNAMIC_ARCH ..."
    version = words[1] if len(words) > 1 and words[0] == "OpenBLAS" else ""
    origin = "detected"
    if forced:
        origin = f"forced by OPENBLAS_CORETYPE={forced}"
    elif chosen:
        origin = f"chosen for this CPU; OpenBLAS alone picked {detected}"
    note = ""
    simd = generic_on(core, flags)
    if simd:
        best = f"{CORE_FOR_SIMD[simd]} ({simd})"
        if forced:
            note = f"OPENBLAS_CORETYPE={forced} is set: OpenBLAS runs its generic {core} kernels (SSE), not {best}"
        else:
            note = f"OpenBLAS does not know this CPU and runs its generic {core} kernels (SSE), not {best}"
    return BlasInfo("OpenBLAS", source, version, core, origin, note)


def _load_with_coretype(library: str, core: Optional[str]) -> ctypes.CDLL:
    """Load with RTLD_GLOBAL; OpenBLAS reads OPENBLAS_CORETYPE while it loads, so set it only for then."""
    if core is None:
        return ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    os.environ["OPENBLAS_CORETYPE"] = core
    try:
        return ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    finally:
        # Children (tests, probes) then see the user's environment, not our choice.
        del os.environ["OPENBLAS_CORETYPE"]


def _openblas_string(lib: ctypes.CDLL, name: str) -> str:
    try:
        function = getattr(lib, name)
    except AttributeError:
        return ""
    function.restype = ctypes.c_char_p
    return (function() or b"").decode(errors="replace")
