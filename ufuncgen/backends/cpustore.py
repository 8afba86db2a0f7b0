"""A compiled cpu loop to bytes and back, for the disk cache; loading compiles nothing.

The payload is the object file of the loop's CodeLibrary, taken from Numba's own object-code
serialisation (what Numba's cache uses internally).  The kernel library is linked into the loop
library when it is finalised, so one object holds everything.  Loading goes back through
``codegen.unserialize_library``; the bitcode Numba stores next to the object only tells its JIT
which symbols the object defines (and serves inlining into other libraries, which never happens to
a finished loop), so instead of storing and parsing 10+ KB of bitcode we hand it a one-function stub
that names the loop symbol.  The fields are length-prefixed bytes (``diskcache.pack``), no pickle.

The loop needs nothing from the process that compiled it: NRT is off and there is no CPython
wrapper, so Numba's environment global (a zero-filled common symbol in the object) is never read;
the undefined symbols are libm functions and Numba's C helpers (``numba_gamma``, ...), which Numba's
CPU target registers with LLVM when it starts, and libmvec's vector functions where the loop was
built with them (``vecmath``: loaded before the object, and part of the key).
"""
from __future__ import annotations

import re

import numpy as np
from llvmlite import binding as ll
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import cpu_target

from ..diskcache import pack, unpack
from . import vecmath
from .cpu import CompiledLoop

__all__ = ["dumps", "loads"]

_TAG = b"ufuncgen-cpu-loop/2"
_PREFIX = "ufuncgen_loop_"
_NAME = re.compile(_PREFIX + r"[0-9A-Za-z_]{1,64}")


def _loop_library(loop: CompiledLoop):
    for obj in loop.keepalive:
        if getattr(obj, "name", "").startswith(_PREFIX) and hasattr(obj, "serialize_using_object_code"):
            return obj
    raise ValueError("the loop's CodeLibrary is not among its keepalive objects")


def _dtypes(dts) -> bytes:
    return ",".join(np.dtype(d).str for d in dts).encode()


def _symbol_stub(name: str) -> bytes:
    """Bitcode of a module that defines just ``name``: what Numba's JIT reads from the shared module."""
    return ll.parse_assembly(f'define void @"{name}"() {{\n  unreachable\n}}\n').as_bitcode()


def dumps(loop: CompiledLoop) -> bytes:
    """The loop's machine code and what is needed to check it on the way back."""
    with global_compiler_lock:
        name, kind, (obj, _bitcode) = _loop_library(loop).serialize_using_object_code()
    if kind != "object":
        raise ValueError(f"unexpected serialisation kind {kind!r}")
    return pack([_TAG, name.encode(), _dtypes(loop.in_dtypes), _dtypes(loop.out_dtypes), obj])


def loads(data: bytes, in_dtypes: tuple, out_dtypes: tuple) -> CompiledLoop:
    """Load a loop stored by ``dumps`` into Numba's JIT; ValueError if it is not the loop asked for."""
    fields = unpack(data)
    if len(fields) != 5 or fields[0] != _TAG:
        raise ValueError("not a ufuncgen cpu loop payload of this version")
    _tag, name, ins, outs, obj = fields
    name = name.decode()
    if not _NAME.fullmatch(name) or ins != _dtypes(in_dtypes) or outs != _dtypes(out_dtypes):
        raise ValueError(f"payload is for loop {name} ({ins.decode()} -> {outs.decode()}), "
                         f"not ({_dtypes(in_dtypes).decode()} -> {_dtypes(out_dtypes).decode()})")
    vecmath.state()  # loads libmvec where in use: the object may call it (the key says it was built so)
    with global_compiler_lock:
        codegen = cpu_target.target_context.codegen()
        library = codegen.unserialize_library((name, "object", (bytes(obj), _symbol_stub(name))))
        address = library.get_pointer_to_function(name)
    if not address:
        raise ValueError(f"loop function {name} is not defined in the stored object code")
    return CompiledLoop(address, tuple(map(np.dtype, in_dtypes)), tuple(map(np.dtype, out_dtypes)), (library,),
                        from_disk=True)
