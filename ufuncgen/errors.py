"""The two exception types users catch, with messages that point into the formula."""
from __future__ import annotations

__all__ = ["FormulaError", "SignatureError"]


class FormulaError(ValueError):
    """Anything wrong with a formula: syntax, unknown name, disallowed construct, size.

    ``formula`` and ``col`` (0-based, or None) are kept as attributes so callers such as
    the config loader can re-report the problem with their own context.
    """

    def __init__(self, message: str, formula: str | None = None, col: int | None = None):
        self.reason = message
        self.formula = formula
        self.col = col
        super().__init__(_with_caret(message, formula, col))


class SignatureError(ValueError):
    """A Numba-style signature that does not parse or does not fit the formula."""


def _with_caret(message: str, formula: str | None, col: int | None) -> str:
    if formula is None:
        return message
    text = formula if len(formula) <= 200 else formula[:200] + "..."
    if "\n" in text:
        text = text.replace("\n", " ")
    lines = [message, "    " + text]
    if col is not None and 0 <= col <= len(text):
        lines.append("    " + " " * col + "^")
    return "\n".join(lines)
