"""Formula text -> SymPy expression, by walking Python's AST against an allow-list.

Nothing in the text is ever evaluated: the only things built are SymPy nodes, by our own code,
from the node kinds listed in ``FormulaParser``.  Sizes are bounded before any SymPy work, and
constant folding of numbers is bounded so that ``9**9**9**9`` is an error, not a hang.
"""
from __future__ import annotations

import ast
import difflib
import keyword
import unicodedata
from dataclasses import dataclass

import sympy as sp
from sympy.core.relational import Relational
from sympy.logic.boolalg import BooleanAtom, BooleanFunction

from .errors import FormulaError
from .functions import BY_NAME, CONSTANTS

__all__ = ["Limits", "LIMITS", "parse_formula", "FormulaParser", "check_name", "is_condition"]


@dataclass(frozen=True)
class Limits:
    """Bounds that keep hostile formulas cheap to reject."""

    max_length: int = 100_000       # characters
    max_nodes: int = 50_000         # AST nodes
    max_depth: int = 200            # nesting, with chains of + - * / counted flat
    max_int_bits: int = 1024        # integer literals
    max_const_bits: int = 4096      # integers made by folding constants
    max_args: int = 255             # distinct names


LIMITS = Limits()

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
           ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|"}

# Constructs we reject, each with what to write instead.
_REJECTED = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are only allowed in gufunc formulas (ug.gufunc), as x[i]",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.Starred: "starred arguments are not allowed",
    ast.List: "lists are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Set: "sets are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Slice: "slices are not allowed",
}

def check_name(name: str, formula: str | None = None, col: int | None = None) -> str:
    """Validate an argument/symbol name: an identifier in NFKC form, not a dunder, not a keyword."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise FormulaError(f"{name!r} is not a valid argument name", formula, col)
    if unicodedata.normalize("NFKC", name) != name:
        raise FormulaError(
            f"name {name!r} is not in Unicode NFKC form (Python would read it as "
            f"{unicodedata.normalize('NFKC', name)!r}); write it plainly", formula, col)
    if name.startswith("__"):
        raise FormulaError(f"names starting with '__' are not allowed: {name!r}", formula, col)
    return name


def is_condition(v) -> bool:
    """True for comparisons and logic (a plain Symbol is a number here, though SymPy calls it Boolean)."""
    return isinstance(v, (Relational, BooleanFunction, BooleanAtom))


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _int_bits(x: sp.Basic) -> int:
    if isinstance(x, sp.Integer):
        return int(x).bit_length()
    if isinstance(x, sp.Rational):
        return max(int(x.p).bit_length(), int(x.q).bit_length())
    return 0


class FormulaParser:
    """Turns one formula's AST into SymPy.  Subclasses (gufuncs) add subscripts and reductions."""

    def __init__(self, text: str, limits: Limits = LIMITS):
        self.text = text
        self.limits = limits
        self.symbols: dict[str, sp.Symbol] = {}
        self._line_shift = 0
        self._line_starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self._line_starts.append(i + 1)

    # ---- errors -------------------------------------------------------------------------
    def col(self, node) -> int | None:
        lineno = getattr(node, "lineno", None)
        off = getattr(node, "col_offset", None)
        if lineno is None or off is None:
            return None
        lineno -= self._line_shift
        if lineno < 1:
            return None
        line_start = self._line_starts[min(lineno, len(self._line_starts)) - 1]
        line = self.text[line_start:]
        # col_offset counts UTF-8 bytes
        prefix = line.encode("utf-8")[:off].decode("utf-8", errors="ignore")
        return line_start + len(prefix)

    def error(self, message: str, node=None) -> FormulaError:
        return FormulaError(message, self.text, self.col(node) if node is not None else None)

    # ---- entry --------------------------------------------------------------------------
    def parse(self) -> sp.Basic:
        tree = self._parse_tree()
        self._check_size(tree)
        return self.visit(tree.body)

    def _parse_tree(self) -> ast.Expression:
        text = self.text
        if not isinstance(text, str):
            raise FormulaError(f"a formula must be a string or a SymPy expression, not {type(text).__name__}")
        if len(text) > self.limits.max_length:
            raise FormulaError(f"formula is too long ({len(text)} characters; the limit is {self.limits.max_length})")
        if not text.strip():
            raise FormulaError("formula is empty", text, 0)
        if "\x00" in text:
            raise FormulaError("formula contains a NUL character", text, text.index("\x00"))
        try:
            return ast.parse(text.strip() if "\n" not in text else text, mode="eval")
        except SyntaxError as err:
            if "\n" in text:  # allow a formula written over several lines
                try:
                    tree = ast.parse("(\n" + text + "\n)", mode="eval")
                    self._line_shift = 1  # node line numbers count the added first line
                    return tree
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    pass
            col = None
            if err.lineno is not None and err.offset is not None:
                start = self._line_starts[min(err.lineno, len(self._line_starts)) - 1]
                col = start + max(err.offset - 1, 0)
            raise FormulaError(f"syntax error: {err.msg}", text, col) from None
        except (ValueError, RecursionError, MemoryError) as err:
            raise FormulaError(f"formula cannot be parsed: {type(err).__name__}: {err}"[:300], text) from None

    def _check_size(self, tree: ast.AST) -> None:
        """Count nodes and nesting iteratively (a recursive walk could itself overflow)."""
        count = 0
        stack = [(tree, 0, None)]
        while stack:
            node, depth, parent_op = stack.pop()
            count += 1
            if count > self.limits.max_nodes:
                raise self.error(f"formula is too large (more than {self.limits.max_nodes} syntax nodes)")
            if depth > self.limits.max_depth:
                raise self.error(f"formula is nested too deeply (more than {self.limits.max_depth} levels)", node)
            op = type(node.op) if isinstance(node, ast.BinOp) else None
            for child in ast.iter_child_nodes(node):
                # a left-leaning chain a+b+c+... is flat, not deep
                flat = op is not None and child is getattr(node, "left", None) and isinstance(child, ast.BinOp) \
                    and type(child.op) is op
                stack.append((child, depth if flat else depth + 1, op))

    # ---- visitors -----------------------------------------------------------------------
    def visit(self, node):
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            msg = _REJECTED.get(type(node), f"{type(node).__name__} is not allowed in a formula")
            raise self.error(msg, node)
        return method(node)

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool):
            return sp.true if v else sp.false
        if isinstance(v, int):
            if v.bit_length() > self.limits.max_int_bits:
                raise self.error(f"integer literal is too large (more than {self.limits.max_int_bits} bits)", node)
            return sp.Integer(v)
        if isinstance(v, float):
            return sp.Float(v) if v == v and abs(v) != float("inf") else (sp.nan if v != v else sp.oo)
        if isinstance(v, complex):
            def num(x):
                return sp.Integer(int(x)) if x.is_integer() else sp.Float(x)
            if not (abs(v.real) < float("inf") and abs(v.imag) < float("inf")):
                raise self.error("complex literals must be finite", node)
            return num(v.real) + num(v.imag) * sp.I
        kind = {str: "strings", bytes: "bytes"}.get(type(v), repr(v))
        raise self.error(f"{kind} are not allowed in a formula" if kind in ("strings", "bytes")
                         else f"{kind} is not allowed in a formula", node)

    def visit_Name(self, node):
        name = node.id
        src = self.text[self.col(node):self.col(node) + len(name)] if self.col(node) is not None else name
        if src != name:  # Python NFKC-normalised what was written
            raise self.error(f"name {src!r} is not in Unicode NFKC form (Python reads it as {name!r}); "
                             "write it plainly", node)
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in BY_NAME:
            raise self.error(f"{name!r} is a function; call it as {name}(...)", node)
        check_name(name, self.text, self.col(node))
        sym = self.symbols.get(name)
        if sym is None:
            if len(self.symbols) >= self.limits.max_args:
                raise self.error(f"too many distinct names (the limit is {self.limits.max_args})", node)
            sym = self.symbols[name] = sp.Symbol(name)
        return sym

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.Not):
            return sp.Not(self._boolean(self.visit(node.operand), node.operand))
        v = self.visit(node.operand)
        if isinstance(node.op, ast.USub):
            return self._number_guard(lambda: -v, node)
        if isinstance(node.op, ast.UAdd):
            return v
        if isinstance(node.op, ast.Invert):
            return sp.Not(self._boolean(v, node.operand))
        raise self.error(f"operator {type(node.op).__name__} is not allowed", node)

    def visit_BinOp(self, node):
        # walk a left-leaning chain iteratively so long sums do not recurse deeply
        chain = []
        cur = node
        while isinstance(cur, ast.BinOp) and type(cur.op) is type(node.op):
            chain.append(cur)
            cur = cur.left
        acc = self.visit(cur)
        for link in reversed(chain):
            acc = self._binop(link, acc, self.visit(link.right))
        return acc

    def _binop(self, node, a, b):
        op = node.op
        if isinstance(op, ast.BitXor):
            raise self.error("'^' is not a power here (it would be bitwise xor); write x**2", node)
        if type(op) not in _BINOPS:
            raise self.error(f"operator {type(op).__name__} is not allowed", node)
        if isinstance(op, (ast.BitAnd, ast.BitOr)):
            for side, sub in ((a, node.left), (b, node.right)):
                if not is_condition(side):
                    sym = _BINOPS[type(op)]
                    raise self.error(
                        f"'{sym}' combines conditions, and binds tighter than comparisons: "
                        f"write (x > 0) {sym} (y < 1)", sub)
            return sp.And(a, b) if isinstance(op, ast.BitAnd) else sp.Or(a, b)
        for side, sub in ((a, node.left), (b, node.right)):
            if is_condition(side):
                raise self.error("a condition cannot be used in arithmetic; use where(cond, 1, 0)", sub)
        if isinstance(op, ast.Add):
            return self._number_guard(lambda: a + b, node)
        if isinstance(op, ast.Sub):
            return self._number_guard(lambda: a - b, node)
        if isinstance(op, ast.Mult):
            return self._number_guard(lambda: a * b, node)
        if isinstance(op, ast.Div):
            if b == 0 and a.is_number:
                raise self.error("division by zero in a constant", node)
            return self._number_guard(lambda: a / b, node)
        if isinstance(op, ast.FloorDiv):
            if b == 0 and a.is_number:
                raise self.error("division by zero in a constant", node)
            return self._number_guard(lambda: sp.floor(a / b), node)
        if isinstance(op, ast.Mod):
            if b == 0 and a.is_number:
                raise self.error("modulo by zero in a constant", node)
            return self._number_guard(lambda: sp.Mod(a, b), node)
        return self._power(a, b, node)

    def _power(self, a, b, node):
        if a.is_number and b.is_number:
            if isinstance(b, sp.Integer) and isinstance(a, sp.Rational):
                est = _int_bits(a) * abs(int(b))
                if est > self.limits.max_const_bits:
                    raise self.error(f"constant power is too large (about {est} bits; the limit is "
                                     f"{self.limits.max_const_bits})", node)
            elif isinstance(b, sp.Integer) and abs(int(b)) > 10 ** 6:
                return sp.Pow(a, b, evaluate=False)
            elif not isinstance(b, (sp.Integer, sp.Float, sp.Rational)) or isinstance(a, sp.Integer) \
                    and _int_bits(a) > 64:
                return sp.Pow(a, b, evaluate=False)
        if a == 0 and b.is_number and b.is_negative:
            raise self.error("zero to a negative power in a constant", node)
        return self._number_guard(lambda: a ** b, node)

    def _number_guard(self, make, node):
        try:
            out = make()
        except (ZeroDivisionError, OverflowError, MemoryError, RecursionError) as err:
            raise self.error(f"constant arithmetic failed: {type(err).__name__}", node) from None
        if _int_bits(out) > self.limits.max_const_bits:
            raise self.error(f"constant is too large (the limit is {self.limits.max_const_bits} bits)", node)
        return out

    def _boolean(self, v, node):
        if is_condition(v):
            return v
        raise self.error("~, not, and, or combine conditions such as (x > 0), not numbers", node)

    def visit_BoolOp(self, node):
        vals = [self._boolean(self.visit(v), v) for v in node.values]
        return sp.And(*vals) if isinstance(node.op, ast.And) else sp.Or(*vals)

    _CMP = {ast.Lt: sp.StrictLessThan, ast.LtE: sp.LessThan, ast.Gt: sp.StrictGreaterThan,
            ast.GtE: sp.GreaterThan, ast.Eq: sp.Eq, ast.NotEq: sp.Ne}

    def visit_Compare(self, node):
        left = self.visit(node.left)
        parts = []
        for op, comp in zip(node.ops, node.comparators):
            cls = self._CMP.get(type(op))
            if cls is None:
                raise self.error(f"comparison {type(op).__name__} is not allowed (use <, <=, >, >=, ==, !=)", node)
            right = self.visit(comp)
            for side, sub in ((left, node.left), (right, comp)):
                if is_condition(side):
                    raise self.error("conditions cannot be compared; combine them with & and |", sub)
            parts.append(cls(left, right))
            left = right
        return parts[0] if len(parts) == 1 else sp.And(*parts)

    def visit_IfExp(self, node):
        cond = self._boolean(self.visit(node.test), node.test)
        return sp.Piecewise((self.visit(node.body), cond), (self.visit(node.orelse), True))

    def visit_Tuple(self, node):
        raise self.error("tuples are only allowed as the (value, condition) pairs of Piecewise", node)

    def visit_Call(self, node):
        if not isinstance(node.func, ast.Name):
            raise self.error("only named functions can be called, as sin(x)", node.func)
        name = node.func.id
        if node.keywords:
            raise self.error(f"keyword arguments are not allowed (in the call of {name})", node.keywords[0].value)
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.error("starred arguments are not allowed", a)
        return self.call(name, node)

    def call(self, name, node):
        fn = BY_NAME.get(name)
        if fn is None:
            raise self.error(f"unknown function {name!r}" + _suggest(name, BY_NAME), node.func)
        if fn.name == "Piecewise":
            return self._piecewise(node)
        if fn.nargs and len(node.args) not in fn.nargs:
            want = " or ".join(map(str, fn.nargs[:3])) + (" or more" if len(fn.nargs) > 3 else "")
            raise self.error(f"{name}() takes {want} argument(s), got {len(node.args)}", node)
        args = [self.visit(a) for a in node.args]
        if fn.name == "where":
            cond = self._boolean(args[0], node.args[0])
            args = [cond] + [self._value(v, n) for v, n in zip(args[1:], node.args[1:])]
        else:
            args = [self._value(v, n) for v, n in zip(args, node.args)]
        try:
            # Unevaluated: SymPy's identities change values at singular points (it rewrites
            # sin(atan2(x, x)) as x/sqrt(2*x**2), nan at 0) and evaluate e.g. gamma(10**9) exactly.
            return self._number_guard(lambda: fn.build(*args, evaluate=False), node)
        except FormulaError:
            raise
        except (TypeError, ValueError) as err:
            raise self.error(f"invalid call of {name}: {err}", node) from None

    def _value(self, v, node):
        if is_condition(v):
            raise self.error("a condition is not a number here; use where(cond, 1, 0)", node)
        return v

    def _piecewise(self, node):
        pairs = []
        for arg in node.args:
            if not (isinstance(arg, ast.Tuple) and len(arg.elts) == 2):
                raise self.error("Piecewise takes (value, condition) pairs", arg)
            value = self._value(self.visit(arg.elts[0]), arg.elts[0])
            cond = self._boolean(self.visit(arg.elts[1]), arg.elts[1])
            pairs.append((value, cond))
        if not pairs:
            raise self.error("Piecewise needs at least one (value, condition) pair", node)
        try:
            return sp.Piecewise(*pairs)
        except (TypeError, ValueError) as err:
            raise self.error(f"invalid Piecewise: {err}", node) from None


def parse_formula(text: str, limits: Limits = LIMITS) -> sp.Basic:
    """Parse one formula string into a SymPy expression (never evaluating the text)."""
    try:
        return FormulaParser(text, limits).parse()
    except RecursionError:
        raise FormulaError("formula is nested too deeply", text) from None
