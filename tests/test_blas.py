"""MLX's BLAS on Linux: OpenBLAS from PyPI through the shim, its core reported, the fallbacks said.

The references are the dynamic linker itself (LD_DEBUG=bindings says which library
each of libmlx's symbols was bound to), `nm` on the libraries, OpenBLAS's own
`openblas_get_corename`, and numpy for the numbers. Each process-wide choice is
tested in a subprocess, since a BLAS can only be chosen before mlx is imported.
"""

import ctypes.util
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import model.blas as blas
from model.openblas_core import CORE_FOR_SIMD, cpu_flags, cpu_simd

ROOT = Path(__file__).resolve().parent.parent
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MLX uses Accelerate on macOS")


def python(code: str, cwd=ROOT, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "GLASSCHAT_BLAS")}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env={**environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def blas_in_child(cwd=ROOT, **env) -> dict:
    code = "import json, model.blas as b; print(json.dumps(b.blas_info().as_dict()))"
    return json.loads(python(code, cwd, **env).stdout.splitlines()[-1])


def corename_in_child(library: str, prefix: str, **env) -> str:
    """OpenBLAS's own word on its core, loaded alone with `env`: the reference for what we report."""
    code = (
        "import ctypes, sys; f = getattr(ctypes.CDLL(sys.argv[1]), sys.argv[2] + 'openblas_get_corename');"
        "f.restype = ctypes.c_char_p; print(f().decode())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, library, prefix],
        env={**{k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout.strip()


def pypi_library() -> str:
    import importlib.util

    spec = importlib.util.find_spec("scipy_openblas32")
    return str(next((Path(spec.origin).parent / "lib").glob("libscipy_openblas*.so")))


def shim() -> Path:
    path = blas.shim_path()
    if path is None and shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler, so no shim: the reference-BLAS path is tested below")
    assert path is not None, "a C compiler is here but `pip install -e .` built no shim"
    return path


def mlx_libraries() -> tuple[Path, list[Path]]:
    """libmlx.so and the reference BLAS/LAPACK its wheel bundles."""
    libmlx = Path(mx.__file__).parent / "lib" / "libmlx.so"
    bundled = [
        p
        for p in (libmlx.parent.parent.parent / "mlx_cpu.libs").glob("lib*.so*")
        if "blas" in p.name or "lapack" in p.name
    ]
    return libmlx, bundled


def nm(path: Path, *flags) -> set[str]:
    out = subprocess.run(["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


@linux
def test_the_shim_exports_every_blas_symbol_mlx_takes_from_its_bundled_blas():
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed")
    libmlx, bundled = mlx_libraries()
    assert bundled, "the mlx[cpu] wheel no longer bundles a BLAS: revisit model/blas.py"
    provided = set().union(*(nm(p, "--defined-only") for p in bundled))
    needed = nm(libmlx, "--undefined-only") & provided
    assert "cblas_sgemm" in needed and "sgesdd_" in needed
    assert needed <= nm(shim(), "--defined-only"), needed - nm(shim(), "--defined-only")


# Every LAPACK routine MLX calls, through the MLX op that calls it, checked against numpy.
LINALG = r"""
import json, sys
import model
import mlx.core as mx, numpy as np
rng = np.random.default_rng(0)
out = {}
for dtype, real in (("float32", "float32"), ("float64", "float64"), ("complex64", "float32")):
    a = rng.standard_normal((6, 6)).astype(real)
    if dtype == "complex64":
        a = a + 1j * rng.standard_normal((6, 6)).astype(real)
    spd = a @ a.conj().T + 6 * np.eye(6)
    upper = np.triu(a) + 6 * np.eye(6)
    A, S, U = (mx.array(x, dtype=getattr(mx, dtype)) for x in (a, spd, upper))  # mx.array alone makes float32
    cpu = mx.cpu
    ops = {
        "matmul": lambda: [A @ A[:, :4], A.T @ A[:, :4]],  # cblas_?gemm, m != n and a transpose
        "svd": lambda: [mx.linalg.svd(A, compute_uv=False, stream=cpu)],  # ?gesdd
        "eigvalsh": lambda: [mx.linalg.eigvalsh(S, stream=cpu)],  # ?syevd / cheevd
        "eigvals": lambda: [mx.linalg.eigvals(A, stream=cpu)],  # ?geev
    }
    if dtype != "complex64":  # MLX has these for real types only
        ops["inv"] = lambda: [mx.linalg.inv(A, stream=cpu)]  # ?getrf, ?getri
        ops["qr"] = lambda: list(mx.linalg.qr(A, stream=cpu))  # ?geqrf, ?orgqr
        ops["cholesky"] = lambda: [mx.linalg.cholesky(S, stream=cpu)]  # ?potrf
        ops["tri_inv"] = lambda: [mx.linalg.tri_inv(U, upper=True, stream=cpu)]  # ?trtri
    for name, op in ops.items():
        arrays = op()
        mx.eval(arrays)
        out[f"{dtype} {name}"] = [[np.real(x).tolist(), np.imag(x).tolist()] for x in map(np.array, arrays)]
    out[f"{dtype} inputs"] = [[np.real(m).tolist(), np.imag(m).tolist()] for m in (a, spd, upper)]
print(json.dumps(out))
"""


def _complex(pair):
    """Arrays cross the process boundary as [real part, imaginary part]."""
    return np.array(pair[0]) + 1j * np.array(pair[1])


@linux
def test_mlx_binds_every_blas_call_to_pypi_openblas_and_gets_numpys_answers(tmp_path):
    shim_file = shim()
    log = tmp_path / "ld"
    proc = python(LINALG, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(log))
    bindings = "".join(p.read_text() for p in tmp_path.glob("ld.*"))
    libmlx, bundled = mlx_libraries()
    needed = nm(libmlx, "--undefined-only") & set().union(*(nm(p, "--defined-only") for p in bundled))
    for symbol in needed:
        # "binding file .../libmlx.so [0] to .../_openblas_shim...so [0]: normal symbol `cblas_sgemm'"
        bound = re.search(rf"binding file \S*libmlx\.so \[0\] to (\S+) \[0\]: normal symbol `{symbol}'", bindings)
        assert bound, f"libmlx never bound {symbol}"
        assert Path(bound.group(1)).name == shim_file.name, f"{symbol} went to {bound.group(1)}"
        forwarded = re.search(rf"to (\S+) \[0\]: normal symbol `scipy_{symbol}'", bindings)
        assert forwarded and "libscipy_openblas" in forwarded.group(1), f"{symbol} not forwarded to OpenBLAS"

    out = json.loads(proc.stdout.splitlines()[-1])
    for dtype in ("float32", "float64", "complex64"):
        a, spd, upper = (_complex(m) for m in out[f"{dtype} inputs"])
        tol = 1e-4 if dtype != "float64" else 1e-10
        got = {k.split()[1]: [_complex(x) for x in v] for k, v in out.items() if k.startswith(dtype + " ")}
        np.testing.assert_allclose(got["matmul"][0], a @ a[:, :4], rtol=tol, atol=tol)
        np.testing.assert_allclose(got["matmul"][1], a.T @ a[:, :4], rtol=tol, atol=tol)
        np.testing.assert_allclose(got["svd"][0], np.linalg.svd(a, compute_uv=False), rtol=tol, atol=tol)
        np.testing.assert_allclose(got["eigvalsh"][0], np.linalg.eigvalsh(spd), rtol=tol, atol=tol * 10)
        # Eigenvalues come in no set order: each must sit on one of numpy's, and the other way round.
        distance = np.abs(got["eigvals"][0][:, None] - np.linalg.eigvals(a)[None, :])
        assert distance.min(axis=0).max() < 1e-3 and distance.min(axis=1).max() < 1e-3
        if dtype == "complex64":
            continue
        np.testing.assert_allclose(got["inv"][0], np.linalg.inv(a), rtol=1e-3, atol=1e-3)
        q, r = got["qr"]
        np.testing.assert_allclose(q @ r, a, atol=tol * 10)
        np.testing.assert_allclose(q.T @ q, np.eye(6), atol=tol * 10)
        np.testing.assert_allclose(got["cholesky"][0], np.linalg.cholesky(spd), rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(got["tri_inv"][0], np.linalg.inv(upper), rtol=tol, atol=tol)


@linux
def test_the_blas_in_use_is_reported_with_its_version_and_core():
    shim()
    info = blas_in_child()
    assert info["name"] == "OpenBLAS" and "PyPI" in info["source"]
    assert info["version"].startswith("0.3.")
    assert info["core"] == corename_in_child(pypi_library(), "scipy_")
    assert info["core_origin"] == "detected" and info["note"] == ""


# Every way in that a process starts from: each must set up the BLAS before anything imports mlx.
ENTRY_POINTS = ["chat.cli", "bench.run", "bench.ranks", "bench.scaling", "bench.lookup", "bench.serve_latency"]
ENTRY_POINTS += ["model.distributed.follower"]


@linux
@pytest.mark.parametrize("entry", ENTRY_POINTS + ["scripts/soak.py"])
def test_every_entry_point_gives_mlx_the_blas_before_importing_it(entry):
    """`python -m bench.ranks` imported mlx first and ran on the reference BLAS (prefill 16 tok/s for 387)."""
    load = f"import runpy; runpy.run_path({entry!r})" if entry.endswith(".py") else f"import {entry}"
    code = f"{load}\nimport model.blas as b\nprint(b.blas_in_use())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("OpenBLAS"), (entry, out.stdout, out.stderr[-500:])


@linux
def test_a_forced_generic_core_is_reported_not_hidden():
    shim()
    info = blas_in_child(OPENBLAS_CORETYPE="Prescott")
    # OpenBLAS itself names the kernels it runs (0.3.34 says "Katmai", Prescott's alias on x86-64).
    reference = corename_in_child(pypi_library(), "scipy_", OPENBLAS_CORETYPE="Prescott")
    assert reference and info["core"] == reference
    assert info["core_origin"] == "forced by OPENBLAS_CORETYPE=Prescott"
    simd = cpu_simd(cpu_flags())
    if simd is None:
        pytest.skip("this CPU has no AVX, so Prescott's kernels are not a fallback here")
    assert reference in info["note"] and simd in info["note"] and CORE_FOR_SIMD[simd] in info["note"]
    assert "OPENBLAS_CORETYPE=Prescott" in info["note"]


@linux
def test_a_generic_pick_is_overruled_with_a_core_for_this_cpu():
    """As if OpenBLAS did not know this CPU: the core chosen from the CPU's flags is the one it runs."""
    shim()
    if cpu_simd(cpu_flags()) not in ("AVX-512", "AVX2"):
        pytest.skip("needs a CPU with AVX2, whose Haswell kernels are asked for below")
    code = (
        "import json, os, model.blas as b, model.openblas_core as c\n"
        "b.probe_core = lambda *a: 'Prescott'\n"  # what an OpenBLAS older than the CPU picks
        "b.cpu_flags = lambda: {'sse2', 'avx', 'avx2', 'fma'}\n"  # an AVX2 CPU: Haswell, not what it picks itself
        "info = b._pypi_openblas()\n"
        "print(json.dumps([info.as_dict(), 'OPENBLAS_CORETYPE' in os.environ]))"
    )
    info, leaked = json.loads(python(code, GLASSCHAT_BLAS="reference").stdout.splitlines()[-1])
    assert info["core"] == "Haswell" and info["note"] == ""
    assert info["core_origin"] == "chosen for this CPU; OpenBLAS alone picked Prescott"
    assert not leaked


def without_the_shim(tmp_path: Path) -> Path:
    """A copy of the project's Python packages with no built shim, as after an install with no C compiler."""
    for package in ("model", "chat"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return tmp_path


@linux
def test_without_the_shim_mlx_still_runs_and_the_reason_is_one_line(tmp_path):
    copy = without_the_shim(tmp_path)
    info = blas_in_child(cwd=copy)
    if ctypes.util.find_library("openblas"):  # a system OpenBLAS is the fallback where it is installed
        assert info["name"] == "OpenBLAS" and info["source"] == "system libopenblas.so.0"
        return
    assert info["name"] == "reference BLAS"
    assert "reference BLAS" in info["note"] and "shim that was not built" in info["note"]
    assert "\n" not in info["note"]
    # And it computes: a product through MLX on the bundled BLAS.
    out = python("import model, mlx.core as mx; a = mx.arange(6.0).reshape(2, 3); print((a @ a.T).tolist())", copy)
    assert json.loads(out.stdout) == (np.arange(6.0).reshape(2, 3) @ np.arange(6.0).reshape(2, 3).T).tolist()


@linux
def test_the_command_line_says_it_once_at_start(tmp_path):
    copy = without_the_shim(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "GLASSCHAT_BLAS")}
    proc = subprocess.run(
        [sys.executable, "-m", "chat.cli", "run", "Hi", "--max-tokens", "1", "--json"],
        cwd=copy,
        env={**env, "GLASSCHAT_BLAS": "pypi"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "BLAS" in line]
    assert len(lines) == 1 and lines[0].startswith("glasschat: MLX runs on its bundled reference BLAS"), proc.stderr
    assert json.loads(proc.stdout)["model"]["blas_note"] in lines[0]


NOTE = "MLX runs on its bundled reference BLAS (single-threaded, about 4 GFLOP/s): no system libopenblas.so.0."


@pytest.mark.asyncio
async def test_the_app_says_it_once_at_start_and_model_info_shows_it():
    from fake_engine import FakeEngine
    from rich.console import Console
    from ui_helpers import text_of, wait_for

    from chat.app import GlasschatApp
    from chat.screens.model_info import info_table
    from chat.widgets.transcript import Notice
    from model.runtime.events import ModelReady
    from model.runtime.settings import EngineOptions

    def slow_blas_engine(options, emit):
        engine = FakeEngine(options, emit)
        engine.load_events = [
            dataclasses.replace(e, info={**e.info, "blas": "reference BLAS · bundled with mlx", "blas_note": NOTE})
            if isinstance(e, ModelReady)
            else e
            for e in engine.load_events
        ]
        return engine

    def shown(info) -> str:
        console = Console(record=True, width=200)
        console.print(info_table(info))
        return console.export_text()

    app = GlasschatApp(EngineOptions(), engine_factory=slow_blas_engine)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await pilot.pause(0.1)
        notices = [text_of(n) for n in app.query(Notice)]
        assert sum("reference BLAS" in n for n in notices) == 1, notices
        model_info = app.chat.model_info
    info = shown(model_info)
    assert "reference BLAS · bundled with mlx" in info and "BLAS note" in info and NOTE in info
    # Where all is well there is no note row.
    plain = {k: v for k, v in model_info.items() if k != "blas_note"}
    assert "BLAS note" not in shown(plain) and "reference BLAS" in shown(plain)


def test_the_bench_reports_the_blas_name_version_and_core():
    from bench.run import machine_info

    machine = json.loads(json.dumps(machine_info("cpu")))  # as `bench --json` prints it
    assert machine["blas"] == blas.blas_info().as_dict()
    assert {"name", "version", "core", "core_origin", "source", "note"} <= set(machine["blas"])
    assert machine["gemm_gflops"] > 0
