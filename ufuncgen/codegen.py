"""SymPy expression -> Python source of a scalar kernel that Numba compiles.

Built on SymPy's ``PythonCodePrinter`` (scalar code, unlike ``NumPyPrinter``'s whole-array
idioms).  What it adds: common-subexpression elimination, small integer powers as
multiplications, every literal typed to the signature (a float32 kernel has no float64 in it),
safe parameter names, content-hash names and ``linecache`` registration.
"""
from __future__ import annotations

import builtins
import hashlib
import keyword
import linecache
import math
import weakref
from dataclasses import dataclass

import numpy as np
import sympy as sp
from sympy.core.relational import Relational
from sympy.printing.precedence import precedence
from sympy.printing.pycode import PythonCodePrinter
from sympy.printing.str import StrPrinter

from .dtypes import _is_true_division, _split_division, dtype_name, make_typer
from .errors import FormulaError
from .functions import BY_SYMPY
from .parse import remake

__all__ = ["KernelSource", "generate_kernel", "register_source", "safe_param_names", "MAX_EXPAND_POWER"]

MAX_EXPAND_POWER = 8  # x**n with |n| <= this becomes multiplications

# Names a parameter must not take: modules and names the generated source uses, every builtin
# (the kernel calls float() and complex()), and Numba's own module names.
_RESERVED = frozenset({"np", "math", "cmath", "numba", "numpy", "kernel", "nan", "inf"} | set(dir(builtins)))


def _safe(name: str) -> bool:
    return (name.isascii() and name.isidentifier() and not keyword.iskeyword(name)
            and not name.startswith("_") and name not in _RESERVED and len(name) <= 64)


def safe_param_names(args: tuple) -> tuple:
    """User names where they are plain identifiers; ``_a{i}`` where a name could shadow anything.

    This is the only way a user string reaches generated source: as an ASCII identifier that is
    no keyword, builtin or name the kernel uses, and that does not start with ``_`` (our own
    names ``_a{i}``, ``_c{i}``, ``_t{i}`` all do, so they cannot collide).
    """
    return tuple(a if _safe(a) else f"_a{i}" for i, a in enumerate(args))


@dataclass(frozen=True)
class KernelSource:
    """Generated kernel source and what it was generated for."""

    text: str
    filename: str
    digest: str
    in_dtypes: tuple
    out_dtypes: tuple
    func_name: str = "kernel"


class KernelPrinter(PythonCodePrinter):
    """Prints one scalar expression with typed constants and our function table."""

    printmethod = "_ufuncgen_kernel"

    def __init__(self, names: dict, typer, constants: dict, order=None):
        super().__init__({"fully_qualified_modules": False, "strict": True, "order": order})
        self._names = names
        self._typer = typer
        self._consts = constants  # (dtype name, repr) -> constant name

    # ---- atoms ----------------------------------------------------------------------------
    def _print_Symbol(self, s):
        return self._names[s]

    _print_Dummy = _print_Symbol  # temporaries and hidden constants

    def _const(self, value, dt: np.dtype) -> str:
        if dt.kind == "b":
            return "True" if value else "False"
        if dt.kind in "iu":
            ival = int(value)
            info = np.iinfo(dt)
            if not info.min <= ival <= info.max:
                dt = np.dtype(np.float64)
                value = _to_float(ival)
            else:
                value = ival
        elif dt.kind == "f":
            value = _to_float(value)
        else:
            value = value if isinstance(value, complex) else complex(_to_float(value))
        key = (dt.name, _value_text(value))
        name = self._consts.get(key)
        if name is None:
            name = self._consts[key] = f"_c{len(self._consts)}"
        return name

    def _number(self, expr, pyvalue):
        return self._const(pyvalue, self._typer(expr))

    def _print_Integer(self, e):
        return self._number(e, int(e))

    def _print_Rational(self, e):
        return self._number(e, float(e))

    def _print_Float(self, e):
        return self._number(e, float(e))

    def _print_Half(self, e):
        return self._number(e, 0.5)

    _print_One = _print_Zero = _print_NegativeOne = _print_Integer

    def _print_Pi(self, e):
        return self._number(e, math.pi)

    def _print_Exp1(self, e):
        return self._number(e, math.e)

    def _print_NaN(self, e):
        return self._number(e, float("nan"))

    def _print_Infinity(self, e):
        return self._number(e, float("inf"))

    def _print_NegativeInfinity(self, e):
        return self._number(e, float("-inf"))

    def _print_ImaginaryUnit(self, e):
        return self._number(e, 1j)

    def _print_BooleanTrue(self, e):
        return "True"

    def _print_BooleanFalse(self, e):
        return "False"

    # ---- arithmetic -----------------------------------------------------------------------
    def _one_like(self, e):
        return self._const(1, self._typer(e) if self._typer(e).kind in "fc" else np.dtype(np.float64))

    def _divide(self, e, num: str, den: str) -> str:
        """num / den; for complex results NumPy's division (Numba's '/' raises on a zero
        denominator, and the loop cannot report it: 1/0j gave 0 where NumPy gives inf+nanj)."""
        return f"np.divide({num}, {den})" if self._typer(e).kind == "c" else f"({num} / {den})"

    def _print_Mul(self, e):
        den = [a.args[0] for a in e.args if isinstance(a, sp.Pow) and a.args[1] == -1]
        if not den or self._typer(e).kind != "c":
            return super()._print_Mul(e)
        num = sp.Mul(*[a for a in e.args if not (isinstance(a, sp.Pow) and a.args[1] == -1)])
        return self._divide(e, self._print(num), self._print(sp.Mul(*den)))

    def _print_Pow(self, e, rational=False):
        b, x = e.args
        if isinstance(x, sp.Float) and float(x) == 0.5:
            x = sp.S.Half  # NumPy's power(x, 0.5) is its sqrt (nan at -inf); -0.5 stays a power
        if x == sp.S.Half:
            return f"np.sqrt({self._print(b)})"
        if x == -sp.S.Half:
            return self._divide(e, self._one_like(e), f"np.sqrt({self._print(b)})")
        if isinstance(x, sp.Integer) and 0 < abs(int(x)) <= MAX_EXPAND_POWER:
            base = self.parenthesize(b, 1000)  # always parenthesised unless atomic
            n = abs(int(x))
            prod = base if n == 1 else "(" + "*".join([base] * n) + ")"
            return prod if int(x) > 0 else self._divide(e, self._one_like(e), prod)
        if x == 0:
            return self._const(1, self._typer(e))
        if self._typer(b).kind in "iub" and (isinstance(x, sp.Integer) and int(x) > 0
                                             or not x.is_Number and self._typer(x).kind in "iub"):
            # integer ** integer stays exact, wrapping as NumPy's does (Numba's np.power on
            # integers goes through float: 3**40 came out 33 too large)
            base = self.parenthesize(b, 1000)
            if x.is_Number:
                return f"({base} ** {self._const(int(x), self._typer(e))})"
            xs = self.parenthesize(x, 1000)
            if self._typer(x).kind != "i":
                return f"({base} ** {xs})"
            # NumPy refuses a negative integer power of an integer; the kernel cannot raise, so it
            # gives the integer part of the real result: 0, or +-1 for a base of +-1 (Numba's own
            # power gave INT_MIN for 0**-1)
            dt = self._typer(e)
            one, zero, two, m1 = (self._const(v, dt) for v in (1, 0, 2, -1))
            neg = f"({one} if {base} == {one} else (({one} - ({xs} % {two}) * {two}) if {base} == {m1} else {zero}))"
            return f"(({base} ** {xs}) if {xs} >= {zero} else {neg})"
        if isinstance(x, sp.Integer) and int(x) < 0:
            return self._divide(e, self._one_like(e),
                                f"np.power({self._print(b)}, {self._const(-int(x), self._typer(b))})")
        if x.is_Number:
            dt = self._typer(e)
            real = bool(x.is_extended_real) or x is sp.nan  # nan.is_real is None, oo.is_real False
            xt = np.dtype(np.float32 if dt in (np.float32, np.complex64) else np.float64) if real else dt
            bs = self._print(b)
            if dt.kind == "c" and b.is_Number and self._typer(b).kind != "c":
                bs = self._const(complex(float(b)), dt)  # (-1)**(1/3): the principal root, as SymPy's
            return f"np.power({bs}, {self._const(float(x) if real else complex(x), xt)})"
        return f"np.power({self._print(b)}, {self._print(x)})"

    def _print_Mod(self, e):
        a, b = e.args
        return f"({self.parenthesize(a, 1000)} % {self.parenthesize(b, 1000)})"

    def _print_floor(self, e):
        if _is_true_division(e.args[0]):
            num, den = _split_division(e.args[0])
            n, d = self.parenthesize(num, 1000), self.parenthesize(den, 1000)
            dt = self._typer(e)
            if dt.kind == "i" and not den.is_Number:
                # INT_MIN // -1: NumPy wraps to INT_MIN, Numba's // gives 0; x // -1 is -x, wrapping
                return f"((-{n}) if {d} == {self._const(-1, dt)} else ({n} // {d}))"
            return f"({n} // {d})"
        return f"np.floor({self._print(e.args[0])})"

    def parenthesize(self, item, level, strict=False):
        s = self._print(item)
        if isinstance(item, (sp.Symbol, sp.Number)) or item in (sp.pi, sp.E, sp.I):
            return s
        if s.startswith("(") and s.endswith(")") and _balanced(s[1:-1]):
            return s
        if s.replace("_", "").replace(".", "").isalnum():
            return s
        if level >= 1000 or s.startswith("-"):
            return f"({s})"
        # as StrPrinter.parenthesize, without printing ``item`` a second time (that doubled the
        # work per nesting level: a Horner polynomial of degree 20 took minutes)
        prec = precedence(item)
        return f"({s})" if prec < level or (not strict and prec <= level) else s

    # ---- functions, logic -----------------------------------------------------------------
    def _print_Function(self, e):
        fn = BY_SYMPY.get(type(e))
        if fn is None or fn.code is None:
            raise FormulaError(f"{type(e).__name__} cannot be compiled")
        return fn.code.format(*[self._print(a) for a in e.args])

    def _print_sign(self, e):
        text = f"np.sign({self._print(e.args[0])})"
        if self._typer(e).kind == "f":  # Numba's sign(-0.0) is -0.0, NumPy's 0.0; -0.0 + 0.0 is 0.0
            return f"({text} + {self._const(0.0, self._typer(e))})"
        return text

    def _print_fmod(self, e):
        a, b = e.args
        dt = self._typer(e)
        if dt.kind not in "iub":
            return f"np.fmod({self._print(a)}, {self._print(b)})"
        # Numba's np.fmod of signed integers is wrong (fmod(6, -4) gave 6, fmod(-7, 3) gave 0):
        # C's remainder from Python's, which has the sign of the divisor instead of the dividend
        pa, pb = self.parenthesize(a, 1000), self.parenthesize(b, 1000)
        if dt.kind != "i":
            return f"({pa} % {pb})"
        zero = self._const(0, dt)
        r = f"({pa} % {pb})"
        return f"(({r} - {pb}) if ({r} != {zero} and (({r} < {zero}) != ({pa} < {zero}))) else {r})"

    def _print_Cbrt(self, e):  # noqa: N802
        return f"np.cbrt({self._print(e.args[0])})"

    def _minmax(self, e, func):
        args = [self._print(a) for a in e.args]
        out = args[0]
        for a in args[1:]:
            out = f"{func}({out}, {a})"
        return out

    def _print_Min(self, e):
        return self._minmax(e, "np.minimum")

    def _print_Max(self, e):
        return self._minmax(e, "np.maximum")

    def _print_Piecewise(self, e):
        out_dt = self._typer(e)
        if e.args[-1].cond == sp.true:
            tail = self._print(e.args[-1].expr)
            pairs = e.args[:-1]
        else:
            tail = self._const(float("nan"), out_dt if out_dt.kind in "fc" else np.dtype(np.float64))
            pairs = e.args
        for pair in reversed(pairs):
            tail = f"({self._print(pair.expr)} if {self._print(pair.cond)} else {tail})"
        return tail

    def _print_Relational(self, e):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[e.rel_op]
        return f"({self._print(e.lhs)} {op} {self._print(e.rhs)})"

    _print_Equality = _print_Unequality = _print_StrictLessThan = _print_LessThan = _print_Relational
    _print_StrictGreaterThan = _print_GreaterThan = _print_Relational

    def _print_And(self, e):
        return "(" + " & ".join(self._print(a) for a in e.args) + ")"

    def _print_Or(self, e):
        return "(" + " | ".join(self._print(a) for a in e.args) + ")"

    def _print_Not(self, e):
        return f"(not {self._print(e.args[0])})"

    def _print_Derivative(self, e):
        raise FormulaError(f"the derivative {e} has no closed form ufuncgen can compile")

    def _print_Subs(self, e):
        raise FormulaError(f"{e} cannot be compiled")

    def _print_not_supported(self, e):
        raise FormulaError(f"{type(e).__name__} cannot be compiled: {e}")

    def emptyPrinter(self, e):
        return self._print_not_supported(e)


# SymPy's PythonCodePrinter prints known functions (sin, exp, ...) itself; route every class of
# the function table through our table instead, in one loop.
# A printer the class defines itself (_print_floor: integer floor division) is kept.
for _cls in BY_SYMPY:
    if BY_SYMPY[_cls].code is not None and "_print_" + _cls.__name__ not in KernelPrinter.__dict__:
        setattr(KernelPrinter, "_print_" + _cls.__name__, KernelPrinter._print_Function)


def _to_float(value) -> float:
    """float(value), refusing exact numbers beyond float64 (NumPy raises OverflowError for them too)."""
    try:
        return float(value)
    except OverflowError:
        raise FormulaError(f"the constant {str(value)[:40]}... does not fit in float64") from None


def _value_text(value) -> str:
    """Python text for a constant value, valid for nan and inf too."""
    if isinstance(value, complex):
        return f"complex({_value_text(value.real)}, {_value_text(value.imag)})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    return repr(value)


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def rebuild(e, mapping: dict):
    """``e`` with subtrees in ``mapping`` replaced, rebuilt *unevaluated*.

    SymPy's own ``cse`` and ``xreplace`` rebuild with evaluation, which applies identities that
    change values at singular points (``sin(atan2(x, x))`` becomes ``x/sqrt(2*x**2)``, nan at 0).
    """
    hit = mapping.get(e)
    if hit is not None:
        return hit
    if e.is_Atom or not e.args:
        return e
    return remake(e, [rebuild(a, mapping) for a in e.args])


def _is_trivial(e) -> bool:
    return e.is_Atom or (isinstance(e, sp.Mul) and len(e.args) == 2 and e.args[0] == -1 and e.args[1].is_Atom)


def common_subexpressions(exprs, new_symbol):
    """Common-subexpression elimination that keeps the tree as written (see ``rebuild``).

    Every non-trivial subtree seen at least twice gets a temporary, smallest first, so larger
    temporaries refer to smaller ones.  Returns (assignments, reduced expressions).
    """
    counts: dict = {}
    for e in exprs:
        for node in sp.preorder_traversal(e):
            counts[node] = counts.get(node, 0) + 1
    repeated = [n for n, c in counts.items() if c > 1 and not _is_trivial(n)
                and not isinstance(n, sp.functions.elementary.piecewise.ExprCondPair)]
    repeated.sort(key=lambda n: sum(1 for _ in sp.preorder_traversal(n)))
    mapping: dict = {}
    assignments = []
    for node in repeated:
        value = rebuild(node, mapping)
        sym = new_symbol()
        assignments.append((sym, value))
        mapping[node] = sym
    # a temporary used once (it only repeated inside a larger repeated subtree) is put back inline
    reduced = [rebuild(e, mapping) for e in exprs]
    uses: dict = {}
    for tree in [v for _, v in assignments] + reduced:
        for node in sp.preorder_traversal(tree):
            if isinstance(node, sp.Symbol):
                uses[node] = uses.get(node, 0) + 1
    inline = {}
    kept = []
    for sym, value in assignments:
        value = rebuild(value, inline)
        if uses.get(sym, 0) <= 1:
            inline[sym] = value
        else:
            kept.append((sym, value))
    return kept, [rebuild(e, inline) for e in reduced]


def _cheap_power(node) -> bool:
    """A power of numbers SymPy evaluates quickly: a small integer exponent of a number that is not huge."""
    return node.exp.is_Integer and abs(int(node.exp)) <= 64 and not (
        node.base.is_Rational and abs(int(node.base.p)).bit_length() + int(node.base.q).bit_length() > 128)


def _unevaluated_constant(node) -> bool:
    """A node SymPy would compute if it were built again: a function of numbers, a power of
    numbers the parser left unevaluated (the exponent is not a small rational), re/im/arg,
    which the parser leaves unevaluated around large powers (re(x**100000) expands), and a
    negated comparison."""
    if isinstance(node, (sp.re, sp.im, sp.arg)):
        return True
    if isinstance(node, sp.Mod) and any(isinstance(p, sp.Pow) and p.exp.is_Integer and abs(int(p.exp)) > 64
                                        for p in sp.preorder_traversal(node)):
        return True  # rebuilt, Mod(y**-(10**15), c) takes a polynomial gcd of that degree
    if isinstance(node, sp.Not) and node.args[0].has(Relational):
        return True  # rebuilt, ~(x > 0) becomes x <= 0, which is not the same for NaN
    if not (isinstance(node, (sp.Function, sp.Pow)) and node.is_number):
        return False
    return isinstance(node, sp.Function) or not _cheap_power(node)


def _hide_constants(exprs):
    """Stand a Dummy in for each unevaluated constant (gamma(21089259), re(3)**-(2**1000)):
    cse rebuilds every node it visits, and SymPy evaluates these while rebuilding them (a
    factorial of 21 million).  They are printed back as they were."""
    hidden: dict = {}
    found: dict = {}
    for e in exprs:
        stack = [e]
        while stack:
            node = stack.pop()
            if node.is_Atom or node in found:
                continue
            if _unevaluated_constant(node):
                found[node] = sp.Dummy(f"_k{len(found)}")
                continue
            stack.extend(node.args)
    if not found:
        return exprs, hidden
    for const, k in found.items():
        hidden[k] = const
    return [rebuild(e, found) for e in exprs], hidden


def _atomize_powers(assignments, exprs, new_symbol):
    """Give compound bases of small integer powers a temporary, so x*x repeats a name, not a formula."""
    out_assign = []

    def fix(e):
        repl = {}
        for p in sp.preorder_traversal(e):
            if isinstance(p, sp.Pow) and isinstance(p.args[1], sp.Integer) and 1 < abs(int(p.args[1])) <= \
                    MAX_EXPAND_POWER and not p.args[0].is_Atom and p not in repl:
                t = new_symbol()
                out_assign.append((t, p.args[0]))
                repl[p] = sp.Pow(t, p.args[1], evaluate=False)
        return rebuild(e, repl) if repl else e

    for sym, val in assignments:
        val = fix(val)
        out_assign.append((sym, val))
    exprs = [fix(e) for e in exprs]
    return out_assign, exprs


class _CommentPrinter(StrPrinter):
    """The formula for the kernel's header comment, with each symbol under its parameter name
    (so a symbol named, say, "x\\nimport os" never reaches the source, not even a comment)."""

    def __init__(self, names: dict, order=None):
        super().__init__({"order": order})
        self._names = names

    def _print_Symbol(self, s):
        return self._names.get(s, "_")


def _comment_text(formula, names: dict) -> str:
    text = "?"  # not printable
    for order in (None, "none"):  # str()'s order of terms first; sorting compares numbers (nan fails)
        try:
            text = ", ".join(_CommentPrinter(names, order).doprint(e) for e in formula.exprs)
            break
        except (ArithmeticError, ValueError, TypeError, RecursionError):
            continue
    text = f"[{text}]" if formula.multi else text
    return text[:200]


def _print_body(printer_class, sym_names, typer, hidden, assignments, exprs, order):
    consts: dict = {}
    printer = printer_class(sym_names, typer, consts, order)
    for k, const in hidden.items():  # a call or np.power(...): atomic where the Dummy stood
        sym_names[k] = printer._print(const)
    body = [f"    {sym.name} = {printer.doprint(val)}" for sym, val in assignments]
    return consts, body, [printer.doprint(e) for e in exprs]


def generate_kernel(formula, in_dtypes: tuple, out_dtypes: tuple, cse: bool = True,
                    printer: type | None = None) -> KernelSource:
    """The source of ``def kernel(<args>): return <expr(s)>`` for one dtype combination.

    ``printer``: a ``KernelPrinter`` subclass for another target's scalar functions (cuda prints
    ``math``/``cmath`` calls, which numba-cuda compiles on scalars).
    """
    try:
        return _generate_kernel(formula, in_dtypes, out_dtypes, cse, printer or KernelPrinter)
    except RecursionError:
        raise FormulaError("the formula is nested too deeply to generate its kernel") from None


def _generate_kernel(formula, in_dtypes: tuple, out_dtypes: tuple, cse: bool, printer_class: type) -> KernelSource:
    names = safe_param_names(formula.args)
    exprs, hidden = _hide_constants(list(formula.exprs))
    sym_names = {s: n for s, n in zip(formula.symbols, names, strict=True)}
    counter = iter(range(10 ** 9))

    def new_symbol():  # a Dummy: a SymPy input symbol that happens to be named _t0 is another symbol
        return sp.Dummy(f"_t{next(counter)}")

    assignments = []
    if cse:
        assignments, exprs = common_subexpressions(exprs, new_symbol)
    assignments, exprs = _atomize_powers(assignments, exprs, new_symbol)
    typer = make_typer(formula.symbols, tuple(in_dtypes))
    for k, const in hidden.items():
        typer.sym[k] = typer(const)
    for sym, val in assignments:  # temps take the dtype of their value
        typer.sym[sym] = typer(val)
        sym_names[sym] = sym.name
    try:
        consts, body, rets = _print_body(printer_class, sym_names, typer, hidden, assignments, exprs, None)
    except TypeError:  # SymPy's order of terms compares numbers, which fails for some holding nan
        consts, body, rets = _print_body(printer_class, sym_names, typer, hidden, assignments, exprs, "none")
    ret = rets[0] if len(rets) == 1 else "(" + ", ".join(rets) + ")"
    body.append(f"    return {ret}")
    outs = ", ".join(map(dtype_name, out_dtypes))
    sig = f"{outs if len(out_dtypes) == 1 else '(' + outs + ')'}({', '.join(map(dtype_name, in_dtypes))})"
    header = [f"# ufuncgen kernel for {_comment_text(formula, sym_names)!r}", f"# signature: {sig}",
              "import math", "import numpy as np", ""]
    for (dt, val), name in sorted(consts.items(), key=lambda kv: int(kv[1][2:])):
        header.append(f"{name} = np.{dt}({val})")
    text = "\n".join(header + ["", "", f"def kernel({', '.join(names)}):"] + body) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return KernelSource(text, f"<ufuncgen kernel {digest}>", digest, tuple(in_dtypes), tuple(out_dtypes))


_REGISTERED: dict = {}


def register_source(src: KernelSource, owner=None) -> None:
    """Put the source in ``linecache`` so tracebacks and inspect show the real kernel.

    The entry (mtime None, so ``checkcache`` keeps it) is dropped when ``owner`` dies.
    """
    linecache.cache[src.filename] = (len(src.text), None, src.text.splitlines(True), src.filename)
    if owner is not None:
        _REGISTERED[src.filename] = _REGISTERED.get(src.filename, 0) + 1

        def _drop(fn=src.filename):
            n = _REGISTERED.get(fn, 1) - 1
            if n <= 0:
                _REGISTERED.pop(fn, None)
                linecache.cache.pop(fn, None)
            else:
                _REGISTERED[fn] = n

        weakref.finalize(owner, _drop)


def load_kernel(src: KernelSource):
    """Turn generated source (never user text) into a Python function."""
    namespace: dict = {"__name__": f"ufuncgen_kernel_{src.digest}"}
    try:
        code = compile(src.text, src.filename, "exec")
    except (SyntaxError, RecursionError, MemoryError) as err:  # e.g. more than 200 nested parentheses
        raise FormulaError(f"the formula is nested too deeply to compile ({type(err).__name__}: "
                           f"{getattr(err, 'msg', err)})") from None
    exec(code, namespace)  # noqa: S102 - our own generated source, see module docstring
    func = namespace[src.func_name]
    register_source(src, owner=func)  # the linecache entry lives as long as the kernel function
    return func
