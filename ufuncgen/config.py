"""``ug.load("formulas.toml")``: named formulas from a TOML or YAML file.

Reading has three steps, so that every problem in a file is reported at once: a format reader
gives raw entries with line numbers (tomllib gives none, so a small scan of the text finds the
``[name]`` headers and ``key =`` lines), each entry is checked (keys, types, formula, signatures),
and only then the namespace is made.  Formulas compile lazily, on first access, or all at once
with ``eager=True``.
"""
from __future__ import annotations

import difflib
import keyword
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FormulaError, SignatureError

__all__ = ["load", "Formulas", "ConfigError", "Problem", "Entry", "entries", "precompile", "ENTRY_KEYS"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file: where (entry, line) and what."""

    entry: str | None
    line: int | None
    message: str
    detail: str | None = None      # e.g. the formula with a caret under the bad column

    def where(self, path: str) -> str:
        loc = f"{path}:{self.line}:" if self.line else f"{path}:"
        return f"{loc} [{self.entry}]" if self.entry is not None else loc

    def format(self, path: str, detail: bool = True) -> str:
        text = f"{self.where(path)} {self.message}"
        if detail and self.detail:
            text += "\n" + "\n".join("    " + line for line in self.detail.splitlines())
        return text


class ConfigError(FormulaError):
    """Every problem found in one config file; ``problems`` lists them, ``path`` names the file."""

    def __init__(self, path: str, problems):
        self.path = str(path)
        self.problems = tuple(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in {self.path}:"
        super().__init__("\n".join([head, *("  " + p.format(self.path) for p in self.problems)]))


# ---- the keys of an entry -------------------------------------------------------------------
@dataclass(frozen=True)
class _Key:
    types: tuple            # allowed Python types of the value
    items: type | None      # for a list value: the type of its items
    meaning: str


ENTRY_KEYS = {
    "expr": _Key((str, list), str, "a formula string, or a list of them (one output each)"),
    "args": _Key((list, str), str, 'a list of argument names, as ["m", "v"]'),
    "signatures": _Key((str, list), str, 'a signature such as "float64(float64)", or a list of them'),
    "target": _Key((str,), None, "one of 'cpu', 'parallel', 'cuda', 'auto'"),
    "layout": _Key((str,), None, 'a gufunc layout such as "(n)->()"'),
    "doc": _Key((str,), None, "a string"),
    "fastmath": _Key((bool,), None, "true or false"),
    "cse": _Key((bool,), None, "true or false"),
    "cache": _Key((bool,), None, "true or false"),
    "device": _Key((int,), None, "a CUDA device number"),
}
_OPTIONS = ("fastmath", "cse", "cache", "device")
_TYPE_NAMES = {str: "a string", list: "a list", bool: "a boolean", int: "an integer", dict: "a table",
               float: "a number", type(None): "null"}


def _type_name(value) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass
class _Raw:
    """An entry as a reader found it."""

    name: object
    line: int | None
    value: object
    key_lines: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """A checked entry: everything needed to build it, nothing compiled yet."""

    name: str
    line: int | None
    expr: object
    args: tuple | None
    signatures: object
    target: str
    layout: str | None
    doc: str | None
    options: dict
    formula: object          # the checked Formula (elementwise entries), else None
    text: str                # the formula as written, for the repr


# ---- readers: text -> raw entries, each with its line ---------------------------------------
_TOML_KEY = r'(?P<key>[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\')'
_TOML_HEADER = re.compile(r"^\s*\[(?P<array>\[?)\s*" + _TOML_KEY + r"\s*(?P<end>[\].])")
_TOML_KEY_AFTER_DOT = re.compile(r"\s*" + _TOML_KEY)
_TOML_ASSIGN = re.compile(r"^\s*" + _TOML_KEY + r"\s*[=.]")
_TOML_AT = re.compile(r"\s*\(at (?:line (\d+), column \d+|end of document)\)\s*$")
_DUPLICATE = "ufuncgen-duplicate-{}"


def _unquote(key: str) -> str:
    return key[1:-1] if key[:1] in "\"'" else key


@dataclass
class _Def:
    name: str
    line: int                # 1-based
    header: bool             # [name] (else a top-level name = ...)
    span: tuple              # where the key is on its line
    key_lines: dict = field(default_factory=dict)


def _scan_toml(lines: list) -> list:
    """Top-level definitions ([name] headers and name = ... lines) with the lines of their keys."""
    defs: list = []
    current = None
    in_string = None
    for i, line in enumerate(lines, 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        m = _TOML_HEADER.match(line)
        if m:
            name = _unquote(m.group("key"))
            again = m.group("end") == "." or m.group("array")    # [a.b] and [[a]] may repeat [a]
            earlier = next((d for d in defs if d.name == name), None) if again else None
            if earlier is not None:
                current = earlier
                sub = _TOML_KEY_AFTER_DOT.match(line, m.end("end"))
                if sub:
                    current.key_lines.setdefault(_unquote(sub.group("key")), i)
            else:
                current = _Def(name, i, True, m.span("key"))
                defs.append(current)
        else:
            m = _TOML_ASSIGN.match(line)
            if m and current is None:
                defs.append(_Def(_unquote(m.group("key")), i, False, m.span("key")))
            elif m:
                current.key_lines.setdefault(_unquote(m.group("key")), i)
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_string = quote
                break
    return defs


def _read_toml(text: str) -> tuple:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    lines = text.splitlines()
    defs = _scan_toml(lines)
    problems, first, renamed = [], {}, {}
    for d in defs:
        if d.name not in first:
            first[d.name] = d
            continue
        # a second definition stops tomllib; rename it so the rest of the file is still checked
        problems.append(Problem(d.name, d.line, f"is defined twice (first at line {first[d.name].line})"))
        token = _DUPLICATE.format(len(renamed) + 1)
        renamed[token] = d
        line = lines[d.line - 1]
        lines[d.line - 1] = line[:d.span[0]] + f'"{token}"' + line[d.span[1]:]
    try:
        data = tomllib.loads("\n".join(lines))
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = _TOML_AT.search(msg)
        line = (int(m.group(1)) if m.group(1) else len(lines)) if m else None
        problems.append(Problem(None, line, "is not valid TOML: " + _TOML_AT.sub("", msg)))
        return [], problems
    by_name = {d.name: d for d in defs if d.name in first and first[d.name] is d}
    raws = []
    for key, value in data.items():
        d = renamed.get(key) or by_name.get(key)
        raws.append(_Raw(d.name if d else key, d.line if d else None, value, d.key_lines if d else {}))
    return raws, problems


def _read_yaml(text: str) -> tuple:
    try:
        import yaml
    except ImportError as err:
        raise ImportError("reading YAML needs PyYAML: pip install 'ufuncgen[yaml]' (or use TOML)") from err
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            what = " ".join(str(x) for x in (getattr(err, "problem", None), getattr(err, "context", None)) if x)
            return [], [Problem(None, mark.line + 1 if mark else None, f"is not valid YAML: {what or err}")]
        if root is None:
            return [], []
        if not isinstance(root, yaml.MappingNode):
            return [], [Problem(None, root.start_mark.line + 1,
                                "must map formula names to entries, as  kinetic: {expr: 0.5*m*v**2}")]
        raws, problems, seen = [], [], {}
        for key_node, value_node in root.value:
            line = key_node.start_mark.line + 1
            name = loader.construct_object(key_node, deep=True)
            if isinstance(name, str) and name in seen:
                problems.append(Problem(name, line, f"is defined twice (first at line {seen[name]})"))
            elif isinstance(name, str):
                seen[name] = line
            key_lines = {}
            if isinstance(value_node, yaml.MappingNode):
                for k, _ in value_node.value:
                    if k.value in key_lines:
                        problems.append(Problem(name, k.start_mark.line + 1, f"key {k.value!r} is given twice"))
                    key_lines.setdefault(k.value, k.start_mark.line + 1)
            raws.append(_Raw(name, line, loader.construct_object(value_node, deep=True), key_lines))
        return raws, problems
    finally:
        loader.dispose()


_READERS: dict[str, Callable] = {".toml": _read_toml, ".yaml": _read_yaml, ".yml": _read_yaml}


# ---- checking one entry ---------------------------------------------------------------------
def _check_types(raw: _Raw, value: dict, problems: list) -> set:
    """Report unknown keys and values of the wrong type; return the keys that are usable."""
    good = set()
    for key, v in value.items():
        line = raw.key_lines.get(key, raw.line)
        spec = ENTRY_KEYS.get(key)
        if spec is None:
            problems.append(Problem(raw.name, line, f"unknown key {key!r}{_suggest(str(key), ENTRY_KEYS)} "
                                                    f"(known keys: {', '.join(ENTRY_KEYS)})"))
        elif not isinstance(v, spec.types) or isinstance(v, bool) and bool not in spec.types:
            problems.append(Problem(raw.name, line, f"{key} must be {spec.meaning}, not {_type_name(v)}"))
        elif isinstance(v, list) and spec.items is not None and (not v or not all(isinstance(x, spec.items)
                                                                                  for x in v)):
            bad = [x for x in v if not isinstance(x, spec.items)]
            what = f"not {_type_name(bad[0])} {bad[0]!r}" if bad else "not an empty list"
            problems.append(Problem(raw.name, line, f"{key} must be {spec.meaning}, {what}"))
        else:
            good.add(key)
    if "expr" not in value:
        problems.append(Problem(raw.name, raw.line, "has no expr; every entry needs expr = \"<formula>\""))
    return good


def _formula_problem(raw: _Raw, key: str, err: Exception) -> Problem:
    line = raw.key_lines.get(key, raw.line)
    if isinstance(err, FormulaError):
        detail = str(err)[len(err.reason):].strip("\n") if str(err).startswith(err.reason) else None
        return Problem(raw.name, line, f"{key}: {err.reason}", detail or None)
    return Problem(raw.name, line, f"{key}: {err}")


def _check_entry(raw: _Raw, problems: list) -> Entry | None:
    from .dtypes import parse_signatures
    from .elementwise import TARGETS
    from .formula import make_formula

    name = raw.name
    n_problems = len(problems)
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        problems.append(Problem(str(name), raw.line, "is not a usable name: formula names must be Python "
                                                     "identifiers not starting with '_' (they become attributes)"))
    value = {"expr": raw.value} if isinstance(raw.value, str) else raw.value   # name = "formula" shorthand
    if not isinstance(value, dict):
        problems.append(Problem(str(name), raw.line, f"must be a table with expr = \"<formula>\", "
                                                     f"not {_type_name(value)}"))
        return None
    good = _check_types(raw, value, problems)
    target = value.get("target", "cpu")
    if "target" in good and target not in TARGETS:
        problems.append(Problem(name, raw.key_lines.get("target", raw.line),
                                f"target {target!r} is not known{_suggest(target, TARGETS)} "
                                f"(targets: {', '.join(TARGETS)})"))
    expr, args, layout = value.get("expr"), value.get("args"), value.get("layout")
    options = {k: value[k] for k in _OPTIONS if k in good}
    signatures = value.get("signatures") if "signatures" in good else None
    formula = None
    if {"expr"} <= good and ("args" in good or "args" not in value) and ("layout" in good or layout is None):
        try:
            if layout is None:
                formula = make_formula(expr, args)
                parse_signatures(signatures, formula.nin, formula.nout)
            else:
                _check_gufunc(expr, layout, args, signatures, options)
        except (FormulaError, SignatureError) as err:
            key = "signatures" if isinstance(err, SignatureError) else "expr"
            problems.append(_formula_problem(raw, key, err))
    if len(problems) > n_problems or set(value) - good:
        return None
    text = expr if isinstance(expr, str) else "[" + ", ".join(expr) + "]"
    return Entry(name, raw.line, expr, tuple(args) if isinstance(args, list) else args, value.get("signatures"),
                 target, layout, value.get("doc"), options, formula, text)


def _gufunc_factory():
    """``ufuncgen.generalized.gufunc``, or None where this build has no gufunc support."""
    try:
        from .generalized import gufunc
    except ImportError:
        return None
    return gufunc


def _check_gufunc(expr, layout, args, signatures, options) -> None:
    gufunc = _gufunc_factory()
    if gufunc is None:
        return  # checked when built: the entry then says that gufunc support is missing
    # building with lazy signatures parses and checks the index formula and the layout
    gufunc(expr, layout=layout, args=args, target="cpu", **{k: v for k, v in options.items() if k != "device"})
    if signatures is not None and "->" in layout:
        from .dtypes import parse_signatures
        ins, outs = (len(re.findall(r"\([^()]*\)", part)) for part in layout.split("->", 1))
        parse_signatures(signatures, ins, outs)


def _build(entry: Entry):
    """The compiled object of one entry (``ug.ufunc`` or ``ug.gufunc``)."""
    if entry.layout is None:
        from .elementwise import ufunc
        obj = ufunc(entry.formula, args=entry.formula.args, signatures=entry.signatures, target=entry.target,
                    name=entry.name, **entry.options)
    else:
        gufunc = _gufunc_factory()
        if gufunc is None:
            raise FormulaError(f"formula {entry.name!r} has a layout (a gufunc), but this ufuncgen has no "
                               "gufunc support (ufuncgen.generalized cannot be imported)")
        obj = gufunc(entry.expr, layout=entry.layout, args=list(entry.args) if entry.args else None,
                     signatures=entry.signatures, target=entry.target, name=entry.name, **entry.options)
    if entry.doc:
        try:
            obj.__doc__ = entry.doc
        except AttributeError:
            pass
    return obj


def _layout_shapes(layout: str) -> list:
    """Smallest input shapes for a layout such as "(m,n),(n)->(m)": no loop elements, core dims of 1."""
    inputs = layout.split("->")[0]
    shapes = []
    for group in re.findall(r"\(([^()]*)\)", inputs):
        dims = [d.strip() for d in group.split(",") if d.strip()]
        shapes.append((0, *(int(d) if d.isdigit() else 1 for d in dims)))
    return shapes


def precompile(obj, layout: str | None = None) -> list:
    """Compile ``obj`` now: its signatures are compiled already; else compile the float64 loop.

    Returns the compiled signatures.  With the disk cache on, this is what ``ufuncgen compile`` stores.
    """
    if obj.signatures:
        return list(obj.signatures)
    import numpy as np
    layout = getattr(obj, "layout", None) or layout
    if layout is None:
        obj(*[np.zeros(0)] * obj.nin)
    else:
        obj(*[np.zeros(s) for s in _layout_shapes(str(layout))])
    return list(obj.signatures)


# ---- the namespace --------------------------------------------------------------------------
class Formulas:
    """The formulas of one file, by name: ``fs.kinetic``, ``fs["kinetic"]``, ``list(fs)``, ``"x" in fs``.

    Read-only.  Each formula is compiled on first access (or all at load with ``eager=True``).
    """

    __slots__ = ("_path", "_entries", "_built", "_lock")

    def __init__(self, path: str, entries: dict):
        object.__setattr__(self, "_path", str(path))
        object.__setattr__(self, "_entries", dict(entries))
        object.__setattr__(self, "_built", {})
        object.__setattr__(self, "_lock", threading.Lock())

    def _get(self, name: str, error: type):
        built = self._built.get(name)
        if built is not None:
            return built
        entry = self._entries.get(name)
        if entry is None:
            names = ", ".join(self._entries) or "none"
            raise error(f"{os.path.basename(self._path)} has no formula {name!r}"
                        f"{_suggest(str(name), self._entries)} (its formulas: {names})")
        with self._lock:
            if name not in self._built:
                self._built[name] = _build(entry)
            return self._built[name]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._get(name, AttributeError)

    def __getitem__(self, name: str):
        return self._get(name, KeyError)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __dir__(self):
        return sorted(self._entries)

    def __setattr__(self, name, value):
        raise AttributeError(f"formulas loaded from {self._path} are read-only")

    def __delattr__(self, name):
        raise AttributeError(f"formulas loaded from {self._path} are read-only")

    def __repr__(self) -> str:
        lines = [f"<ufuncgen.Formulas from {self._path!r}: {len(self)} formula{'s' if len(self) != 1 else ''}"]
        for name, e in self._entries.items():
            args = e.formula.args if e.formula is not None else e.args
            args = f"({', '.join(args)})" if args else ""
            text = e.text if len(e.text) <= 60 else e.text[:57] + "..."
            extra = [f"layout {e.layout}"] if e.layout else []
            extra += [f"target {e.target}"] if e.target != "cpu" else []
            extra += ["built"] if name in self._built else []
            doc = f"  # {e.doc.splitlines()[0]}" if e.doc else ""
            lines.append(f"  {name}{args} = {text}" + (f"  [{', '.join(extra)}]" if extra else "") + doc)
        return "\n".join(lines) + ">"


def entries(formulas: Formulas) -> dict:
    """The checked entries of a namespace, by name (expr, args, signatures, target, layout, doc),
    without compiling anything (a function, so that no entry name is shadowed by a method)."""
    return dict(formulas._entries)


def load(path: str | os.PathLike, eager: bool = False) -> Formulas:
    """Read named formulas from a TOML (or, with PyYAML, YAML) file.

    Each entry: ``expr`` (required), ``args``, ``signatures``, ``target``, ``layout`` (a gufunc),
    ``doc``, and the ``ug.ufunc`` options ``fastmath``, ``cse``, ``cache``, ``device``.  Every
    problem in the file is reported together, in one ``ConfigError`` naming file, entry and line.

    Args:
        path: the file; its suffix (.toml, .yaml, .yml) says the format.
        eager: compile every formula now (reporting compile failures together) instead of on first use.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"cannot tell the format of {str(path)!r} from its suffix; use .toml, .yaml or .yml")
    text = path.read_text(encoding="utf-8")
    raws, problems = reader(text)
    entries = {}
    for raw in raws:
        entry = _check_entry(raw, problems)
        if entry is not None and entry.name not in entries:
            entries[entry.name] = entry
    if not raws and not problems:
        problems.append(Problem(None, None, "defines no formulas; write entries such as  "
                                            "[kinetic] expr = \"0.5*m*v**2\""))
    if problems:
        raise ConfigError(str(path), sorted(problems, key=lambda p: (p.line or 0)))
    formulas = Formulas(str(path), entries)
    if eager:
        failed = []
        for name, entry in entries.items():
            try:
                precompile(formulas[name], entry.layout)
            except Exception as err:  # report every entry that fails, together
                failed.append(Problem(name, entry.line, f"does not compile: {type(err).__name__}: {err}"
                                      .split("\n")[0]))
        if failed:
            raise ConfigError(str(path), failed)
    return formulas
