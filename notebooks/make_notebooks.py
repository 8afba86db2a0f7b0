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


def write(name, cells):
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})
    nbformat.write(nb, HERE / f"{name}.ipynb")


def main():
    write("01-quickstart", QUICKSTART)
    write("02-config-and-cli", CONFIG_AND_CLI)


if __name__ == "__main__":
    main()
