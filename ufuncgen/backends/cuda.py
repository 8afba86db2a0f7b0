"""The cuda target: a formula as a grid-stride CUDA kernel, called like a NumPy ufunc.

``make_dispatcher(uf, required)`` is what ``UFunc`` calls for ``target='cuda'`` and ``'auto'``.
A call is resolved once per *call shape* (argument types, dtypes, shapes, strides, ``out``) into
a ``_DevicePlan``: kernel compiled (or taken from the cache), layout chosen, launch configuration and
constant parameters filled in.  Later calls of that shape only read pointers, allocate outputs
and launch: no re-validation on the hot path.

Rules (README "GPU"):
- NumPy inputs are copied to the device, the result is copied back (a NumPy array).
- Device inputs (CuPy, Numba device arrays, anything with ``__cuda_array_interface__``) stay on
  the device; the result is of the kind of the first device argument (CuPy in, CuPy out; other
  kinds give Numba device arrays).  Host arrays mixed with device arrays are an error (scalars,
  including NumPy scalars and 0-d arrays, are values and mix freely).
- Inputs must be on the current device (select it with ``cupy.cuda.Device(k)`` or
  ``numba.cuda.gpus[k]``, or pass ``device=k`` to ``ug.ufunc``); others are an error.
- ``out=`` must be on the same side as the inputs; ``stream=`` takes a Numba or CuPy stream
  (default: CuPy's current stream for CuPy arrays, else the default stream).
- ``target='auto'`` sends calls with device arrays here; host arrays go to the cpu target unless
  ``UFUNCGEN_CUDA_AUTO_MIN_SIZE`` (elements) is set and a GPU is present.
"""
from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np

from ..build import _Counter, output_dtypes
from ..dtypes import Signature, input_dtype_for, literal_dtype
from ..memcache import BoundedCache
from . import cuda_arrays as arrays
from .cuda_codegen import LaunchSpec, kernel_module_source, storage_dtype
from .cuda_engine import CudaUnavailable, get_engine

__all__ = ["make_dispatcher", "make_gufunc_dispatcher", "CudaDispatcher", "TUNING", "KERNELS", "CudaUnavailable",
           "compiled_kernel", "compile_count"]

# Launch configuration.  block: threads per block; unroll: elements per thread per round of the
# grid-stride loop (flat layout); blocks_per_sm: grid cap = blocks_per_sm * multiprocessors
# (0: no cap).  Defaults from benchmarks/gpu.py --sweep on an H200 (float32/64 axpy and
# sin(x)**2 + cos(y)*exp(-x*y) at 1e8 elements).
# gu_block, gu_blocks_per_sm: the same for gufuncs (one thread per loop element).  Few resident
# threads per SM keep each thread's core row in L1 between the passes of a multi-pass core (softmax
# reads its row three times); from benchmarks/gpu.py --gu-sweep on an H200, rows of 64 (1e6 rows):
# softmax float32 5.10 -> 2.06 ms, float64 2.81 -> 2.29 ms against no cap; norm unchanged
# (0.265 / 0.275 ms).  Not swept: tiny cores (cross, (3)), where more threads in flight may pay.
# gu_stage_block, gu_stage_smem, gu_stage_blocks_per_sm: gufuncs whose rows are staged in shared
# memory (cuda_gucodegen): the largest block (halved until its rows fit), the shared memory a
# block may take (48 KiB: no opt-in needed on any device; 0: never stage), and the grid cap
# (from --gu-sweep on an H200: 64 best for norm and softmax, float32 and float64, over 4..32).
# The simulator runs every thread as a Python thread: a tiny grid, still several rounds.
TUNING = {"block": 256, "unroll": 2, "blocks_per_sm": 256, "gu_block": 256, "gu_blocks_per_sm": 2,
          "gu_stage_block": 128, "gu_stage_smem": 48 * 1024, "gu_stage_blocks_per_sm": 64,
          "sim_block": 32, "sim_grid": 2}

# Compiled kernels, keyed by (formula, launch spec, options, engine key with the compute capability).
KERNELS = BoundedCache(int(os.environ.get("UFUNCGEN_MEMORY_CACHE_SIZE", "1024")), name="cuda kernels")

_COMPILES = _Counter()
_ALLOWED_KWARGS = frozenset({"out", "stream"})
_MAX_PLANS = 256
_KIND_OF = arrays._BY_TYPE.get  # filled by arrays.kind_of on first sight of a type


def make_dispatcher(uf, required: bool):
    """The cuda dispatcher for ``uf``; None for ``auto`` where numba-cuda is not installed."""
    if required:
        return CudaDispatcher(uf, get_engine())  # CudaUnavailable says what is missing
    if importlib.util.find_spec("numba_cuda") is None:
        return None
    return CudaDispatcher(uf, None)


def make_gufunc_dispatcher(g, required: bool):
    """The cuda dispatcher for the gufunc ``g``; None for ``auto`` where numba-cuda is not installed."""
    from .cuda_gufunc import CudaGufuncDispatcher
    if required:
        return CudaGufuncDispatcher(g, get_engine())
    if importlib.util.find_spec("numba_cuda") is None:
        return None
    return CudaGufuncDispatcher(g, None)


def _auto_min_size() -> int | None:
    value = os.environ.get("UFUNCGEN_CUDA_AUTO_MIN_SIZE")
    if not value:
        return None
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"UFUNCGEN_CUDA_AUTO_MIN_SIZE must be a number of elements, not {value!r}") from None


class CudaDispatcher:
    """Calls, signatures and source of one formula on the cuda target."""

    _block_key = "block"  # the TUNING entry of the kernels' block size (launch bounds)

    def __init__(self, uf, engine=None):
        self._uf = uf
        self._formula = uf.formula
        opts = uf.options
        self._fastmath = bool(opts.get("fastmath", False))
        self._cse = bool(opts.get("cse", True))
        self._cache = bool(opts.get("cache", True))
        self._device = opts.get("device")
        self._engine = engine
        self._plans: dict = {}
        self._sigs: list = []            # explicit (in, out) dtype tuples, in order
        self._compiled: dict = {}        # (in dtypes, out dtypes) -> True, in compile order
        self._source = None
        self._lock = threading.Lock()
        self._auto_gpu = None            # for 'auto' with a size threshold: is a GPU usable?
        self._multi = None               # more than one GPU: plans are per context

    # ---- the UFunc protocol -------------------------------------------------------------
    @property
    def engine(self):
        if self._engine is None:
            self._engine = get_engine()
        return self._engine

    def wants(self, args, kwargs) -> bool:
        """For ``target='auto'``: device arrays (or, past the threshold, large host arrays)."""
        for a in args:
            if arrays.is_device(a):
                return True
        out = kwargs.get("out") if kwargs else None
        for o in (out if isinstance(out, tuple) else (out,)):
            if o is not None and arrays.is_device(o):
                return True
        threshold = _auto_min_size()
        if threshold is None or not any(getattr(a, "size", 0) >= threshold for a in args):
            return False
        if self._auto_gpu is None:
            try:
                self._auto_gpu = not self.engine.simulator
            except CudaUnavailable:
                self._auto_gpu = False
        return self._auto_gpu

    def compile(self, in_dtypes, out_dtypes=None) -> None:
        """Compile an explicit signature now (all-array arguments, contiguous layout)."""
        ins = tuple(np.dtype(d) for d in in_dtypes)
        outs = tuple(np.dtype(d) for d in out_dtypes) if out_dtypes else self._result_dtypes(ins)
        self._sigs.append((ins, outs))
        spec = LaunchSpec(("a",) * len(ins), ins, ins, outs, outs, 0, TUNING["unroll"])
        self._kernel(spec)

    def signatures(self) -> list:
        return [str(Signature(i, o)) for i, o in self._compiled]

    def source(self) -> str | None:
        return self._source

    # ---- calling --------------------------------------------------------------------------
    def __call__(self, args, kwargs):
        out = stream = None
        if kwargs:
            out = kwargs.get("out")
            stream = kwargs.get("stream")
            if ("out" in kwargs) + ("stream" in kwargs) != len(kwargs):
                self._reject_kwargs(kwargs)
            if out is not None and type(out) is not tuple:
                out = tuple(out) if isinstance(out, list) else (out,)
        if self._device is not None:
            return self._on_device(args, out, stream)
        # the call shape, inline (this is the hot path): each argument's kind key, then out='s
        get = _KIND_OF
        try:
            if out is None:
                key = tuple([get(type(a)).key(a) for a in args])
            else:
                key = tuple([get(type(a)).key(a) for a in args] + [get(type(o)).key(o) for o in out])
        except AttributeError:  # a type seen for the first time, or not an array
            return self._first_call(args, out, stream)
        if self._multi:  # plans hold functions loaded in one context; arrays must be on its device
            key += (self.engine.context_handle(),)
            self._check_devices(args, out)
        plan = self._plans.get(key)
        if plan is None:
            return self._first_call(args, out, stream)
        return plan.run(args, out, stream)

    def _through_new_outputs(self, args, out, stream):
        """The call into new output arrays, then copied into ``out`` (outputs that overlap inputs)."""
        kw = {} if stream is None else {"stream": stream}
        res = self(args, kw)
        for r, o in zip(res if isinstance(res, tuple) else (res,), out, strict=True):
            _caster(np.dtype(r.dtype), np.dtype(o.dtype))(r, out=o, **kw)
        return out[0] if len(out) == 1 else out

    def _first_call(self, args, out, stream):
        """Slow path: normalise the arguments, make (and keep) the plan for this call shape."""
        if out is not None:
            if all(o is None for o in out):
                out = None
            elif len(out) != self._formula.nout or any(o is None for o in out):
                raise TypeError(f"out= needs {self._formula.nout} array(s), one per output")
            elif any(arrays.kind_of(o) is None or arrays.kind_of(o).name == "scalar" for o in out):
                raise TypeError("out= must be arrays")
        if self._multi is None:
            self._multi = self.engine.device_count > 1
        args = tuple(a if arrays.kind_of(a) is not None else np.asarray(a) for a in args)
        key = self._key(args, out)
        plan = self._plans.get(key) or self._new_plan(args, out, key)
        return plan.run(args, out, stream)

    def _on_device(self, args, out, stream):
        engine = self.engine
        if engine.simulator:
            return self._first_call(args, out, stream)
        with engine.cuda.gpus[int(self._device)]:
            return self._first_call(args, out, stream)

    def _check_devices(self, args, out):
        """With several GPUs: every device array must be on the current device."""
        engine = self.engine
        current = engine.current_device()
        for j, a in enumerate(tuple(args) + tuple(out or ())):
            kind = arrays.kind_of(a)
            if kind is None or not kind.device or kind.ptr is None:
                continue
            dev = engine.device_of(kind.ptr(a))
            if dev is not None and dev != current:
                what = self._formula.args[j] if j < len(args) else "out"
                raise ValueError(f"{self._uf.__name__}(): {what} is on GPU {dev} but GPU {current} is current; "
                                 f"select GPU {dev} (cupy.cuda.Device({dev}) / numba.cuda.gpus[{dev}]), pass "
                                 f"device={dev} to ug.ufunc, or copy the array")

    def _reject_kwargs(self, kwargs):
        unknown = sorted(kwargs.keys() - _ALLOWED_KWARGS)
        hint = " (masks: compute, then select on the device)" if "where" in unknown else ""
        raise TypeError(f"{self._uf.__name__}(): the cuda target does not take {', '.join(map(repr, unknown))}"
                        f"{hint}; it takes {', '.join(sorted(_ALLOWED_KWARGS))}")

    def _key(self, args, out):
        """The call shape (as ``__call__`` computes it), or None for unknown argument types."""
        get = _KIND_OF
        try:
            parts = [get(type(a)).key(a) for a in args]
            if out is not None:
                parts += [get(type(o)).key(o) for o in out]
        except AttributeError:
            return None
        if self._multi:
            parts.append(self.engine.context_handle())
        return tuple(parts)

    # ---- planning -------------------------------------------------------------------------
    def _new_plan(self, args, out, key):
        nin = self._formula.nin
        if len(args) != nin:
            names = ", ".join(self._formula.args)
            raise TypeError(f"{self._uf.__name__}() takes {nin} argument(s) ({names}), got {len(args)}")
        kinds = [arrays.kind_of(a) for a in args]
        is_array = _array_operands(args, kinds)
        out_kinds = [arrays.kind_of(o) for o in out] if out is not None else []
        if self._on_host(kinds, is_array, out_kinds):
            if out is not None:
                result = self._dtypes(args, kinds, is_array)[3]
                shapes = [np.shape(a) for a, arr in zip(args, is_array, strict=True) if arr]
                bshape = self._broadcast(shapes)
                for o, dt in zip(out, result, strict=True):
                    _check_out(np.shape(o), o.dtype, bshape, dt)
            plan = _HostPlan(self, is_array)
        else:
            plan = self._device_plan(args, kinds, is_array, out, out_kinds)
        with self._lock:
            if len(self._plans) >= _MAX_PLANS:  # many call shapes: forget the oldest (kernels stay cached)
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        return plan

    def _on_host(self, kinds, is_array, out_kinds) -> bool:
        """True for host (NumPy) operands only, False for device ones; a TypeError for a mix."""
        host = [k.name == "host" and arr for k, arr in zip(kinds, is_array, strict=True)]
        device = any(k.device for k in kinds) or any(k.device for k in out_kinds)
        if (any(host) or any(k.name == "host" for k in out_kinds)) and device:
            where = [self._formula.args[j] for j in range(len(kinds)) if host[j]]
            raise TypeError(f"{self._uf.__name__}(): host (NumPy) arrays mixed with device arrays; move "
                            f"{', '.join(where) or 'out'} to the device (cupy.asarray / numba.cuda.to_device) "
                            "or pass only host arrays (then ufuncgen copies them in and the result out)")
        return not device

    def _result_dtypes(self, in_dtypes: tuple) -> tuple:
        """Result dtypes of the formula for these input dtypes (NumPy's promotion rules)."""
        return output_dtypes(self._formula, tuple(in_dtypes))

    def _dtypes(self, args, kinds, is_array):
        storage = []
        for a, k, arr in zip(args, kinds, is_array, strict=True):
            if k.name in ("cupy", "numba", "sim", "cai", "host"):
                dt = k.describe(a)[2] if arr else np.asarray(a).dtype
            else:
                dt = None
            storage.append(dt)
        arr_dts = tuple(input_dtype_for(np.empty(0, dt)) for dt in storage if dt is not None)
        compute = []
        for a, dt in zip(args, storage, strict=True):
            if dt is not None:
                compute.append(input_dtype_for(np.empty(0, dt)))
            elif isinstance(a, arrays.SCALAR_TYPES):
                compute.append(literal_dtype(a, arr_dts) if arr_dts else input_dtype_for(a))
            else:
                compute.append(input_dtype_for(a))
        compute = tuple(compute)
        sigs = self._sigs or [(s.inputs, s.outputs) for s in getattr(self._uf, "_sigs", []) or []]
        if sigs:
            compute, result = self._match_signature(compute, args, sigs)
        else:
            result = self._result_dtypes(compute)
        # float16 is stored as float16 (NumPy's result type) but computed in float32, as NumPy does
        kcompute = tuple(np.dtype(np.float32) if d == np.float16 else d for d in compute)
        kresult = result if kcompute == compute else self._result_dtypes(kcompute)
        return storage, kcompute, kresult, tuple(result)

    def _match_signature(self, compute, args, sigs):
        for ins, outs in sigs:
            ok = all(np.can_cast(c, s, "same_kind" if isinstance(a, arrays.SCALAR_TYPES) else "safe")
                     for c, s, a in zip(compute, ins, args, strict=True))
            if ok:
                return tuple(ins), tuple(outs) if outs else self._result_dtypes(tuple(ins))
        have = ", ".join(str(Signature(i, o)) for i, o in sigs)
        got = ", ".join(d.name for d in compute)
        raise TypeError(f"{self._uf.__name__}(): no compiled signature takes inputs ({got}); signatures: {have}")

    def _device_plan(self, args, kinds, is_array, out, out_kinds):
        engine = self.engine
        storage, compute, out_compute, result = self._dtypes(args, kinds, is_array)
        bshape = self._broadcast([kinds[j].describe(args[j])[0] for j in range(len(args)) if is_array[j]])
        # outputs: given (checked) or allocated like the first device input
        result_kind = next((k for k, arr in zip(kinds, is_array, strict=True) if k.device and arr), None)
        if result_kind is None:
            result_kind = next((k for k in kinds if k.device), None) or out_kinds[0]
        out_store = []
        out_desc = []
        order = "C"
        if out is not None:
            for o, k, dt in zip(out, out_kinds, result, strict=True):
                shape, strides, odt = k.describe(o)
                _check_out(shape, odt, bshape, dt)
                out_store.append(odt)
                out_desc.append((shape, strides, odt.itemsize))
        else:
            order = _order_of([kinds[j].describe(args[j]) for j in range(len(args)) if is_array[j]], bshape)
            for dt in result:
                out_store.append(dt)
                out_desc.append((bshape, _contiguous_strides(bshape, dt.itemsize, order), dt.itemsize))
        in_desc = [kinds[j].describe(args[j]) if is_array[j] else None for j in range(len(args))]
        layout = _layout(bshape, [(d[0], d[1], d[2].itemsize) for d in in_desc if d is not None] + out_desc)
        in_kinds = tuple("a" if arr else "s" for arr in is_array)
        in_storage = tuple(storage[j] if is_array[j] else compute[j] for j in range(len(args)))
        ndim = 0 if layout is None else len(layout[0])
        spec = LaunchSpec(in_kinds, in_storage, compute, tuple(out_compute), tuple(out_store), ndim,
                          TUNING["unroll"] if ndim == 0 else 1)
        kernel = self._kernel(spec)
        return _DevicePlan(self, engine, kernel, spec, args, kinds, is_array, in_desc, out, out_desc, bshape,
                           layout, result_kind, out_store, order)

    def _broadcast(self, shapes) -> tuple:
        try:
            return tuple(np.broadcast_shapes(*shapes)) if shapes else ()
        except ValueError:
            raise ValueError(f"{self._uf.__name__}(): operands could not be broadcast together with shapes "
                             f"{' '.join(str(tuple(s)) for s in shapes)}") from None

    def _module_source(self, spec):
        """The generated module (scalar kernel + launcher) for one launch spec."""
        return kernel_module_source(self._formula, spec, cse=self._cse, fastmath=self._fastmath)

    def _kernel(self, spec):
        engine = self.engine
        block = TUNING["sim_block"] if engine.simulator else TUNING[self._block_key]
        key = (self._formula.canonical(), spec.key(), self._fastmath, self._cse, block, engine.cache_key)
        kernel = compiled_kernel(engine, key, lambda: self._module_source(spec), spec, self._fastmath, block,
                                 self._cache)
        self._source = kernel.source.text
        self._compiled.setdefault((tuple(spec.in_compute), tuple(spec.out_compute)), True)
        return kernel


def compiled_kernel(engine, key: tuple, make_source, spec, fastmath: bool, block: int, cache: bool = True):
    """The kernel for ``key`` (memory cache, then disk cache, then numba-cuda), one compile per key.

    ``key`` is the memory key (canonical formula, launch spec, options, block, engine key with the
    compute capability); ``make_source()`` generates the module only when it must be compiled.
    """
    def build():
        src = make_source()
        _COMPILES.add()
        kernel = engine.build(src, spec, fastmath, block)
        kernel.source = src
        return kernel

    def build_cached():
        if engine.simulator:  # the simulator's kernels are Python functions: nothing to keep on disk
            return build()
        from . import cudastore
        return cudastore.cached(engine, key, spec, build, use=cache)

    return KERNELS.get_or_build(key, build_cached)


def compile_count() -> int:
    """CUDA kernels really compiled by numba-cuda in this process (a disk-cache load is not one)."""
    return _COMPILES.value


def _array_operands(args, kinds) -> list:
    """Which arguments are arrays; scalars and 0-d host arrays are values."""
    return [k.name != "scalar" and not (k.name == "host" and a.ndim == 0) for k, a in zip(kinds, args, strict=True)]


def _check_out(shape, out_dtype, bshape, result_dtype) -> None:
    if tuple(shape) != tuple(bshape):
        raise ValueError(f"out= has shape {tuple(shape)}; the result has shape {tuple(bshape)}")
    if not np.can_cast(result_dtype, out_dtype, "same_kind"):
        raise TypeError(f"cannot cast the result from {np.dtype(result_dtype)} to out's dtype {np.dtype(out_dtype)} "
                        "(casting rule 'same_kind')")


def _contiguous_strides(shape, itemsize, order="C"):
    strides = [0] * len(shape)
    acc = itemsize
    dims = range(len(shape) - 1, -1, -1) if order == "C" else range(len(shape))
    for d in dims:
        strides[d] = acc
        acc *= max(shape[d], 1)
    return tuple(strides)


def _order_of(descs, bshape) -> str:
    """'F' when every array input is F-contiguous (and not C) over the full shape, as NumPy's K order."""
    if len(bshape) < 2 or not descs:
        return "C"
    for shape, strides, dt in descs:
        if tuple(shape) != bshape or tuple(strides) != _contiguous_strides(bshape, dt.itemsize, "F"):
            return "C"
        if tuple(strides) == _contiguous_strides(bshape, dt.itemsize, "C"):
            return "C"
    return "F"


def _dense(shape, strides, itemsize) -> bool:
    """Contiguous in some axis order, with positive strides."""
    dims = sorted((s, n) for s, n in zip(strides, shape, strict=True) if n != 1)
    acc = itemsize
    for s, n in dims:
        if s != acc:
            return False
        acc *= n
    return True


def _layout(bshape, operands):
    """None for the flat layout, else (coalesced shape, element strides per operand).

    operands: (shape, byte strides, itemsize) of every array operand, inputs then outputs.
    """
    same = all(tuple(s) == bshape for s, _, _ in operands) and len({tuple(t) for _, t, _ in operands}) <= 1
    if same and all(_dense(s, t, i) for s, t, i in operands):
        return None
    nd = len(bshape)
    per_op = []
    for shape, strides, itemsize in operands:
        pad = nd - len(shape)
        el = []
        for d in range(nd):
            if d < pad:
                el.append(0)
                continue
            n, s = shape[d - pad], strides[d - pad]
            if s % itemsize:
                raise ValueError("the cuda target needs strides that are multiples of the item size")
            el.append(0 if n == 1 else s // itemsize)
        per_op.append(el)
    shape, strides = _coalesce(bshape, per_op)
    return tuple(shape), strides


def _coalesce(bshape, per_op):
    """Drop length-1 loop dimensions, merge neighbours that are contiguous for every operand.

    ``per_op``: each operand's element strides over ``bshape``; returns (shape, strides) as lists.
    """
    dims = [d for d in range(len(bshape)) if bshape[d] != 1]
    shape = [bshape[d] for d in dims]
    strides = [[st[d] for d in dims] for st in per_op]
    if not shape:
        return [1], [[0] for _ in per_op]
    k = len(shape) - 1
    while k > 0:
        if all(st[k - 1] == st[k] * shape[k] for st in strides):
            shape[k - 1] *= shape[k]
            del shape[k]
            for st in strides:
                st[k - 1] = st[k]
                del st[k]
        k -= 1
    return shape, strides


def _flat_view(a: np.ndarray):
    """The simulator's stand-in for a pointer: a 1-d view from the array's lowest address."""
    if a.dtype.kind == "b":
        a = a.view(np.uint8)
    if a.size == 0 or a.ndim == 0:
        return a.reshape(-1)
    low = a[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in a.strides)]
    extent = 1 + sum((n - 1) * abs(s) for n, s in zip(a.shape, a.strides, strict=True)) // a.itemsize
    return np.lib.stride_tricks.as_strided(low, shape=(extent,), strides=(a.itemsize,))


def _low_offset(shape, strides, itemsize) -> int:
    """Elements from the lowest address of an array to its first element."""
    return sum((n - 1) * -s for n, s in zip(shape, strides, strict=True) if s < 0) // itemsize


class _DevicePlan:
    """One call shape on the device: constant parameters set, per-call work reduced to pointers."""

    def __init__(self, disp, engine, kernel, spec, args, kinds, is_array, in_desc, out, out_desc, bshape,
                 layout, result_kind, out_store, order):
        self.nout = len(out_desc)
        self.n = n = int(np.prod(bshape, dtype=np.int64)) if bshape else 1
        self.disp = disp
        self.kernel = kernel
        self.launcher = launcher = kernel.launcher()
        slots = iter(launcher.slots)
        sim = engine.simulator
        next(slots).value = n
        if layout is not None:
            shape, el_strides = layout
            for s in shape:
                next(slots).value = s
        setters = []
        in_ops = []  # (pointer slot, shape, strides, itemsize, same view safe) of array inputs, for _clash_check
        op = 0
        for j, (k, arr) in enumerate(zip(kinds, is_array, strict=True)):
            if not arr:
                setters += self._scalar_setters(slots, j, spec.in_storage[j], args[j], sim)
                continue
            setters.append((next(slots), j, self._pointer_getter(k, sim)))
            in_ops.append((setters[-1][0], in_desc[j][0], in_desc[j][1], in_desc[j][2].itemsize, True))
            if layout is not None:
                shape_j, strides_j, dt = in_desc[j]
                next(slots).value = _low_offset(shape_j, strides_j, dt.itemsize) if sim else 0
                for t in el_strides[op]:
                    next(slots).value = t
            op += 1
        out_setters = []
        for j, (shape_o, strides_o, itemsize) in enumerate(out_desc):
            kind = result_kind if out is None else arrays.kind_of(out[j])
            out_setters.append((next(slots), j, self._pointer_getter(kind, sim)))
            if layout is not None:
                next(slots).value = _low_offset(shape_o, strides_o, itemsize) if sim else 0
                for t in el_strides[op]:
                    next(slots).value = t
            op += 1
        self.fill = _filler(setters, out_setters)
        self.clash = None if out is None else _clash_check(
            in_ops, [(slot, *d) for (slot, _j, _g), d in zip(out_setters, out_desc, strict=True)], sim)
        self.allocs = () if out is not None else tuple(_allocator(result_kind, bshape, dt, order, engine)
                                                         for dt in out_store)
        self.alloc1 = self.allocs[0] if len(self.allocs) == 1 else None
        if sim:
            self.block, self.grid = TUNING["sim_block"], TUNING["sim_grid"]
        else:
            self.block = TUNING["block"]
            per_thread = spec.unroll if layout is None else 1
            need = -(-n // (self.block * per_thread))
            cap = TUNING["blocks_per_sm"] * engine.sm_count if TUNING["blocks_per_sm"] else need
            self.grid = max(1, min(need, cap))
        self.default_stream = _default_stream(result_kind, sim)
        self.sim = sim

    @staticmethod
    def _pointer_getter(kind, sim):
        if sim:
            host = kind.host if kind.host is not None else (lambda a: a)
            return lambda a: _flat_view(host(a))
        return kind.ptr

    @staticmethod
    def _scalar_setters(slots, j, dt, value, sim):
        def plain(a):
            return a[()] if isinstance(a, np.ndarray) else a
        if dt.kind == "c":
            part = np.dtype(np.float32 if dt == np.complex64 else np.float64).type
            re_get = (lambda a: part(plain(a).real)) if sim else (lambda a: plain(a).real)
            im_get = (lambda a: part(plain(a).imag)) if sim else (lambda a: plain(a).imag)
            return [(next(slots), j, re_get), (next(slots), j, im_get)]
        sdt = storage_dtype(dt).type
        if sim or dt.kind == "b":
            return [(next(slots), j, lambda a: sdt(plain(a)))]
        if isinstance(value, np.ndarray):
            return [(next(slots), j, plain)]
        return [(next(slots), j, _identity)]

    def run(self, args, out, stream):
        s = self.default_stream() if stream is None else 0 if self.sim else arrays.stream_handle(stream)
        if out is None:
            out = (self.alloc1(),) if self.alloc1 is not None else tuple([alloc() for alloc in self.allocs])
        if self.n:
            launcher = self.launcher
            with launcher.lock:
                self.fill(args, out)
                clash = self.clash is not None and self.clash()
                if not clash:
                    launcher.launch(self.grid, self.block, s)
            if clash:
                return self.disp._through_new_outputs(args, out, stream)
        return out[0] if self.nout == 1 else out


_CASTERS: dict = {}


def _caster(src: np.dtype, dst: np.dtype):
    """A cuda ufunc copying ``src`` arrays into ``dst`` ones on the device (any layout, same kind)."""
    key = (src.str, dst.str)
    cast = _CASTERS.get(key)
    if cast is None:
        from ..elementwise import ufunc
        cast = ufunc("x", target="cuda")
        cast._device_impl.compile((src,), (dst,))  # the one signature it takes (float16 has no spelling)
        _CASTERS[key] = cast
    return cast


def _extent(shape, strides, itemsize):
    """Bytes from element 0 down to the lowest and up to past the highest element (None: empty)."""
    if any(n == 0 for n in shape):
        return None
    lo = sum((n - 1) * t for n, t in zip(shape, strides, strict=True) if t < 0)
    hi = sum((n - 1) * t for n, t in zip(shape, strides, strict=True) if t > 0) + itemsize
    return lo, hi


def _clash_check(ins, outs, sim: bool):
    """``clash()`` after ``fill``: whether an output overlaps an input, or another output, other
    than as the very same view (element i read, then element i written, by one thread).

    NumPy copies such operands first; the kernel's threads would read elements that others have
    already written (``f(a[:-1], out=a[1:])``).  ``ins``: (pointer slot, shape, byte strides,
    itemsize, whether the very same view is safe); ``outs`` the same without the flag.  On the
    driver the slots hold the address of element 0; in the simulator, arrays, compared with
    NumPy's own overlap test.
    """
    pairs = []
    for k, (oslot, oshape, ostrides, osize) in enumerate(outs):
        oext = _extent(oshape, ostrides, osize)
        if oext is None:
            continue
        for islot, ishape, istrides, isize, same_ok in ins + [o + (False,) for o in outs[:k]]:
            iext = _extent(ishape, istrides, isize)
            if iext is not None:
                same = same_ok and (ishape, istrides, isize) == (oshape, ostrides, osize)
                pairs.append((islot, iext, oslot, oext, same))
    if not pairs:
        return None
    if sim:
        def clash_sim():
            for islot, _ie, oslot, _oe, same in pairs:
                a, b = getattr(islot.value, "_ary", islot.value), getattr(oslot.value, "_ary", oslot.value)
                if np.may_share_memory(a, b) and not (same and _address(a) == _address(b)):
                    return True
            return False
        return clash_sim

    # the hot path of every call with out=: one straight-line expression over the slots, generated
    # from the plan's numbers (never from user text), ~0.2 us rather than ~0.9 us as a loop
    ns: dict = {}
    names: dict = {}  # id(slot) -> local name: each slot is read once
    terms = []
    for islot, (ilo, ihi), oslot, (olo, ohi), same in pairs:
        p, q = (names.setdefault(id(sl), f"v{len(names)}") for sl in (islot, oslot))
        ns["s" + p[1:]], ns["s" + q[1:]] = islot, oslot
        # [p + ilo, p + ihi) and [q + olo, q + ohi) intersect
        term = f"{olo - ihi} < {p} - {q} < {ohi - ilo}"
        terms.append(f"({term} and {p} != {q})" if same else f"({term})")
    reads = "".join(f"    {v} = s{v[1:]}.value\n" for v in names.values())
    code = "def clash():\n" + reads + "    return " + " or ".join(terms) + "\n"
    exec(compile(code, "<ufuncgen cuda overlap check>", "exec"), ns)  # noqa: S102 - our text
    return ns["clash"]


def _address(a) -> int:
    return a.__array_interface__["data"][0]


def _filler(setters, out_setters):
    """``fill(args, outs)``: one straight-line assignment per per-call parameter.

    Generated from the plan (never from user text), so the hot path has no loop or unpacking.
    """
    ns: dict = {}
    lines = ["def fill(args, outs):"]
    for k, (slot, j, get) in enumerate(setters):
        ns[f"s{k}"], ns[f"g{k}"] = slot, get
        lines.append(f"    s{k}.value = " + (f"args[{j}]" if get is _identity else f"g{k}(args[{j}])"))
    for k, (slot, j, get) in enumerate(out_setters):
        ns[f"t{k}"], ns[f"h{k}"] = slot, get
        lines.append(f"    t{k}.value = h{k}(outs[{j}])")
    exec(compile("\n".join(lines) + "\n", "<ufuncgen cuda fill>", "exec"), ns)  # noqa: S102 - our text
    return ns["fill"]


def _identity(a):
    return a


def _default_stream(kind, sim):
    if sim or kind.name != "cupy":
        return _zero
    import cupy
    get = cupy.cuda.get_current_stream
    return lambda: get().ptr


def _zero():
    return 0


def _allocator(kind, shape, dtype, order, engine):
    if kind.name == "cupy":
        import cupy
        empty = cupy.empty
        return lambda: empty(shape, dtype, order)
    device_array = engine.cuda.device_array
    return lambda: device_array(shape, dtype, order=order)


def _dense_host(a: np.ndarray) -> np.ndarray:
    """The array as it will be copied: as is when C- or F-contiguous (F stays F), else a C copy."""
    return a if a.flags.c_contiguous or a.flags.f_contiguous else np.ascontiguousarray(a)


class _HostPlan:
    """NumPy inputs: copy in, run the device plan, copy the result back."""

    def __init__(self, disp, is_array):
        self.disp = disp
        self.is_array = is_array

    def run(self, args, out, stream):
        disp = self.disp
        to_device = disp.engine.cuda.to_device
        dev_args = tuple(to_device(_dense_host(a)) if arr else a for a, arr in zip(args, self.is_array, strict=True))
        if not any(self.is_array):  # scalars only: one element on the device, like NumPy's 0-d
            dev_args = (to_device(np.asarray(args[0])),) + tuple(args[1:]) if args else dev_args
        res = disp(dev_args, {"stream": stream} if stream is not None else {})
        if stream is not None and not disp.engine.simulator:  # the copies below use the default stream
            disp.engine.synchronize(arrays.stream_handle(stream))
        results = res if isinstance(res, tuple) else (res,)
        host = [r.copy_to_host() for r in results]
        if out is not None:
            for o, h in zip(out, host, strict=True):
                np.copyto(o, h, casting="same_kind")
            return out[0] if len(out) == 1 else out
        host = [h[()] if h.ndim == 0 else h for h in host]
        return host[0] if len(host) == 1 else tuple(host)
