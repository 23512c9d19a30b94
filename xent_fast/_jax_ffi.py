"""How xent_fast.jax's traced calls reach the kernels: the host-side computation on
NumPy arrays, the XLA FFI call frame decoded with ctypes (the fallback of the compiled
handler, src/_xla_*.pyx), jax.pure_callback's host functions, and the registration of
the handlers with XLA.

``xent_fast.jax`` holds the losses (their custom JVPs and optax's interface); it calls
``_register`` once at import, with ctypes handlers it makes itself, so that reloading it
registers new ones (XLA keeps every registered handler for the life of the process).
"""

from __future__ import annotations

import ctypes as _ctypes
import os as _os
import warnings as _warnings
from typing import Any as _Any

import numpy as _np
import jax as _jax

from ._cross_entropy import cross_entropy as _np_cross_entropy
from ._cross_entropy import cross_entropy_and_grad as _np_cross_entropy_and_grad
from ._simd import kernels as _kernels

_INT64_MIN = _np.iinfo(_np.int64).min
# The kernels skip rows whose class index equals ignore_index. Rows that a ``where``
# mask leaves out get this value, which no int32 label can hold; int64 labels that hold
# it are caught before the call (see _compute).
_SKIP = _np.int64(_INT64_MIN)


# --- host side: NumPy arrays in, losses (and gradients) written into given arrays ------

def _compute(x: _np.ndarray, y: _np.ndarray, rows: _np.ndarray | None, g: _np.ndarray | None,
             loss: _np.ndarray | None, grad: _np.ndarray | None) -> None:
    """Losses of the rows of ``x`` into ``loss`` and/or their gradient into ``grad``.

    ``x`` (..., C) float32/float64; ``y`` class indices (...) of int32/int64 or
    probabilities of ``x``'s shape and dtype; ``rows`` a boolean mask of the rows to
    count, or None for all; ``g`` the upstream gradient of each row's loss (None: 1).
    ``grad`` None for the loss alone; it may be ``x``'s own memory (the kernels read
    each entry before they write it). ``loss`` None when only the gradient is wanted.
    """
    # As rows: one example (1-D logits) would otherwise give 0-d losses, and NumPy
    # scalars where the masking below writes.
    n = x.shape[-1]
    y_in, rows_in = y, rows
    x = x.reshape(-1, n)
    y = y.reshape(-1) if y.dtype.kind in "iu" else y.reshape(-1, n)
    rows = None if rows is None else rows.reshape(-1)
    g = None if g is None else g.reshape(-1)
    loss = None if loss is None else loss.reshape(-1)
    grad = None if grad is None else grad.reshape(-1, n)
    go = 1.0 if g is None else g
    if y.dtype.kind in "iu":
        t = y if rows is None else _np.where(rows, y, _SKIP)
        if y.dtype.itemsize == 8 and y.size and y.min() == _INT64_MIN:
            _raise_bad_label(y_in, rows_in, n)
        try:
            if grad is None:
                out = _np_cross_entropy(x, t, ignore_index=_INT64_MIN, reduction="none")
            else:
                out = _np_cross_entropy_and_grad(x, t, ignore_index=_INT64_MIN, reduction="none",
                                             grad_output=go, grad_out=grad)[0]
        except ValueError:
            _raise_bad_label(y_in, rows_in, n)
            raise
    else:
        if grad is None:
            out = _np_cross_entropy(x, y, reduction="none")
        else:
            out = _np_cross_entropy_and_grad(x, y, reduction="none", grad_output=go,
                                         grad_out=grad)[0]
        if rows is not None:
            skipped = ~rows
            out = _np.asarray(out)      # rows of 2-D logits: an array already
            out[skipped] = 0
            if grad is not None:
                grad[skipped] = 0
    if loss is not None:
        loss[...] = out


def _raise_bad_label(y: _np.ndarray, rows: _np.ndarray | None, n: int) -> None:
    """Raise the ValueError that names the first counted label outside [0, n)."""
    bad = (y < 0) | (y >= n)
    if rows is not None:
        bad &= rows
    if bad.any():
        pos = _np.unravel_index(int(_np.argmax(bad)), y.shape)
        where = "[" + ", ".join(str(int(i)) for i in pos) + "]" if pos else ""
        raise ValueError(f"labels{where} = {y[pos]} is not a valid class index: "
                         f"it must be in [0, {n})") from None  # not the kernels' wording


def _callback(mode: str) -> _Any:
    """The host function of the ``jax.pure_callback`` mechanism (modes as in _call)."""
    def host(x: _Any, y: _Any, *extra: _Any) -> _Any:
        x, y = _np.asarray(x), _np.asarray(y)
        rows = g = None
        for a in extra:
            a = _np.asarray(a)
            if a.dtype == _np.bool_:
                rows = a
            elif g is None:
                g = a
        loss = None if mode == "grad" else _np.empty(x.shape[:-1], x.dtype)
        grad = None if mode == "loss" else _np.empty(x.shape, x.dtype)
        _compute(x, y, rows, g, loss, grad)
        return tuple(a for a in (loss, grad) if a is not None)
    return host


# --- the XLA FFI handler -----------------------------------------------------------------
# Declarations of the parts of XLA's FFI C ABI (xla/ffi/api/c_api.h, API version 0.x)
# that the handler reads. Every struct starts with its size, which the handler checks
# against these declarations before it reads a field.

class _Ext(_ctypes.Structure):
    pass


_Ext._fields_ = [("struct_size", _ctypes.c_size_t), ("type", _ctypes.c_int),
                 ("next", _ctypes.POINTER(_Ext))]


class _Version(_ctypes.Structure):
    _fields_ = [("struct_size", _ctypes.c_size_t), ("extension_start", _ctypes.c_void_p),
                ("major", _ctypes.c_int), ("minor", _ctypes.c_int)]


class _Metadata(_ctypes.Structure):
    _fields_ = [("struct_size", _ctypes.c_size_t), ("api_version", _Version),
                ("traits", _ctypes.c_uint32)]


class _MetadataExt(_ctypes.Structure):
    _fields_ = [("base", _Ext), ("metadata", _ctypes.POINTER(_Metadata))]


class _Buffer(_ctypes.Structure):
    _fields_ = [("struct_size", _ctypes.c_size_t), ("extension_start", _ctypes.c_void_p),
                ("dtype", _ctypes.c_int), ("data", _ctypes.c_void_p), ("rank", _ctypes.c_int64),
                ("dims", _ctypes.POINTER(_ctypes.c_int64))]


class _List(_ctypes.Structure):   # XLA_FFI_Args and XLA_FFI_Rets have one layout
    _fields_ = [("struct_size", _ctypes.c_size_t), ("extension_start", _ctypes.c_void_p),
                ("size", _ctypes.c_int64), ("types", _ctypes.POINTER(_ctypes.c_int)),
                ("items", _ctypes.POINTER(_ctypes.POINTER(_Buffer)))]


class _Attrs(_ctypes.Structure):
    _fields_ = [("struct_size", _ctypes.c_size_t), ("extension_start", _ctypes.c_void_p),
                ("size", _ctypes.c_int64), ("types", _ctypes.c_void_p),
                ("names", _ctypes.c_void_p), ("attrs", _ctypes.c_void_p)]


class _ErrorArgs(_ctypes.Structure):
    _fields_ = [("struct_size", _ctypes.c_size_t), ("extension_start", _ctypes.c_void_p),
                ("message", _ctypes.c_char_p), ("errc", _ctypes.c_int)]


_ErrorCreate = _ctypes.CFUNCTYPE(_ctypes.c_void_p, _ctypes.POINTER(_ErrorArgs))


class _Api(_ctypes.Structure):
    _fields_ = [("struct_size", _ctypes.c_size_t), ("extension_start", _ctypes.c_void_p),
                ("api_version", _Version), ("internal_api", _ctypes.c_void_p),
                ("error_create", _ErrorCreate)]


class _CallFrame(_ctypes.Structure):
    _fields_ = [("struct_size", _ctypes.c_size_t), ("extension_start", _ctypes.POINTER(_Ext)),
                ("api", _ctypes.POINTER(_Api)), ("ctx", _ctypes.c_void_p), ("stage", _ctypes.c_int),
                ("args", _List), ("rets", _List), ("attrs", _Attrs)]


_EXT_METADATA, _STAGE_EXECUTE, _KIND_BUFFER = 1, 3, 1
_ERR_INVALID_ARGUMENT, _ERR_INTERNAL = 3, 13
# XLA_FFI_DataType -> NumPy dtype, for the types the handler is given.
_DTYPES = {1: _np.dtype(_np.bool_), 4: _np.dtype(_np.int32), 5: _np.dtype(_np.int64),
           11: _np.dtype(_np.float32), 12: _np.dtype(_np.float64)}
# Bytes of each struct up to the last field read here.
_FRAME_SIZE = _CallFrame.rets.offset + _ctypes.sizeof(_List)
_API_SIZE = _ctypes.sizeof(_Api)
_BUFFER_SIZE = _ctypes.sizeof(_Buffer)


class _Memory:
    """NumPy's view of one XLA buffer (the array interface; no copy)."""
    __slots__ = ("__array_interface__",)

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: _np.dtype, readonly: bool):
        self.__array_interface__ = {"data": (ptr, readonly), "shape": shape,
                                    "typestr": dtype.str, "version": 3}


def _view(buf: _Any, readonly: bool) -> _np.ndarray:
    b = buf.contents
    if b.struct_size < _BUFFER_SIZE:
        raise RuntimeError("XLA FFI buffer struct is smaller than expected")
    dtype = _DTYPES.get(b.dtype)
    if dtype is None:
        raise TypeError(f"unexpected XLA data type {b.dtype}")
    shape = tuple(b.dims[i] for i in range(b.rank))
    if 0 in shape or not b.data:
        return _np.zeros(shape, dtype)
    return _np.asarray(_Memory(b.data, shape, dtype, readonly))


def _execute(frame: _Any) -> None:
    # Arguments: logits, labels, then optionally the row mask (bool) and the upstream
    # gradient of each row (float). Results: the losses and/or the gradient, told apart
    # by their rank.
    args, rets = frame.args, frame.rets
    for lst in (args, rets):
        if lst.size and any(lst.types[i] != _KIND_BUFFER for i in range(lst.size)):
            raise TypeError("the xent_fast FFI call takes and returns buffers only")
    if not 2 <= args.size <= 5 or not 1 <= rets.size <= 2:
        raise TypeError(f"the xent_fast FFI call takes 2 to 5 buffers and returns 1 or 2, "
                        f"got {args.size} and {rets.size}")
    x = _view(args.items[0], True)
    y = _view(args.items[1], True)
    rows = g = None
    for i in range(2, args.size):
        a = _view(args.items[i], True)
        if a.dtype == _np.bool_:
            rows = a
        elif g is None:
            g = a   # a second float array only orders the call (see _call)
    loss = grad = None
    for i in range(rets.size):
        r = _view(rets.items[i], False)
        if r.ndim == x.ndim:
            grad = r
        else:
            loss = r
    if grad is not None and grad.size and grad.ctypes.data == x.ctypes.data:
        x = grad  # the gradient replaces the logits (input_output_aliases)
    _compute(x, y, rows, g, loss, grad)


def _binary_compute(params: _np.ndarray, x: _np.ndarray, y: _np.ndarray, g: _np.ndarray | None,
                    out: _np.ndarray) -> None:
    """The binary kernels on NumPy arrays: params (..., 4) = (mode, kind, alpha, gamma)
    (leading dimensions are copies that vmap adds), mode 0 the losses of x against y
    into ``out``, mode 1 the gradient scaled elementwise by ``g`` (out may be x)."""
    mode, kind, alpha, gamma = (float(v) for v in params.reshape(-1, 4)[0])
    if x.size == 0:
        return
    two = [None if a is None else a.reshape(1, -1) for a in (x, y, g, out)]
    _binary_kernel()(int(kind), two[0], two[1], None, None, two[3] if mode == 0 else None,
                     two[3] if mode == 1 else None, two[2], 1.0,
                     alpha if alpha >= 0 else -1.0, gamma, 0)


def _binary_kernel() -> _Any:
    return _kernels("_binary_kernels").binary_loss


def _binary_callback(mode: int) -> _Any:
    """The host function of the ``jax.pure_callback`` mechanism for the binary losses."""
    def host(params: _Any, x: _Any, y: _Any, *extra: _Any) -> _Any:
        x, y = _np.asarray(x), _np.asarray(y)
        g = _np.asarray(extra[0]) if mode == 1 else None
        out = _np.empty(x.shape, x.dtype)
        _binary_compute(_np.asarray(params), x, y, g, out)
        return (out,)
    return host


def _binary_execute(frame: _Any) -> None:
    # Arguments: params, logits, labels, then for the gradient the upstream gradient
    # (and an argument that only orders the call); one result.
    args, rets = frame.args, frame.rets
    for lst in (args, rets):
        if lst.size and any(lst.types[i] != _KIND_BUFFER for i in range(lst.size)):
            raise TypeError("the xent_fast FFI call takes and returns buffers only")
    if not 3 <= args.size <= 5 or rets.size != 1:
        raise TypeError(f"the xent_fast FFI call takes 3 to 5 buffers and returns 1, "
                        f"got {args.size} and {rets.size}")
    params = _view(args.items[0], True)
    x = _view(args.items[1], True)
    y = _view(args.items[2], True)
    g = _view(args.items[3], True) if args.size > 3 else None
    out = _view(rets.items[0], False)
    if (params.shape[-1:] != (4,) or params.dtype != x.dtype or y.shape != x.shape
            or out.shape != x.shape or y.dtype != x.dtype or out.dtype != x.dtype
            or x.dtype.kind != "f" or (g is not None and (g.shape, g.dtype) != (x.shape, x.dtype))):
        raise TypeError("the xent_fast FFI call got buffers of unexpected shapes or types")
    if params.size and params.reshape(-1, 4)[0, 0] == 1 and g is None:
        raise TypeError("the xent_fast FFI call got no upstream gradient")
    if out.size and out.ctypes.data == x.ctypes.data:
        x = out  # the gradient replaces the logits (input_output_aliases)
    _binary_compute(params, x, y, g, out)


def _error(frame: _Any, exc: BaseException) -> int | None:
    errc = _ERR_INVALID_ARGUMENT if isinstance(exc, (ValueError, TypeError)) else _ERR_INTERNAL
    api = frame.api
    if not api or api.contents.struct_size < _API_SIZE:
        return None
    message = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    args = _ErrorArgs(_ctypes.sizeof(_ErrorArgs), None, message.encode(), errc)
    return api.contents.error_create(_ctypes.byref(args))  # type: ignore[no-any-return]


def _ctypes_handler(execute: _Any) -> _Any:
    """An XLA FFI handler, a ctypes callback that decodes the call frame and runs
    ``execute(frame)`` (Python, under the GIL, on XLA's thread)."""
    @_ctypes.CFUNCTYPE(_ctypes.c_void_p, _ctypes.POINTER(_CallFrame))
    def handler(frame_ptr: _Any) -> int | None:
        return _handle(frame_ptr, execute)
    return handler


def _handle(frame_ptr: _Any, execute: _Any) -> int | None:
    frame = frame_ptr.contents
    try:
        if frame.struct_size < _FRAME_SIZE:
            raise RuntimeError("XLA FFI call frame is smaller than expected")
        api = frame.api.contents
        if api.api_version.major != 0:
            raise RuntimeError(
                f"XLA FFI API version {api.api_version.major}.{api.api_version.minor} is not "
                "supported; set XENT_FAST_JAX_MECHANISM=callback")
        ext = frame.extension_start
        if ext and ext.contents.type == _EXT_METADATA:
            # XLA asks which FFI version the handler speaks: the one it runs (the
            # handler reads only fields whose size it checks), and no traits.
            md = _ctypes.cast(ext, _ctypes.POINTER(_MetadataExt)).contents.metadata.contents
            md.api_version.struct_size = _ctypes.sizeof(_Version)
            md.api_version.extension_start = None
            md.api_version.major = api.api_version.major
            md.api_version.minor = api.api_version.minor
            md.traits = 0
            return None
        if frame.stage == _STAGE_EXECUTE:
            execute(frame)
        return None
    except BaseException as exc:  # noqa: BLE001 - a ctypes callback must not raise
        return _error(frame, exc)


def _register_ctypes(name: str, handler: _Any) -> str:
    """Register a ctypes handler; its target name. XLA keeps a handler for the life of
    the process and refuses a second, different one under the same name. This module
    may be reloaded or imported afresh, which makes a new handler: it is registered
    under a name of its own, and no handler is ever freed (each gets a reference that
    is never released)."""
    capsule = _jax.ffi.pycapsule(_ctypes.cast(handler, _ctypes.c_void_p).value)
    error: Exception | None = None
    for target in (name, f"{name}_{id(handler):x}"):
        try:
            _jax.ffi.register_ffi_target(target, capsule, platform="cpu")
        except Exception as exc:
            error = exc
            continue
        _ctypes.pythonapi.Py_IncRef(_ctypes.py_object(handler))
        return target
    raise RuntimeError(str(error))


def _register_compiled(family: str) -> str:
    """Register the compiled handler of the SIMD level in use; its target name. Its
    address never changes in a process (the module is never unloaded), so registering
    it again under the same name, after a reload, is accepted."""
    module = _kernels(f"_xla_{family}")
    name = f"xent_fast_{family}_{module.__name__.rsplit('_', 1)[-1]}"
    if not module.__name__.endswith(("avx2", "avx512")):
        name = f"xent_fast_{family}_baseline"
    _jax.ffi.register_ffi_target(name, module.handler_capsule(), platform="cpu")
    return name


def _register(handler: _Any, binary_handler: _Any) -> tuple[str, dict[str, dict[str, str]]]:
    """Register the FFI handlers: (the mechanism in use, {mechanism: {family: target}}).

    ``"ffi"``: the compiled handlers (src/_xla_*.pyx); ``"ctypes"``: the ctypes
    handlers above (also registered when the compiled ones are, as their fallback);
    ``"callback"``: jax.pure_callback, which needs no registration. The distillation
    loss has a compiled handler only (family ``"distill"``); under the other two it
    runs through jax.pure_callback.
    """
    wanted = _os.environ.get("XENT_FAST_JAX_MECHANISM", "").strip().lower()
    if wanted == "callback":
        return "callback", {}
    if wanted not in ("", "ffi", "ctypes"):
        _warnings.warn(f"XENT_FAST_JAX_MECHANISM={wanted!r} is not 'ffi', 'ctypes' or "
                      "'callback'; using the default", RuntimeWarning, stacklevel=3)
        wanted = ""
    targets: dict[str, dict[str, str]] = {}
    errors = []
    if wanted != "ctypes":
        try:
            targets["ffi"] = {"softmax": _register_compiled("cross_entropy"),
                              "binary": _register_compiled("binary")}
        except Exception as exc:  # a build without the handlers, an older or changed JAX
            errors.append(exc)
        if "ffi" in targets:
            # Apart from the others: without it (a build older than its handler) only
            # distillation_loss falls back to jax.pure_callback.
            try:
                targets["ffi"]["distill"] = _register_compiled("distill")
            except Exception:
                pass
    try:
        targets["ctypes"] = {
            "softmax": _register_ctypes("xent_fast_softmax_cross_entropy", handler),
            "binary": _register_ctypes("xent_fast_sigmoid_binary", binary_handler)}
    except Exception as exc:
        errors.append(exc)
    for mech in ("ffi", "ctypes"):
        if mech in targets:
            if wanted == "ffi" and mech != "ffi":
                _warnings.warn(f"xent_fast.jax could not register its compiled XLA FFI "
                              f"handler ({errors[0]}); using the ctypes one, which runs "
                              "Python on every call", RuntimeWarning, stacklevel=3)
            return mech, targets
    _warnings.warn(f"xent_fast.jax could not register its XLA FFI handler ({errors[-1]}); "
                  "using jax.pure_callback, which copies every input and output",
                  RuntimeWarning, stacklevel=3)
    return "callback", targets

