"""Which OpenBLAS kernel set ("core") fits this CPU, and whether the one loaded is generic.

OpenBLAS built with DYNAMIC_ARCH picks its kernels from CPUID when the library
loads. A build older than the CPU does not know it and falls back to generic SSE
kernels: Debian 12's OpenBLAS 0.3.21 ran "Prescott" kernels on an AVX-512 Xeon, at
32 GFLOP/s where its SkylakeX kernels reach 160-190. `OPENBLAS_CORETYPE`, read
while the library loads, overrides the choice.

A generic core is one whose kernels use SSE only, on a CPU whose flags (as its
kernel reports them) show AVX or more. A core name not listed here (a newer
OpenBLAS) is never called generic; a core forced by the user is reported as such.
"""

import os
import subprocess
import sys
from typing import Optional

# OpenBLAS's x86 cores whose kernels use SSE only, by the names `openblas_get_corename` returns:
# what it falls back to for a CPU it does not know ("Prescott", which 0.3.34 reports as its
# alias "Katmai"), or older CPUs' own. On a CPU with AVX they leave most of it unused.
GENERIC_CORES = {
    "Katmai",
    "Coppermine",
    "Northwood",
    "Prescott",
    "Banias",
    "Atom",
    "Core2",
    "Penryn",
    "Dunnington",
    "Nehalem",
    "Athlon",
    "Opteron",
    "Opteron_SSE3",
    "Barcelona",
    "Nano",
    "Bobcat",
}
# The core to ask for on a CPU with that SIMD: every DYNAMIC_ARCH build since 0.3.3 has these.
CORE_FOR_SIMD = {"AVX-512": "SkylakeX", "AVX2": "Haswell", "AVX": "Sandybridge"}
# What SkylakeX's kernels need; the kernel hides AVX-512 flags where the OS does not save the registers.
_AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The first CPU's feature flags as the kernel reports them (empty where unreadable, e.g. not Linux)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_simd(flags: set[str]) -> Optional[str]:
    """The widest x86 SIMD beyond SSE this CPU runs that OpenBLAS has kernels for (None: none, or not x86)."""
    if _AVX512 <= flags:
        return "AVX-512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    return "AVX" if "avx" in flags else None


def generic_on(core: str, flags: set[str]) -> Optional[str]:
    """The CPU's SIMD if `core` is a generic SSE core on a CPU that has more, else None."""
    return cpu_simd(flags) if core in GENERIC_CORES else None


# Loads the library in a fresh process and prints the core it picked: the only way to see
# OpenBLAS's own choice before the library is in this process, where the choice is final.
_PROBE = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
corename = getattr(lib, sys.argv[2] + "openblas_get_corename")
corename.restype = ctypes.c_char_p
print(corename().decode())
"""


def probe_core(library: str, prefix: str) -> Optional[str]:
    """The core `library` picks by itself here, or None if the probe fails (then nothing is chosen for it)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["OPENBLAS_NUM_THREADS"] = "1"  # no thread pool for one call
    try:
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _PROBE, library, prefix],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
