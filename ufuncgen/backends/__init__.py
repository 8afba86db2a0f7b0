"""Backends, loaded on demand so ``import ufuncgen`` imports neither Numba nor CUDA.

``cpu`` builds the host loops (also used by the ``parallel`` target); the device backend for
``cuda``/``auto`` lives in ``backends.cuda`` and is imported only when such a target is asked for.
"""
from __future__ import annotations

__all__ = ["get_device_backend"]


def get_device_backend(uf, required: bool):
    """The CUDA dispatcher for ``uf``; None for ``auto`` when CUDA cannot be used here."""
    try:
        from . import cuda
    except ImportError as err:
        if required:
            raise RuntimeError(f"target='cuda' is not available: {err}") from err
        return None
    return cuda.make_dispatcher(uf, required)
