"""Long fuzz run of ufuncgen's front end: crashes, hangs and executions over many random inputs.

    python benchmarks/fuzz.py --inputs 100000 --workers 2 --out fuzz-report.json

Inputs come from Hypothesis (random ASCII and Unicode text, token soup, random Python expression
trees, and payloads such as ``open(SENTINEL, 'w')`` spliced into random expressions).  Each input
goes through the whole front end: parse, checks, dtype inference, code generation, and ``exec``
of the generated kernel module (the one place where injected text could run).  Then:

* a **crash** is any exception other than FormulaError / SignatureError (or TypeError where a
  function refuses complex input, as NumPy's would), or a worker process dying;
* a **hang** is an input taking more than ``--limit`` seconds (1 s; SIGALRM in the worker, and a
  watchdog in the parent kills a worker stuck in C code);
* an **execution** is the sentinel file (or any file) appearing in the worker's scratch directory;
  every payload names that file.

Every ``--compile-every``-th accepted formula is also compiled with Numba and run on a few values
(not counted against the 1 s limit: a compile legitimately takes longer).  Hypothesis is a test
dependency only; this script is not part of the package.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import signal
import string
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ALLOWED = ("FormulaError", "SignatureError")


# ---- inputs -------------------------------------------------------------------------------
def strategies(sentinel: str):
    from hypothesis import strategies as st

    from ufuncgen.functions import BY_NAME

    payloads = [
        "__import__('os').system('touch {s}')", "open('{s}', 'w')", "exec(\"open('{s}','w')\")",
        "eval(\"open('{s}','w')\")", "(lambda: open('{s}', 'w'))()", "[open('{s}','w') for _ in (1,)]",
        "().__class__.__bases__[0].__subclasses__()", "x.__class__.__init__.__globals__",
        "ｏｐｅｎ('{s}', 'w')", "__ｉｍｐｏｒｔ__('os').system('touch {s}')", "f\"{{open('{s}','w')}}\"",
        "(y := open('{s}', 'w'))", "getattr(x, '__class__')", "x\nopen('{s}', 'w')", "x; open('{s}','w')",
        "breakpoint()", "sympify(\"open('{s}','w')\")", "compile('x', '{s}', 'eval')", "(3+1).ᵇit_length()",
    ]
    payloads = [p.format(s=sentinel) for p in payloads]
    names = ["x", "y", "z", "a1", "np", "math", "range", "_out", "kernel", "__x", "α", "ᵇit", "ｘ", "I", "E"]
    tokens = (names + ["0", "1", "2", "-1", "0.5", "1e308", "1e-320", "2j", "9" * 30, "10**300", "(", ")", "(",
                       ")", ",", "+", "-", "*", "/", "//", "%", "**", "&", "|", "~", "^", "<", ">", "==", "!=",
                       "not", "and", "or", "if", "else", ".", "[", "]", "'s'", "@", ":=", "\n", "lambda", ":"]
              + sorted(BY_NAME) + ["Mod", "factorial", "open", "exec"] + payloads)
    funcs = sorted(BY_NAME) + ["factorial", "open", "exec", "Symbol"]
    numbers = st.one_of(st.integers(-10, 10), st.integers(-(2 ** 1100), 2 ** 1100), st.floats(),
                        st.complex_numbers(max_magnitude=1e300), st.sampled_from([0, 1, 2, 0.5, 1e308, 10 ** 300]))
    binops = [ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr,
              ast.BitXor, ast.LShift, ast.MatMult]
    cmpops = [ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq, ast.Is, ast.In]

    leaf = st.one_of(st.sampled_from(names + ["pi", "e", "inf", "nan", "True"]).map(lambda n: ast.Name(n, ast.Load())),
                     numbers.map(ast.Constant), st.sampled_from(["s", b"b", None, ...]).map(ast.Constant))

    def node(ch):
        return st.one_of(
            st.builds(lambda a, op, b: ast.BinOp(a, op(), b), ch, st.sampled_from(binops), ch),
            st.builds(lambda op, a: ast.UnaryOp(op(), a), st.sampled_from([ast.USub, ast.UAdd, ast.Not, ast.Invert]), ch),
            st.builds(lambda a, ops, bs: ast.Compare(a, [o() for o in ops[:len(bs)]], bs[:len(ops)]), ch,
                      st.lists(st.sampled_from(cmpops), min_size=1, max_size=3), st.lists(ch, min_size=1, max_size=3)),
            st.builds(lambda f, args: ast.Call(ast.Name(f, ast.Load()), args, []), st.sampled_from(funcs),
                      st.lists(ch, max_size=4)),
            st.builds(ast.IfExp, ch, ch, ch),
            st.builds(lambda op, vs: ast.BoolOp(op(), vs), st.sampled_from([ast.And, ast.Or]),
                      st.lists(ch, min_size=2, max_size=3)),
            st.builds(lambda a: ast.Attribute(a, "real", ast.Load()), ch),
            st.builds(lambda a, b: ast.Subscript(a, b, ast.Load()), ch, ch),
            st.builds(lambda pairs: ast.Call(ast.Name("Piecewise", ast.Load()),
                                             [ast.Tuple([v, c], ast.Load()) for v, c in pairs], []),
                      st.lists(st.tuples(ch, ch), max_size=3)),
        )

    def unparse(tree):
        try:
            return ast.unparse(ast.fix_missing_locations(ast.Expression(tree)))
        except (ValueError, TypeError, RecursionError):
            return "x"

    trees = st.recursive(leaf, node, max_leaves=20).map(unparse)

    # formulas that are valid in form (right arities, conditions where conditions go): they get
    # through the parser and exercise constant folding, dtypes, code generation and exec
    fn_arities = sorted((name, n) for name, fn in BY_NAME.items() for n in (fn.nargs or (2,))[:3]
                        if name not in ("where", "Piecewise"))
    valid_leaf = st.one_of(
        st.sampled_from(["x", "y", "z", "pi", "e", "inf", "nan", "0", "1", "2", "0.5", "-3", "1e308", "1e-310", "2j",
                         "10**300", "2**1023", "True"]),
        st.integers(-(2 ** 64), 2 ** 64).map(str), st.integers(-(2 ** 1024) + 1, 2 ** 1024 - 1).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr))

    def valid_node(ch):
        call = st.sampled_from(fn_arities).flatmap(
            lambda fa: st.lists(ch, min_size=fa[1], max_size=fa[1]).map(lambda a, f=fa[0]: f"{f}({', '.join(a)})"))
        return st.one_of(
            st.builds(lambda a, op, b: f"({a} {op} {b})", ch, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), ch),
            st.builds(lambda a: f"(-{a})", ch),
            call,
            st.builds(lambda c, op, d, a, b: f"where({c} {op} {d}, {a}, {b})", ch,
                      st.sampled_from(["<", ">", "==", "!=", "<=", ">="]), ch, ch, ch),
        )

    valid = st.recursive(valid_leaf, valid_node, max_leaves=20)

    def splice(text, payload, at):
        at = at % (len(text) + 1)
        return text[:at] + payload + text[at:]

    return {
        "valid": valid,
        "ascii": st.text(alphabet=string.printable, max_size=150),
        "unicode": st.text(alphabet=st.characters(exclude_categories=()), max_size=80),
        "tokens": st.lists(st.sampled_from(tokens), min_size=1, max_size=30).map(" ".join),
        "tree": trees,
        "payload": st.builds(splice, trees, st.sampled_from(payloads), st.integers(0, 10 ** 6)),
        "signature": st.lists(st.sampled_from(["float64", "f8", "int32", "complex128", "bool", "object", "x", "(",
                                               ")", ",", " ", "->", "__import__('os')", "f4"]), max_size=12
                              ).map(lambda t: "\x00sig" + "".join(t)),
    }


# ---- one input ----------------------------------------------------------------------------
ARGS = ("x", "y", "z")  # "valid" formulas may use any of these, or none
WEIGHTS = {"valid": 6, "tree": 4, "payload": 3, "tokens": 3, "ascii": 2, "unicode": 2, "signature": 1}


class Timeout(BaseException):
    """Raised by SIGALRM; a BaseException so no `except Exception` in the code under test eats it."""


def front_end(text: str, kind: str):
    import numpy as np

    from ufuncgen.build import output_dtypes
    from ufuncgen.codegen import generate_kernel, load_kernel
    from ufuncgen.dtypes import parse_signature
    from ufuncgen.formula import make_formula

    if text.startswith("\x00sig"):
        parse_signature(text[4:], 2, 1)
        return "ok"
    formula = make_formula(text, args=ARGS if kind == "valid" else None)
    ins = (np.dtype(np.float64),) * formula.nin
    try:
        outs = output_dtypes(formula, ins)
    except TypeError as err:
        if "does not take complex" in str(err):
            return "dtype-refused"
        raise
    src = generate_kernel(formula, ins, outs)
    load_kernel(src)  # exec of the generated module: where injected text would run
    return "ok"


def run_backend(text: str, kind: str):
    import numpy as np

    import ufuncgen as ug

    f = ug.ufunc(text, args=ARGS if kind == "valid" else None)
    with np.errstate(all="ignore"):
        f(*[np.linspace(-2, 2, 5)] * f.nin)


def child(args) -> None:
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    workdir = Path(args.workdir)
    os.chdir(workdir)
    sentinel = str(workdir / "SENTINEL")
    kinds = strategies(sentinel)
    progress = open(args.progress, "w")
    stats = {"inputs": 0, "ok": 0, "refused": 0, "dtype_refused": 0, "compiled": 0, "crashes": [], "hangs": [],
             "executions": [], "slowest_s": 0.0, "slowest_input": None, "by_kind": {}, "compile_failures": []}
    accepted = [0]

    def on_alarm(signum, frame):
        raise Timeout()

    signal.signal(signal.SIGALRM, on_alarm)

    mix = [k for k, weight in WEIGHTS.items() for _ in range(weight)]

    @seed(args.seed)
    @settings(max_examples=args.count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(mix).flatmap(lambda k: kinds[k].map(lambda text, k=k: (k, text))))
    def one(case):
        kind, text = case
        if stats["inputs"] >= args.count:
            return
        stats["inputs"] += 1
        stats["by_kind"][kind] = stats["by_kind"].get(kind, 0) + 1
        progress.seek(0)
        progress.write(json.dumps({"n": stats["inputs"], "input": text}))
        progress.truncate()
        progress.flush()
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, args.limit)
        outcome = None
        try:
            outcome = front_end(text, kind)
        except Timeout:
            stats["hangs"].append({"input": text, "seconds": time.perf_counter() - start})
        except Exception as err:  # noqa: BLE001 - classifying every exception is the point
            if type(err).__name__ in ALLOWED:
                stats["refused"] += 1
            else:
                stats["crashes"].append({"input": text, "error": f"{type(err).__name__}: {err}"[:500],
                                         "traceback": traceback.format_exc()[-2000:]})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - start
        if elapsed > args.limit and not (stats["hangs"] and stats["hangs"][-1]["input"] is text):
            # the alarm can land in a garbage-collector callback, which swallows it: count by time
            stats["hangs"].append({"input": text, "seconds": elapsed})
        if elapsed > stats["slowest_s"]:
            stats["slowest_s"], stats["slowest_input"] = elapsed, text
        if outcome == "ok":
            stats["ok"] += 1
            if not text.startswith("\x00sig"):
                accepted[0] += 1
                if args.compile_every and accepted[0] % args.compile_every == 0:
                    try:
                        run_backend(text, kind)
                        stats["compiled"] += 1
                    except Exception as err:  # noqa: BLE001
                        stats["compile_failures"].append({"input": text, "error": f"{type(err).__name__}: {err}"[:300]})
        elif outcome == "dtype-refused":
            stats["dtype_refused"] += 1
        made = sorted(p.name for p in workdir.iterdir() if p.name != Path(args.progress).name)
        if made:
            stats["executions"].append({"input": text, "files": made})
            for p in workdir.iterdir():
                if p.name != Path(args.progress).name:
                    p.unlink()

    one()
    Path(args.result).write_text(json.dumps(stats))


# ---- parent -------------------------------------------------------------------------------
def parent(args) -> None:
    start = time.time()
    chunks = [(k, min(args.chunk, args.inputs - k * args.chunk)) for k in range((args.inputs + args.chunk - 1) // args.chunk)]
    scratch = Path(tempfile.mkdtemp(prefix="ufuncgen-fuzz-"))
    env = dict(os.environ, UFUNCGEN_CACHE_DIR=str(scratch / "cache"), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    total = {"inputs": 0, "ok": 0, "refused": 0, "dtype_refused": 0, "compiled": 0, "crashes": [], "hangs": [],
             "executions": [], "slowest_s": 0.0, "slowest_input": None, "by_kind": {}, "compile_failures": [],
             "worker_deaths": []}
    running = []
    pending = list(chunks)
    while pending or running:
        while pending and len(running) < args.workers and time.time() - start < args.max_seconds:
            k, count = pending.pop(0)
            work = scratch / f"w{k}"
            work.mkdir()
            paths = {"progress": work / "progress.json", "result": scratch / f"r{k}.json"}
            cmd = [sys.executable, __file__, "--child", "--seed", str(args.seed + k), "--count", str(count),
                   "--limit", str(args.limit), "--workdir", str(work), "--progress", str(paths["progress"]),
                   "--result", str(paths["result"]), "--compile-every", str(args.compile_every)]
            running.append((k, subprocess.Popen(cmd, env=env), paths, time.time()))
        if not running:
            break
        time.sleep(0.5)
        for item in list(running):
            k, proc, paths, since = item
            try:
                mtime = paths["progress"].stat().st_mtime
            except FileNotFoundError:
                mtime = since
            stuck = time.time() - max(mtime, since) > args.watchdog
            if proc.poll() is None and not stuck:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            running.remove(item)
            last = json.loads(paths["progress"].read_text() or "{}") if paths["progress"].exists() else {}
            if paths["result"].exists():
                r = json.loads(paths["result"].read_text())
                for key in ("inputs", "ok", "refused", "dtype_refused", "compiled"):
                    total[key] += r[key]
                for key in ("crashes", "hangs", "executions", "compile_failures"):
                    total[key] += r[key]
                for kind, n in r["by_kind"].items():
                    total["by_kind"][kind] = total["by_kind"].get(kind, 0) + n
                if r["slowest_s"] > total["slowest_s"]:
                    total["slowest_s"], total["slowest_input"] = r["slowest_s"], r["slowest_input"]
            else:  # died in C code or was killed by the watchdog: count what it got through
                total["inputs"] += last.get("n", 0)
                entry = {"chunk": k, "returncode": proc.returncode, "last_input": last.get("input")}
                (total["hangs"] if stuck else total["worker_deaths"]).append(entry)
            print(f"chunk {k}: done ({total['inputs']} inputs so far, {time.time() - start:.0f} s)", flush=True)
    import numba
    import numpy
    import sympy
    total.update(requested=args.inputs, wall_s=round(time.time() - start, 1), limit_s=args.limit,
                 workers=args.workers, seed=args.seed, python=platform.python_version(), numpy=numpy.__version__,
                 numba=numba.__version__, sympy=sympy.__version__, machine=f"{platform.machine()}, {os.cpu_count()} cpus")
    summary = {k: (len(v) if isinstance(v, list) else v) for k, v in total.items()
               if k not in ("slowest_input", "by_kind")}
    print(json.dumps(summary, indent=1))
    print("by kind:", total["by_kind"])
    if args.out:
        Path(args.out).write_text(json.dumps(total, indent=1, default=str))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=5000)
    p.add_argument("--limit", type=float, default=1.0, help="seconds per input")
    p.add_argument("--watchdog", type=float, default=30.0, help="seconds without progress before a worker is killed")
    p.add_argument("--max-seconds", type=float, default=float("inf"), help="start no chunk after this wall time")
    p.add_argument("--compile-every", type=int, default=500, help="compile every n-th accepted formula (0: never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--workdir", "--progress", "--result"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    (child if args.child else parent)(args)


if __name__ == "__main__":
    main()
