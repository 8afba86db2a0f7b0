"""What UFunc and GUFunc objects show about themselves: shared by both, one place.

The classes keep ``_formula``, ``_options``, ``_entries`` (loops by dtypes: (ufunc, out dtypes,
loop)), ``_fixed`` (the ufunc of the given signatures, or None), ``_device_impl``, ``__name__`` and
``target``, and a ``_latex()`` and a ``_numpy_ufunc(loops)`` of their own.
"""
from __future__ import annotations

import html

import numpy as np

from .dtypes import Signature
from .errors import FormulaError

__all__ = ["FormulaIntrospection"]


class FormulaIntrospection:
    """Read-only views of a compiled formula and its loops, and the notebook displays."""

    _kind = "UFunc"

    @property
    def expr(self):
        """The SymPy expression (a tuple of them for several outputs)."""
        return self._formula.expr

    @property
    def formula(self):
        return self._formula

    @property
    def args(self) -> tuple:
        return self._formula.args

    @property
    def nin(self) -> int:
        return self._formula.nin

    @property
    def nout(self) -> int:
        return self._formula.nout

    @property
    def nargs(self) -> int:
        return self.nin + self.nout

    @property
    def options(self) -> dict:
        return dict(self._options)

    @property
    def signatures(self) -> list:
        """The compiled signatures, as Numba-style strings."""
        sigs = [str(Signature(e[2].in_dtypes, e[2].out_dtypes)) for e in self._entries.values()]
        if self._device_impl is not None:
            sigs += [s for s in self._device_impl.signatures() if s not in sigs]
        return sigs

    @property
    def ufunc(self) -> np.ufunc:
        """A real ``numpy.ufunc`` holding every loop compiled so far (a GUFunc's has its core signature)."""
        if self._fixed is not None:
            return self._fixed
        if not self._entries:
            raise ValueError("nothing is compiled yet: call the function or pass signatures=")
        return self._numpy_ufunc([e[2] for e in self._entries.values()])

    @property
    def types(self) -> list:
        """Compiled loops in ``numpy.ufunc.types`` form ('dd->d')."""
        return ["".join(d.char for d in e[2].in_dtypes) + "->" + "".join(d.char for d in e[2].out_dtypes)
                for e in self._entries.values()]

    def _check_argument(self, name: str) -> None:
        if name not in self.args:
            raise FormulaError(f"{name!r} is not an argument; the arguments are {', '.join(self.args)}")

    def _html_details(self) -> str:
        return ""

    def _repr_latex_(self) -> str:
        return f"$\\displaystyle {self._latex()}$"

    def _repr_html_(self) -> str:
        sigs = ", ".join(self.signatures) or "none yet (compiled on first call)"
        return (f"<div><b>ufuncgen.{self._kind}</b> <code>{html.escape(self.__name__)}</code><br>"
                f"$${html.escape(self._latex())}$${self._html_details()}"
                f"args: <code>{html.escape(', '.join(self.args))}</code>; target: <code>{self.target}</code>; "
                f"signatures: <code>{html.escape(sigs)}</code></div>")
