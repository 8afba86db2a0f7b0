"""Writes the notebooks of this folder from the cells below (outputs cleared).

Run ``python notebooks/make_notebooks.py`` after editing; ``tests/test_notebooks.py`` executes
every notebook, so an example that stops working fails the tests.
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

QUICKSTART = [
    new_markdown_cell("# ufuncgen quick start\n\nA formula in, a NumPy ufunc out: strings, SymPy expressions, "
                      "the decorator, the generated source, LaTeX display, broadcasting, `out=` and the cache."),
    new_code_cell("import numpy as np\nimport sympy as sp\nimport ufuncgen as ug"),
    new_markdown_cell("## From a string\nArguments are the names in the formula, sorted, unless `args=` says "
                      "otherwise. The first call compiles a loop for the input dtypes."),
    new_code_cell("f = ug.ufunc(\"sin(x)**2 + a*exp(-y)\")\n"
                  "x = np.linspace(0, np.pi, 5)\ny = np.linspace(0, 1, 5)\n"
                  "f(0.5, x, y)"),
    new_code_cell("assert np.allclose(f(0.5, x, y), np.sin(x)**2 + 0.5*np.exp(-y))\nf"),
    new_markdown_cell("The object shows its formula as LaTeX in a notebook; `repr` says what is compiled."),
    new_code_cell("print(repr(f))\nf.signatures"),
    new_markdown_cell("## The generated kernel\nEvery literal is typed to the signature: a float32 call "
                      "compiles a float32 kernel with no float64 in it."),
    new_code_cell("f(np.float32(0.5), x.astype(np.float32), y.astype(np.float32)).dtype"),
    new_code_cell("print(f.source)"),
    new_markdown_cell("## From SymPy, and derivatives"),
    new_code_cell("t, k = sp.symbols(\"t k\")\ng = ug.ufunc(sp.exp(-k*t) * sp.cos(t), args=(\"t\", \"k\"))\n"
                  "dg = g.diff(\"t\")\ndg.expr"),
    new_code_cell("ts = np.linspace(0, 3, 4)\n"
                  "np.allclose(dg(ts, 0.5), -0.5*np.exp(-0.5*ts)*np.cos(ts) - np.exp(-0.5*ts)*np.sin(ts))"),
    new_markdown_cell("## The decorator\nThe function runs once with symbols; use `ug.where` (not `if`)."),
    new_code_cell("@ug.vectorize\ndef relu_scaled(x, s):\n    return ug.where(x > 0, s * x, 0.0)\n\n"
                  "relu_scaled(np.array([-1.0, 2.0, 3.0]), 2.0)"),
    new_code_cell("try:\n    @ug.vectorize\n    def bad(x):\n        if x > 0:\n            return x\n"
                  "        return -x\nexcept ug.FormulaError as err:\n    print(err)"),
    new_markdown_cell("## NumPy semantics: broadcasting, `out=`, `where=`, `reduce`"),
    new_code_cell("col = np.arange(3.0).reshape(3, 1)\nrow = np.arange(4.0)\nf(1.0, col, row).shape"),
    new_code_cell("out = np.empty(5)\nf(0.5, x, y, out=out) is out"),
    new_code_cell("sub = ug.ufunc(\"x - y\", signatures=\"float64(float64, float64)\")\n"
                  "sub.reduce(np.arange(5.0)), np.subtract.reduce(np.arange(5.0))"),
    new_markdown_cell("## The cache\nThe same formula (in any spelling with the same canonical form) never "
                      "compiles twice in a process; compiled loops also go to a disk cache."),
    new_code_cell("before = ug.cache_info()[\"memory\"][\"compiles\"]\n"
                  "h = ug.ufunc(\"arcsin(x) + 0.25\"); h(x / 4)\n"
                  "h2 = ug.ufunc(\"asin(x) + 0.25\"); h2(x / 4)\n"
                  "ug.cache_info()[\"memory\"][\"compiles\"] - before"),
]

CONFIG_AND_CLI = [
    new_markdown_cell("# Formulas from a config file, and the command line"),
    new_code_cell("import subprocess, sys, tempfile, pathlib\nimport numpy as np\nimport ufuncgen as ug\n"
                  "ROOT = pathlib.Path.cwd().parent if pathlib.Path.cwd().name == 'notebooks' else pathlib.Path.cwd()\n"
                  "print((ROOT / 'examples' / 'formulas.toml').read_text())"),
    new_code_cell("fs = ug.load(ROOT / 'examples' / 'formulas.toml')\nlist(fs)"),
    new_code_cell("m = np.array([1.0, 2.0])\nv = np.array([3.0, 4.0])\n"
                  "assert np.allclose(fs.kinetic(m, v), 0.5 * m * v**2)\nfs.kinetic(m, v)"),
    new_markdown_cell("## Every mistake in a file, reported together"),
    new_code_cell("bad = pathlib.Path(tempfile.mkdtemp()) / 'bad.toml'\n"
                  "bad.write_text('[ok]\\nexpr = \"x + 1\"\\n\\n[typo]\\nexrp = \"x\"\\n\\n"
                  "[broken]\\nexpr = \"sinn(x)\"\\n')\n"
                  "try:\n    ug.load(bad)\nexcept ug.FormulaError as err:\n    print(err)"),
    new_markdown_cell("## The command line"),
    new_code_cell("def cli(*args):\n    proc = subprocess.run([sys.executable, '-m', 'ufuncgen', *args], "
                  "capture_output=True, text=True)\n    print(proc.stdout or proc.stderr)\n    return proc.returncode\n\n"
                  "cli('show', 'sin(x)**2 + a*exp(-y)')"),
    new_code_cell("cli('eval', 'a*x + y', 'a=2', 'x=1,2,3', 'y=4')"),
    new_code_cell("cli('eval', 'x +* 2', 'x=1')  # exit code 1, one line on stderr"),
]

GPU = [
    new_markdown_cell("# The cuda and auto targets\n\nWith an NVIDIA GPU and `pip install \"ufuncgen[cuda]\"` this "
                      "notebook runs on the GPU. Without one it runs the very same generated kernels in Numba's CUDA "
                      "simulator (on the CPU, slowly): everything below works, except the timings, which need a GPU."),
    new_code_cell("import os, pathlib\n"
                  "HAVE_GPU = pathlib.Path('/dev/nvidiactl').exists()\n"
                  "if not HAVE_GPU:\n"
                  "    os.environ['NUMBA_ENABLE_CUDASIM'] = '1'   # must be set before numba.cuda is imported\n"
                  "print('GPU present' if HAVE_GPU else 'no GPU: using the CUDA simulator')"),
    new_code_cell("import numpy as np\nimport ufuncgen as ug\nfrom numba import cuda\n\n"
                  "f = ug.ufunc('a*x + y', target='cuda')\n"
                  "x = np.linspace(0, 1, 1000, dtype=np.float32)\ny = np.ones(1000, dtype=np.float32)"),
    new_markdown_cell("## Host arrays are copied in, and the result copied back"),
    new_code_cell("r = f(np.float32(2), x, y)\nassert isinstance(r, np.ndarray) and r.dtype == np.float32\n"
                  "assert np.allclose(r, 2 * x + y)\nr[:4]"),
    new_markdown_cell("## Device arrays stay on the device (device in, device out)"),
    new_code_cell("dx, dy = cuda.to_device(x), cuda.to_device(y)\nd = f(np.float32(2), dx, dy)\n"
                  "print(type(d).__name__)\nassert np.allclose(d.copy_to_host(), 2 * x + y)"),
    new_code_cell("out = cuda.device_array_like(dx)\nf(np.float32(2), dx, dy, out=out)\n"
                  "np.allclose(out.copy_to_host(), 2 * x + y)"),
    new_markdown_cell("## The generated kernel: a grid-stride loop around the typed scalar kernel"),
    new_code_cell("print(f.source)"),
    new_markdown_cell("## `target='auto'`: device inputs run on the GPU, host inputs on the CPU"),
    new_code_cell("g = ug.ufunc('sin(x)**2 + cos(y)*exp(-x*y)', target='auto')\n"
                  "host = g(x, y)                      # NumPy in: the cpu loop\n"
                  "dev = g(dx, dy)                     # device in: the cuda kernel\n"
                  "assert np.allclose(host, dev.copy_to_host(), rtol=1e-5)\n"
                  "type(host).__name__, type(dev).__name__"),
    new_markdown_cell("## Mixing host and device arrays is an error that says what to do"),
    new_code_cell("try:\n    f(np.float32(2), dx, y)\nexcept TypeError as err:\n    print(err)"),
    new_markdown_cell("## Timings (GPU only)\nOn the simulator a timing would measure Python, not a GPU, so it "
                      "is skipped. `python benchmarks/gpu.py` compares against Numba's CUDA vectorize and CuPy."),
    new_code_cell("if HAVE_GPU:\n    import time\n    n = 10_000_000\n"
                  "    bx = cuda.to_device(np.random.rand(n).astype(np.float32))\n"
                  "    by = cuda.to_device(np.random.rand(n).astype(np.float32))\n"
                  "    bo = cuda.device_array_like(bx)\n    f(np.float32(2), bx, by, out=bo); cuda.synchronize()\n"
                  "    t = time.perf_counter()\n    for _ in range(20):\n        f(np.float32(2), bx, by, out=bo)\n"
                  "    cuda.synchronize()\n    dt = (time.perf_counter() - t) / 20\n"
                  "    print(f'axpy float32, 1e7: {dt*1e3:.3f} ms, {12*n/dt/1e9:.0f} GB/s')\n"
                  "else:\n    print('timings need a GPU')"),
]

PERFORMANCE = [
    new_markdown_cell("# Performance on the CPU\n\nA small run of `benchmarks/cpu.py` (1e5 elements, float64): "
                      "ufuncgen against NumPy, numexpr and `sympy.lambdify` on the same data in one process. The "
                      "full table (1e5 to 1e7, float32 and float64, with the machine's copy bandwidth) is "
                      "`python benchmarks/cpu.py`; the README shows it."),
    new_code_cell("import sys, pathlib\n"
                  "ROOT = pathlib.Path.cwd().parent if pathlib.Path.cwd().name == 'notebooks' else pathlib.Path.cwd()\n"
                  "sys.path.insert(0, str(ROOT / 'benchmarks'))\nimport cpu as bench\n\n"
                  "bw1, bwall = bench.copy_bandwidth(2_000_000)\nrows = []\n"
                  "for case in bench.CASES:\n    bench.run_case(case, 'float64', 100_000, bw1, bwall, rows)\n"
                  "len(rows)"),
    new_code_cell("import numpy as np\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n\n"
                  "tools = ['numpy', 'numexpr-1', 'lambdify', 'ug-cpu', 'ug-parallel']\n"
                  "cases = list(bench.CASES)\n"
                  "speed = {(r[0], r[3]): r[5] for r in rows}\n"
                  "fig, ax = plt.subplots(figsize=(8, 3.5))\nwidth = 0.16\n"
                  "for k, tool in enumerate(tools):\n"
                  "    ax.bar(np.arange(len(cases)) + k * width, [speed[(c, tool)] for c in cases], width, label=tool)\n"
                  "ax.set_xticks(np.arange(len(cases)) + 2 * width, cases)\nax.set_yscale('log')\n"
                  "ax.set_ylabel('speed vs NumPy (log)')\nax.legend(ncol=5, fontsize=8)\nfig.tight_layout()"),
    new_code_cell("for r in rows:\n    if r[3] in ('numpy', 'ug-cpu'):\n"
                  "        print(f'{r[0]:15s} {r[3]:10s} {r[4]:8.2f} ns/elem  {r[5]:6.2f}x NumPy')"),
]


def write(name, cells):
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})
    nbformat.write(nb, HERE / f"{name}.ipynb")


def main():
    write("01-quickstart", QUICKSTART)
    write("02-config-and-cli", CONFIG_AND_CLI)
    write("03-gpu", GPU)
    write("04-performance", PERFORMANCE)


if __name__ == "__main__":
    main()
