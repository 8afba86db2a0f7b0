"""The ``ufuncgen`` command: show, eval, compile, bench and cache, on top of the Python API.

Exit codes: 0 success, 1 a formula, file or compile failed, 2 the command line was wrong.  Errors
go to stderr as one line each (``--debug`` shows the traceback instead).  Importing this module is
cheap: NumPy, SymPy and Numba load inside the commands that need them.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import time
from collections.abc import Sequence

__all__ = ["main", "build_parser", "UsageError"]

PROG = "ufuncgen"


class UsageError(Exception):
    """The command line is wrong (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr (exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---- helpers --------------------------------------------------------------------------------
def _names(text: str | None) -> list | None:
    return [a for a in re.split(r"[,\s]+", text) if a] if text else None


def _has_subscripts(formula) -> bool:
    """Whether the formula uses index notation x[i] (a gufunc).  Only parses; runs nothing."""
    for text in formula if isinstance(formula, list) else [formula]:
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # the formula parser reports the problem properly
        if any(isinstance(node, ast.Subscript) for node in ast.walk(tree)):
            return True
    return False


def _formulas(text: str):
    """``"a; b"`` is two formulas (one output each); the formula language itself has no ';'."""
    parts = [p.strip() for p in text.split(";")]
    return parts if len(parts) > 1 else text


def _make(formula: str, args, target: str, signature: str | None = None, layout: str | None = None):
    """``ug.gufunc`` for index notation (or an explicit layout), else ``ug.ufunc``."""
    sigs = [signature] if signature else None
    formula = _formulas(formula)
    if layout is not None or _has_subscripts(formula):
        try:
            from .generalized import gufunc
        except ImportError as err:
            raise RuntimeError("index notation (x[i]) and --layout need gufunc support (ufuncgen.generalized), "
                               "which this installation lacks") from err
        return gufunc(formula, layout=layout, args=args, signatures=sigs, target=target)
    from .elementwise import ufunc
    return ufunc(formula, args=args, signatures=sigs, target=target)


def _layout(f) -> str:
    layout = getattr(f, "layout", None)
    if layout:
        return str(layout)
    return ",".join(["()"] * f.nin) + "->" + ",".join(["()"] * f.nout)


def _exprs(f) -> tuple:
    return f.expr if isinstance(f.expr, tuple) else (f.expr,)


def _one_line(err: BaseException) -> str:
    """An exception as one line: what, and for a formula, where."""
    from .errors import FormulaError
    if isinstance(err, FormulaError) and hasattr(err, "reason"):
        text = err.reason
        if err.formula is not None:
            at = f", column {err.col + 1}" if err.col is not None else ""
            text += f" (in {err.formula.strip()[:120]!r}{at})"
    else:
        text = str(err) or type(err).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first


_EXPECTED = (ValueError, TypeError, OSError, ImportError, RuntimeError, KeyError)


# ---- show -----------------------------------------------------------------------------------
def cmd_show(opts) -> int:
    import sympy as sp

    f = _make(opts.formula, _names(opts.args), opts.target, opts.signature, opts.layout)
    exprs = _exprs(f)
    rows = [
        ("expression", "; ".join(str(e) for e in exprs)),
        ("latex", "; ".join(sp.latex(e) for e in exprs)),
        ("args", ", ".join(f.args)),
        ("layout", _layout(f)),
        ("target", f.target),
        ("signatures", ", ".join(f.signatures) or "compiled lazily, per input dtypes (source below: float64)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(f"---- generated kernel ({'; '.join(f.signatures) or 'float64'}) ----")
    print(f.source.rstrip())
    return 0


# ---- eval -----------------------------------------------------------------------------------
def _number(text: str, name: str):
    for convert in (int, float, complex):
        try:
            return convert(text)
        except ValueError:
            continue
    raise UsageError(f"{name}={text}: {text!r} is not a number")


def _values(assignments: Sequence[str], dtype) -> dict:
    import numpy as np
    values = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UsageError(f"{item!r} is not NAME=VALUE[,VALUE...] (e.g. x=1,2,3)")
        if name in values:
            raise UsageError(f"{name} is given twice")
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or not all(parts):
            raise UsageError(f"{item!r} has an empty value")
        numbers = [_number(p, name) for p in parts]
        array = np.array(numbers if len(numbers) > 1 else numbers[0], dtype=dtype)
        values[name] = array
    return values


def cmd_eval(opts) -> int:
    import numpy as np

    values = _values(opts.values, opts.dtype)
    f = _make(opts.formula, _names(opts.args), opts.target)
    unknown = [n for n in values if n not in f.args]
    if unknown:
        raise UsageError(f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not an argument of the "
                         f"formula (its args: {', '.join(f.args)})")
    missing = [a for a in f.args if a not in values]
    if missing:
        raise UsageError(f"no value for {', '.join(missing)} (give {' '.join(a + '=...' for a in missing)}; "
                         f"the formula's args: {', '.join(f.args)})")
    result = f(*(values[a] for a in f.args))
    results = result if isinstance(result, tuple) else (result,)
    with np.printoptions(precision=17, floatmode="maxprec"):
        for i, r in enumerate(results):
            prefix = f"output {i}: " if len(results) > 1 else ""
            print(prefix + np.array2string(np.asarray(r), separator=", "))
    return 0


# ---- compile --------------------------------------------------------------------------------
class _Lines:
    """Progress as plain lines (output that is not a terminal: logs, CI)."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def start(self, name: str) -> None:
        pass

    def finish(self, name: str, status: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {name}: {status}", flush=True)

    def close(self) -> None:
        pass


class _LiveLine(_Lines):
    """Progress on one rewritten terminal line (a terminal without tqdm)."""

    def start(self, name: str) -> None:
        width = 24
        filled = width * self.done // max(self.total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {name:<30.30}")
        sys.stderr.flush()

    def finish(self, name: str, status: str) -> None:
        self.done += 1

    def close(self) -> None:
        sys.stderr.write("\r" + " " * 70 + "\r")
        sys.stderr.flush()


class _Tqdm(_Lines):
    """Progress through tqdm (a terminal with tqdm installed)."""

    def __init__(self, total: int):
        super().__init__(total)
        from tqdm import tqdm
        self.bar = tqdm(total=total, unit="formula", file=sys.stderr, leave=False)

    def start(self, name: str) -> None:
        self.bar.set_postfix_str(name)

    def finish(self, name: str, status: str) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _progress(total: int) -> _Lines:
    if not sys.stderr.isatty():
        return _Lines(total)
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return _LiveLine(total)
    return _Tqdm(total)


def cmd_compile(opts) -> int:
    from .config import ConfigError, entries, load, precompile

    try:
        formulas = load(opts.file)
    except ConfigError as err:
        for problem in err.problems:
            print(f"{PROG} compile: error: {problem.format(err.path, detail=False)}", file=sys.stderr)
        return 1
    table = entries(formulas)
    progress = _progress(len(table))
    failed, t0 = [], time.perf_counter()
    try:
        for name, entry in table.items():
            progress.start(name)
            t1 = time.perf_counter()
            try:
                sigs = precompile(formulas[name], entry.layout)
                status = f"ok, {'; '.join(sigs)} ({time.perf_counter() - t1:.2f} s)"
            except Exception as err:  # one formula failing must not stop the others
                if opts.debug:
                    raise
                failed.append((name, entry.line, f"{type(err).__name__}: {_one_line(err)}"))
                status = "FAILED: " + failed[-1][2]
            progress.finish(name, status)
    finally:
        progress.close()
    elapsed = time.perf_counter() - t0
    ok = len(table) - len(failed)
    print(f"compiled {ok} of {len(table)} formula{'s' if len(table) != 1 else ''} from {opts.file} "
          f"in {elapsed:.2f} s")
    for name, line, why in failed:
        print(f"{PROG} compile: error: {opts.file}:{line}: [{name}] {why}", file=sys.stderr)
    if failed:
        print(f"{PROG} compile: {len(failed)} failed: {', '.join(n for n, _, _ in failed)}", file=sys.stderr)
    return 1 if failed else 0


# ---- bench ----------------------------------------------------------------------------------
def _numpy_reference(f):
    """The checked SymPy expression as a NumPy function (``lambdify`` of our expression, not user text)."""
    import sympy as sp

    from .functions import FUNCTIONS
    names = {cls.__name__: fn.reference for fn in FUNCTIONS if fn.reference is not None for cls in fn.sympy_types}
    exprs = _exprs(f)
    return sp.lambdify(f.formula.symbols, list(exprs) if len(exprs) > 1 else exprs[0], modules=[names, "numpy"])


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cmd_bench(opts) -> int:
    import numpy as np

    if opts.n <= 0 or opts.repeat <= 0:
        raise UsageError("--n and --repeat must be positive")
    if _has_subscripts(opts.formula):
        raise UsageError("bench times elementwise formulas; gufuncs have their own benchmarks (benchmarks/)")
    f = _make(opts.formula, _names(opts.args), opts.target)
    rng = np.random.default_rng(0)
    # inputs in (0.1, 1): inside the domain of log, sqrt, asin, ... so both sides compute numbers
    xs = [rng.uniform(0.1, 1.0, opts.n).astype(opts.dtype) for _ in range(f.nin)]
    reference = _numpy_reference(f)
    t0 = time.perf_counter()
    ours = f(*xs)
    compile_s = time.perf_counter() - t0
    with np.errstate(all="ignore"):
        theirs = reference(*xs)
        t_np = _best(lambda: reference(*xs), opts.repeat)
    t_ug = _best(lambda: f(*xs), opts.repeat)
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, (tuple, list)) else (theirs,)
    rtol = 1e-4 if np.dtype(opts.dtype).itemsize <= 4 else 1e-9
    agree = all(np.allclose(np.asarray(a, dtype=complex), np.broadcast_to(np.asarray(b, dtype=complex), np.shape(a)),
                            rtol=rtol, atol=0, equal_nan=True) for a, b in zip(ours, theirs, strict=True))
    print(f"formula  {'; '.join(str(e) for e in _exprs(f))}   args ({', '.join(f.args)})")
    print(f"inputs   n={opts.n:,} {np.dtype(opts.dtype).name}, best of {opts.repeat}")
    print(f"ufuncgen {t_ug * 1e3:10.3f} ms   target {f.target} (first call, with compiling: {compile_s:.2f} s)")
    print(f"numpy    {t_np * 1e3:10.3f} ms")
    print(f"ratio    {t_np / t_ug:10.2f}x   (numpy time / ufuncgen time; above 1 means ufuncgen is faster)")
    if not agree:
        print(f"{PROG} bench: warning: results differ from NumPy's beyond rtol={rtol}", file=sys.stderr)
    return 0


# ---- cache ----------------------------------------------------------------------------------
def _print_tree(value, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, dict):
                print(f"{pad}{key}:")
                _print_tree(v, indent + 1)
            else:
                print(f"{pad}{key}: {v}")
    elif value is not None:
        print(f"{pad}{value}")


def cmd_cache_info(opts) -> int:
    from .cacheapi import cache_info
    _print_tree(cache_info())
    return 0


def cmd_cache_clear(opts) -> int:
    from .cacheapi import clear_cache
    result = clear_cache()
    print("cache cleared")
    _print_tree(result)
    return 0


# ---- the parser -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    parser = _Parser(prog=PROG, description="Compile scalar formulas into fast NumPy ufuncs (Numba).",
                     epilog=f"Run '{PROG} COMMAND --help' for a command's options. Exit codes: 0 ok, "
                            "1 a formula, file or compile failed, 2 wrong command line.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def add(name, func, help_text, **kw):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text, **kw)
        p.set_defaults(func=func)
        return p

    target = dict(default="cpu", choices=("cpu", "parallel", "cuda", "auto"), help="where it runs (default: cpu)")
    args_help = "argument order, comma-separated (default: the names in the formula, sorted)"

    p = add("show", cmd_show, "print the canonical expression, LaTeX, args, layout and generated kernel source")
    p.add_argument("formula", help='the formula, e.g. "sin(x)**2 + a*exp(-y)" ("f; g": two outputs)')
    p.add_argument("--args", help=args_help)
    p.add_argument("--target", **target)
    p.add_argument("--signature", help='compile this signature, e.g. "float32(float32)", and show its kernel')
    p.add_argument("--layout", help='a gufunc layout, e.g. "(n)->()" (index notation x[i] implies a gufunc)')

    p = add("eval", cmd_eval, "evaluate a formula on numbers given on the command line",
            epilog="example: ufuncgen eval 'a*x + y' a=2 x=1,2,3 y=4")
    p.add_argument("formula", help='the formula ("f; g": two outputs)')
    p.add_argument("values", nargs="*", metavar="NAME=V[,V...]", help="a value or comma-separated values per argument")
    p.add_argument("--args", help=args_help)
    p.add_argument("--target", **target)
    p.add_argument("--dtype", default=None, help="NumPy dtype of the inputs (default: inferred from the numbers)")

    p = add("compile", cmd_compile, "compile every formula of a config file into the cache")
    p.add_argument("file", help="a .toml (or .yaml) file of named formulas")

    p = add("bench", cmd_bench, "time a formula against the same expression in NumPy")
    p.add_argument("formula", help="the formula")
    p.add_argument("--n", type=int, default=1_000_000, help="elements per input (default: 1000000)")
    p.add_argument("--target", **target)
    p.add_argument("--args", help=args_help)
    p.add_argument("--dtype", default="float64", help="input dtype (default: float64)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs; the best is reported (default: 5)")

    p = add("cache", None, "show or clear the compile cache")
    cache_sub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    for name, func, text in (("info", cmd_cache_info, "entries, hits and sizes of the caches"),
                             ("clear", cmd_cache_clear, "forget every compiled loop (memory and disk)")):
        c = cache_sub.add_parser(name, parents=[common], help=text, description=text)
        c.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    opts = parser.parse_args(argv)
    prog = f"{PROG} {opts.command}"
    try:
        return opts.func(opts)
    except UsageError as err:
        print(f"{prog}: error: {err} (see '{prog} --help')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if opts.debug:
            raise
        from .errors import FormulaError, SignatureError
        if isinstance(err, (FormulaError, SignatureError) + _EXPECTED):
            print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        else:
            print(f"{prog}: error: {type(err).__name__}: {_one_line(err)} (run with --debug for the traceback)",
                  file=sys.stderr)
        return 1
