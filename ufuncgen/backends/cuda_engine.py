"""The one small interface between ufuncgen's cuda target and a CUDA compiler + launcher.

An engine turns a generated launcher (``cuda_codegen``) into something that launches:

- ``build(src, spec, fastmath, block) -> CompiledKernel`` (compile once; cached by the caller,
  keyed by ``engine.cache_key``, which holds the compute capability and the numba-cuda version);
- ``CompiledKernel.artifact``: the bytes that a disk cache can keep (PTX text + entry name);
  ``load(ptx, entry, spec)`` makes the kernel again from them without compiling (``cudastore``);
  ``toolchain()`` names the NVVM/CUDA versions that a stored kernel depends on;
- ``CompiledKernel.launcher()``: a ``Launcher`` with parameter ``slots`` (objects with a
  ``.value``) and ``launch(grid, block, stream, shared=0)`` (bytes of dynamic shared memory).

``DriverEngine`` compiles with numba-cuda to PTX and launches with ``cuLaunchKernel`` on a
prepared parameter buffer through cuda-bindings (no per-call argument typing or validation: that
is what keeps a call on 1000 elements in microseconds; calling libcuda through ctypes instead was
measured slower on the H200 machine, 5.3 against 4.4 us a launch).  ``SimEngine`` runs the same launcher in Numba's CUDA
simulator, for CI.  numba-cuda-mlir, or a cubin compiler, would be a third engine.
"""
from __future__ import annotations

import ctypes
import re
import threading

import numpy as np

from ..codegen import KernelSource, load_kernel
from .cuda_codegen import LaunchSpec

__all__ = ["CudaUnavailable", "DriverEngine", "SimEngine", "get_engine"]


class CudaUnavailable(RuntimeError):
    """CUDA cannot be used here; the message says what is missing and what to do."""


_CTYPES = {
    "int8": ctypes.c_int8, "int16": ctypes.c_int16, "int32": ctypes.c_int32, "int64": ctypes.c_int64,
    "uint8": ctypes.c_uint8, "uint16": ctypes.c_uint16, "uint32": ctypes.c_uint32, "uint64": ctypes.c_uint64,
    "float32": ctypes.c_float, "float64": ctypes.c_double,
}


class _Slot:
    """A parameter slot of the simulator (the driver's slots are ctypes objects)."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = None


class Launcher:
    """One kernel's parameter slots and launch; ``lock`` guards filling + launching."""

    __slots__ = ("slots", "launch", "lock")

    def __init__(self, slots, launch):
        self.slots = slots
        self.launch = launch
        self.lock = threading.Lock()


class DriverEngine:
    """numba-cuda -> PTX -> ``cuModuleLoadData``; launches with ``cuLaunchKernel``."""

    simulator = False

    def __init__(self):
        from numba import cuda
        if not cuda.is_available():
            reason = "numba.cuda.is_available() is False"
            try:
                cuda.current_context()
            except Exception as err:  # noqa: BLE001 - numba says why (no driver, no device)
                reason = " ".join(str(err).split()) or reason
            raise CudaUnavailable(f"target='cuda' needs an NVIDIA GPU with its driver, and none is usable here "
                                  f"({reason}); use target='cpu' or 'auto', or NUMBA_ENABLE_CUDASIM=1 to "
                                  "run the kernels in Numba's simulator")
        from cuda.bindings import driver
        self.cuda = cuda
        self.drv = driver
        self._ok = driver.CUresult.CUDA_SUCCESS
        dev = cuda.get_current_device()
        self.cc = tuple(dev.compute_capability)
        self.sm_count = int(dev.MULTIPROCESSOR_COUNT)
        self.device_count = len(cuda.gpus)
        self.device_name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        import numba_cuda
        self.cache_key = ("driver", self.cc, getattr(numba_cuda, "__version__", "?"))
        self._toolchain = None

    def _check(self, err, what: str):
        if err != self._ok:
            _, msg = self.drv.cuGetErrorString(err)
            text = msg.decode() if isinstance(msg, bytes) else str(msg)
            raise RuntimeError(f"CUDA error in {what}: {text} ({err})")

    def context_handle(self) -> int:
        """The current thread's context (made current through numba-cuda on first use)."""
        ctx = self.cuda.current_context()
        return int(ctx.handle) if not isinstance(ctx.handle, int) else ctx.handle

    def current_device(self) -> int:
        return int(self.cuda.get_current_device().id)

    def device_of(self, ptr: int) -> int | None:
        """The device ordinal that owns a device pointer (None where the driver cannot tell)."""
        if not ptr:
            return None
        attr = self.drv.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
        err, value = self.drv.cuPointerGetAttribute(attr, ptr)
        return int(value) if err == self._ok else None

    def synchronize(self, stream: int) -> None:
        err, = self.drv.cuStreamSynchronize(stream)
        self._check(err, "cuStreamSynchronize")

    # ---- compiling ------------------------------------------------------------------------
    def numba_types(self, spec: LaunchSpec) -> tuple:
        try:  # numba-cuda >= 0.2x keeps its own copy of the type system
            from numba.cuda import types
            from numba.cuda.np import numpy_support
        except ImportError:
            from numba.core import types
            from numba.np import numpy_support
        return spec.arg_types(types, numpy_support.from_dtype)

    def toolchain(self) -> tuple:
        """What made the PTX and what loads it: NVVM (API and IR versions), CUDA runtime and driver."""
        if self._toolchain is None:
            from numba.cuda.cudadrv import nvvm, runtime
            from numba.cuda.cudadrv.driver import driver
            self._toolchain = (("nvvm", _version(lambda: nvvm.NVVM().get_version()),
                                _version(lambda: nvvm.NVVM().get_ir_version())),
                               ("cudart", _version(runtime.get_version)), ("driver", _version(driver.get_version)))
        return self._toolchain

    def load(self, ptx: str, entry: str, spec: LaunchSpec) -> DriverKernel:
        """A kernel from stored PTX (the disk cache), loaded into the current context; no compiler runs."""
        if not re.fullmatch(r"[A-Za-z0-9_$]+", entry) or not re.search(rf"\.entry\s+{re.escape(entry)}\s*\(", ptx):
            raise ValueError(f"the PTX does not define the kernel entry {entry[:80]!r}")
        kernel = DriverKernel(self, ptx, entry, spec)
        kernel.function()
        return kernel

    def build(self, src: KernelSource, spec: LaunchSpec, fastmath: bool, block: int) -> DriverKernel:
        pyfunc = load_kernel(src)
        ptx, _ = self.cuda.compile(pyfunc, self.numba_types(spec), device=False, fastmath=fastmath,
                                   cc=self.cc, output="ptx", abi="numba", launch_bounds=block)
        found = re.search(r"\.entry\s+([A-Za-z0-9_$]+)\s*\(", ptx)
        if found is None:
            raise RuntimeError("numba-cuda produced PTX without a kernel entry")
        return DriverKernel(self, ptx, found.group(1), spec)


def _version(get) -> tuple | str:
    """A version tuple, or why it could not be read (still a stable key part)."""
    try:
        return tuple(get())
    except Exception as err:  # noqa: BLE001 - a library that cannot say its version
        return f"unknown ({type(err).__name__})"


class DriverKernel:
    """PTX of one launcher, loaded once per CUDA context."""

    def __init__(self, engine: DriverEngine, ptx: str, entry: str, spec: LaunchSpec):
        self.engine = engine
        self.ptx = ptx
        self.entry = entry
        self.spec = spec
        self._functions: dict = {}   # context handle -> (module, function)
        self._lock = threading.Lock()

    @property
    def artifact(self) -> bytes:
        """What a disk cache stores: the entry name and the PTX (loaded with ``cuModuleLoadData``)."""
        return self.entry.encode() + b"\n" + self.ptx.encode()

    def function(self):
        ctx = self.engine.context_handle()
        fn = self._functions.get(ctx)
        if fn is None:
            with self._lock:
                fn = self._functions.get(ctx)
                if fn is None:
                    drv = self.engine.drv
                    err, module = drv.cuModuleLoadData(self.ptx.encode() + b"\0")
                    self.engine._check(err, "cuModuleLoadData")
                    err, func = drv.cuModuleGetFunction(module, self.entry.encode())
                    self.engine._check(err, "cuModuleGetFunction")
                    fn = self._functions[ctx] = (module, func)
        return fn[1]

    def launcher(self) -> Launcher:
        slots = []
        for p in self.spec.params():
            ctype = ctypes.c_uint64 if p.kind == "ptr" else _CTYPES[np.dtype(p.dtype).name]
            slots.append(ctype())
        ptrs = (ctypes.c_void_p * len(slots))(*[ctypes.addressof(s) for s in slots])
        addr = ctypes.addressof(ptrs)
        func = self.function()
        engine = self.engine
        keep = (slots, ptrs)
        cu_launch = engine.drv.cuLaunchKernel
        ok = engine._ok
        no_context = engine.drv.CUresult.CUDA_ERROR_INVALID_CONTEXT

        def launch(grid: int, block: int, stream: int, shared: int = 0, _keep=keep):
            err, = cu_launch(func, grid, 1, 1, block, 1, 1, shared, stream, addr, 0)
            if err != ok:
                if err == no_context:  # a thread that has not used CUDA yet: make the context current
                    engine.context_handle()
                    err, = cu_launch(func, grid, 1, 1, block, 1, 1, shared, stream, addr, 0)
                engine._check(err, "cuLaunchKernel")

        return Launcher(slots, launch)


class SimEngine:
    """Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): the same launcher, run in Python."""

    simulator = True

    def __init__(self):
        from numba import cuda
        self.cuda = cuda
        self.cc = (0, 0)
        self.sm_count = 1
        self.device_count = 1
        self.device_name = "CUDA simulator"
        self.cache_key = ("simulator",)

    def context_handle(self) -> int:
        return 0

    def build(self, src: KernelSource, spec: LaunchSpec, fastmath: bool, block: int) -> SimKernel:
        return SimKernel(self.cuda.jit(load_kernel(src)), spec)


class SimKernel:
    def __init__(self, kernel, spec: LaunchSpec):
        self.kernel = kernel
        self.spec = spec
        self.ptx = None
        self.artifact = None

    def launcher(self) -> Launcher:
        slots = [_Slot() for _ in self.spec.py_params()]
        kernel = self.kernel

        def launch(grid: int, block: int, stream: int, shared: int = 0):
            kernel[grid, block, 0, shared](*[s.value for s in slots])

        return Launcher(slots, launch)


_ENGINE = None
_ENGINE_LOCK = threading.Lock()


def get_engine():
    """The process's engine (the simulator when numba-cuda runs in simulator mode)."""
    global _ENGINE
    if _ENGINE is None:
        with _ENGINE_LOCK:
            if _ENGINE is None:
                try:
                    from numba import cuda
                except ImportError as err:
                    raise CudaUnavailable("target='cuda' needs numba-cuda: pip install 'ufuncgen[cuda]' "
                                          f"(import failed: {err})") from err
                if getattr(cuda, "implementation", "") != "NVIDIA":
                    raise CudaUnavailable("target='cuda' needs the numba-cuda package (NVIDIA's CUDA target "
                                          "for Numba), not Numba's deprecated built-in numba.cuda: "
                                          "pip install 'ufuncgen[cuda]'")
                _ENGINE = SimEngine() if _simulating(cuda) else DriverEngine()
    return _ENGINE


def _simulating(cuda) -> bool:
    """Whether ``numba.cuda`` was imported as the simulator (fixed at its first import)."""
    return "simulator" in getattr(cuda.to_device, "__module__", "")
