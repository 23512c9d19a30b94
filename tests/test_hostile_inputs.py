"""Hostile option values, table-driven (issue 17).

Every keyword option of every public function gets every value of ``VALUES``: wrong
types (a string, bytes, a list of strings, a dict, an object, None, bools, a complex
number), out-of-range and non-finite numbers, huge numbers (1e300, 2**70, 10**30),
0-d / 1-element / 2-element NumPy arrays and NumPy scalars. The option's *kind*
(``KINDS``: a bounded real, an int, a thread count, a reduction, a weight array, an
output array, ...) decides what each value should do:

- ``OK``: the call succeeds. NumPy users expect a NumPy scalar, and a 0-d array, of
  a valid value to be accepted wherever a Python scalar is;
- ``TypeError`` / ``ValueError`` / ``ERR`` (either): the call raises that, and the
  message names the option (a 1- or 2-element array where a scalar is wanted is a
  mistake, never NumPy's "truth value of an array is ambiguous").

A final group checks the SciPy conventions on an empty class axis (``logsumexp`` gives
``-inf``, ``softmax``/``log_softmax`` an empty result, the info measures 0 as
``scipy.stats.entropy``) and that every option in the signatures and in the API
contract has a kind in the table, so that an option added later is covered.
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest

import xent_fast as xf
from xent_fast import info

N, C = 3, 4   # base inputs are (N, C) (cross_entropy's (C, C)); no axis has length 1 or 2,
#               so a 2-element array never broadcasts

OK = "ok"
ERR = (TypeError, ValueError)


# ------------------------------------------------------------------ base calls

def _x():
    return np.random.default_rng(0).standard_normal((N, C))


def _t():
    return np.array([0, 3, 1])


def _xsq():
    """Square (C, C) logits: with _tsq they are a valid call whichever axis holds the classes."""
    return np.random.default_rng(4).standard_normal((C, C))


def _tsq():
    return np.array([0, 3, 1, 2])


def _probs():
    return np.random.default_rng(1).uniform(0.05, 0.95, (N, C))


def _y():
    return (np.random.default_rng(2).random((N, C)) > 0.5).astype(np.float64)


def _p():
    p = np.random.default_rng(3).uniform(0.1, 1.0, (N, C))
    return p / p.sum(-1, keepdims=True)


# name -> (callable, builder of the valid positional arguments)
FUNCTIONS = {
    "softmax": (xf.softmax, lambda: (_x(),)),
    "log_softmax": (xf.log_softmax, lambda: (_x(),)),
    "logsumexp": (xf.logsumexp, lambda: (_x(),)),
    "cross_entropy": (xf.cross_entropy, lambda: (_xsq(), _tsq())),
    "cross_entropy_and_grad": (xf.cross_entropy_and_grad, lambda: (_xsq(), _tsq())),
    "binary_cross_entropy": (xf.binary_cross_entropy, lambda: (_probs(), _y())),
    "binary_cross_entropy_and_grad": (xf.binary_cross_entropy_and_grad, lambda: (_probs(), _y())),
    "binary_cross_entropy_with_logits": (xf.binary_cross_entropy_with_logits, lambda: (_x(), _y())),
    "binary_cross_entropy_with_logits_and_grad": (
        xf.binary_cross_entropy_with_logits_and_grad, lambda: (_x(), _y())),
    "sigmoid_focal_loss": (xf.sigmoid_focal_loss, lambda: (_x(), _y())),
    "sigmoid_focal_loss_and_grad": (xf.sigmoid_focal_loss_and_grad, lambda: (_x(), _y())),
    # hidden (N, H=C), linear_weight (V=C, H): the class kinds' (C,) shapes fit the bias
    "linear_cross_entropy": (xf.linear_cross_entropy, lambda: (_x(), _xsq(), _t())),
    "linear_cross_entropy_and_grad": (xf.linear_cross_entropy_and_grad,
                                      lambda: (_x(), _xsq(), _t())),
    "distillation_loss": (xf.distillation_loss, lambda: (_x(), _x()[::-1].copy())),
    "distillation_loss_and_grad": (xf.distillation_loss_and_grad,
                                   lambda: (_x(), _x()[::-1].copy())),
    "score": (xf.score, lambda: (_x(), _t())),
    "ScoreTotals": (xf.ScoreTotals, lambda: ()),
    "info.surprisal": (info.surprisal, lambda: (_p(),)),
    "info.entropy": (info.entropy, lambda: (_p(),)),
    "info.cross_entropy": (info.cross_entropy, lambda: (_p(), _p()[::-1].copy())),
    "info.kl_divergence": (info.kl_divergence, lambda: (_p(), _p()[::-1].copy())),
}
# Exports with no options to check (the Scores constructor takes the kernel's arrays).
NO_OPTIONS = {"__version__", "config", "show_config", "Scores", "info"}


# ------------------------------------------------------------------ hostile values
# Each factory takes the kind's valid sample (used for the 0-d, 1- and 2-element arrays
# and the string forms) and the kind's values for the NumPy scalars.

class _Opaque:
    def __repr__(self):
        return "<opaque object>"


VALUES = {
    "str": lambda k: str(k.valid),                 # a parseable string: "0.1", "2", ...
    "bytes": lambda k: str(k.valid).encode(),
    "list_of_str": lambda k: ["a", "b"],
    "dict": lambda k: {"a": 1},
    "object": lambda k: _Opaque(),
    "None": lambda k: None,
    "True": lambda k: True,
    "False": lambda k: False,
    "np.bool_": lambda k: np.bool_(True),
    "complex": lambda k: complex(k.f32, 1.0),
    "nan": lambda k: math.nan,
    "+inf": lambda k: math.inf,
    "-inf": lambda k: -math.inf,
    "-0.1": lambda k: -0.1,
    "-1": lambda k: -1,
    "0": lambda k: 0,
    "0.0": lambda k: 0.0,
    "1": lambda k: 1,
    "1.5": lambda k: 1.5,
    "2.0": lambda k: 2.0,
    "1e300": lambda k: 1e300,
    "-1e300": lambda k: -1e300,
    "2**70": lambda k: 2**70,
    "-2**70": lambda k: -2**70,
    "10**30": lambda k: 10**30,
    "0d_valid": lambda k: np.array(k.valid),
    "0d_nan": lambda k: np.array(math.nan),
    "1elem": lambda k: np.array([k.valid]),
    "2elem": lambda k: np.array([k.valid, k.valid]),
    "np.float32": lambda k: np.float32(k.f32),
    "np.float64": lambda k: np.float64(k.f32),
    "np.int64": lambda k: np.int64(k.i64),
}


def _scalar(v):
    """('none'|'bool'|'junk'|'array'|'float'|'int', python value) of a hostile value."""
    if v is None:
        return "none", None
    if isinstance(v, (bool, np.bool_)):
        return "bool", v
    if isinstance(v, np.ndarray):
        if v.ndim:
            return "array", v
        if v.dtype.kind in "fiu":
            return _scalar(v[()])
        return "junk", v
    if isinstance(v, (int, np.integer)):
        return "int", int(v)
    if isinstance(v, (float, np.floating)):
        return "float", float(v)
    return "junk", v          # str, bytes, list, dict, object, complex


# ------------------------------------------------------------------ option kinds

class Real:
    """A finite real scalar in a range, other than ``exclude``; None if none_ok."""

    def __init__(self, lo=None, hi=None, lo_open=False, none_ok=False, exclude=(),
                 valid=0.5, f32=0.5, i64=1):
        self.lo, self.hi, self.lo_open, self.none_ok = lo, hi, lo_open, none_ok
        self.exclude = exclude
        self.valid, self.f32, self.i64 = valid, f32, i64

    def expect(self, v):
        kind, x = _scalar(v)
        if kind == "none":
            return OK if self.none_ok else TypeError
        if kind in ("bool", "junk"):
            return TypeError
        if kind == "array":
            return ERR
        x = float(x)
        if not math.isfinite(x):
            return ValueError
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return ValueError
        if self.hi is not None and x > self.hi:
            return ValueError
        return ValueError if x in self.exclude else OK


class Int:
    """An int in [lo, hi] (no bound where None) or one of ``also``; None if none_ok."""

    def __init__(self, lo=None, hi=None, also=(), none_ok=False, valid=1):
        self.lo, self.hi, self.also, self.none_ok = lo, hi, also, none_ok
        self.valid, self.f32, self.i64 = valid, float(valid), valid

    def expect(self, v):
        kind, x = _scalar(v)
        if kind == "none":
            return OK if self.none_ok else TypeError
        if kind in ("bool", "junk", "float"):
            return TypeError
        if kind == "array":
            return ERR
        if x in self.also:
            return OK
        if (self.lo is not None and x < self.lo) or (self.hi is not None and x > self.hi):
            return ValueError
        return OK


class Bool:
    """A flag: a bool or np.bool_ (a 0-d bool array too); 0, 1 or "yes" is a TypeError,
    as PyTorch's keepdim (NumPy would take any truthy object)."""
    valid, f32, i64 = True, 0.5, 1

    def expect(self, v):
        kind, _ = _scalar(v)
        if kind == "bool":
            return OK
        return ERR if kind == "array" else TypeError


class Reduction:
    valid, f32, i64 = "sum", 0.5, 1

    def expect(self, v):
        if isinstance(v, str) and v in ("mean", "sum", "none"):   # np.str_ too
            return OK
        return ERR


class ClassWeight:
    """cross_entropy's weight: an array of shape (C,), or None."""
    valid, f32, i64 = 1.5, 1.5, 2

    def expect(self, v):
        kind, _ = _scalar(v)
        if kind == "none":
            return OK
        if kind == "junk":
            return ERR if isinstance(v, np.ndarray) else TypeError
        return ValueError if kind == "array" else ERR      # a scalar or a bool: wrong shape


class BroadcastWeight:
    """The binary losses' weight / pos_weight: real, broadcast to the input; None."""
    valid, f32, i64 = 1.5, 1.5, 2

    def expect(self, v):
        kind, _ = _scalar(v)
        if kind == "none":
            return OK
        if kind in ("junk", "bool"):
            return TypeError
        if kind == "array":
            return OK if v.size == 1 else ValueError   # (1,) broadcasts, (2,) does not
        return OK          # a real scalar, NaN and infinities included (data, as in torch)


class RowMask:
    """distillation's target: class indices of shape (N,) that mask ignore_index rows, or
    None; no scalar or other shape is one."""
    valid, f32, i64 = 1, 1.0, 1

    def expect(self, v):
        kind, _ = _scalar(v)
        return OK if kind == "none" else ERR


class GradOutput:
    """The upstream gradient: any real scalar (NaN and inf propagate, as in autograd);
    an array only of the loss's shape with reduction="none"."""
    valid, f32, i64 = 0.5, 0.5, 2

    def expect(self, v):
        kind, _ = _scalar(v)
        if kind in ("none", "junk", "bool"):
            return TypeError
        if kind == "array":
            return ERR
        return OK


class Out:
    """An output array: None, or a C-contiguous writable ndarray of the exact shape."""
    valid, f32, i64 = 0.5, 0.5, 1

    def expect(self, v):
        if v is None:
            return OK
        if not isinstance(v, np.ndarray):
            return TypeError
        return ERR


LABEL_SMOOTHING = Real(0.0, 1.0, valid=0.1, f32=0.1, i64=1)
NONNEG = Real(0.0, valid=1e-3, f32=1e-3, i64=2)
SOFTCAP = Real(0.0, lo_open=True, none_ok=True, valid=30.0, f32=30.0, i64=30)
ALPHA = Real(hi=1.0, valid=0.25, f32=0.25, i64=-1)        # alpha < 0 disables the balancing
GAMMA = Real(0.0, valid=2.0, f32=2.0, i64=2)
BASE = Real(0.0, lo_open=True, none_ok=True, exclude=(1.0,), valid=2, f32=2.0, i64=10)
INT64 = Int(-(2**63), 2**63 - 1, valid=-100)
K = Int(1, valid=2)             # k may exceed C (documented: every target is then in the top k)
THREADS = Int(1, also=(-1,), none_ok=True, valid=1)
TEMPERATURE = Real(0.0, lo_open=True, valid=2.0, f32=2.0, i64=2)
BETA = Real(0.0, 1.0, valid=0.5, f32=0.5, i64=1)
POSITIVE_INT_OR_NONE = Int(1, none_ok=True, valid=64)
AXIS = Int(-2, 1, valid=-1)     # the base inputs are 2-D
AXES = Int(-2, 1, none_ok=True, valid=-1)    # also a tuple of axes (extra cases), as SciPy

# option name -> kind; "function:option" overrides a name for one function.
KINDS = {
    "label_smoothing": LABEL_SMOOTHING,
    "z_loss": NONNEG,
    "softcap": SOFTCAP,
    "alpha": ALPHA,
    "gamma": GAMMA,
    "base": BASE,
    "ignore_index": INT64,
    "k": K,
    "ScoreTotals:k": Int(1, none_ok=True, valid=2),
    "n_threads": THREADS,
    "reduction": Reduction(),
    "keepdims": Bool(),
    "weight": BroadcastWeight(),
    "cross_entropy:weight": ClassWeight(),
    "cross_entropy_and_grad:weight": ClassWeight(),
    "linear_cross_entropy:weight": ClassWeight(),
    "linear_cross_entropy_and_grad:weight": ClassWeight(),
    "linear_bias": ClassWeight(),
    "pos_weight": BroadcastWeight(),
    "grad_output": GradOutput(),
    "out": Out(),
    "grad_out": Out(),
    # options of the API contract that a signature may not have yet
    "axis": AXIS,
    "softmax:axis": AXES,
    "log_softmax:axis": AXES,
    "logsumexp:axis": AXES,
    "info.entropy:axis": AXES,
    "info.cross_entropy:axis": AXES,
    "info.kl_divergence:axis": AXES,
    "temperature": TEMPERATURE,
    "ece_bins": Int(1, valid=15),
    "beta": BETA,
    "chunk_rows": POSITIVE_INT_OR_NONE,
    "distillation_loss:target": RowMask(),
    "distillation_loss_and_grad:target": RowMask(),
}


def _kind(fname, option):
    return KINDS.get(f"{fname}:{option}", KINDS.get(option))


def _options(fn):
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind is p.KEYWORD_ONLY or (p.default is not p.empty and p.name != "self")]


def _readonly(a):
    a.setflags(write=False)
    return a


# Extra values of one kind of option: (id, zero-argument factory, expected outcome).
def _extra_cases(fname, kind):
    if isinstance(kind, Out):
        shape = {"logsumexp": (N,), "cross_entropy_and_grad": (C, C)}.get(fname, (N, C))
        yield "right", lambda: np.zeros(shape), OK
        yield "float32", lambda: np.zeros(shape, np.float32), TypeError
        yield "int64", lambda: np.zeros(shape, np.int64), TypeError
        yield "readonly", lambda: _readonly(np.zeros(shape)), ValueError
        yield "strided", lambda: np.zeros(shape + (2,))[..., 0], ValueError
        yield "wrong_shape", lambda: np.zeros((N + 2, C)), ValueError
        yield "list", lambda: np.zeros(shape).tolist(), TypeError
    elif isinstance(kind, RowMask):
        yield "right", lambda: _t(), OK
        yield "ignored_rows", lambda: np.array([-100, 3, -100]), OK
        yield "int32", lambda: _t().astype(np.int32), OK
        yield "out_of_range", lambda: np.array([0, C, 1]), ValueError
        yield "negative", lambda: np.array([0, -1, 1]), ValueError
        yield "wrong_len", lambda: np.array([0, 1]), ValueError
        yield "2d", lambda: _t()[None], ValueError
        yield "float_array", lambda: _t().astype(np.float64), TypeError
        yield "str_array", lambda: np.array(["0", "1", "2"]), TypeError
    elif isinstance(kind, ClassWeight):
        yield "right", lambda: np.linspace(0.5, 2.0, C), OK
        yield "list", lambda: [1.0] * C, OK
        yield "float32", lambda: np.ones(C, np.float32), OK
        yield "wrong_len", lambda: np.ones(C + 1), ValueError
        yield "2d", lambda: np.ones((1, C)), ValueError
        yield "str_array", lambda: np.array(["1"] * C), TypeError
        yield "complex_array", lambda: np.ones(C, complex), TypeError
        yield "object_array", lambda: np.ones(C, object), TypeError
    elif isinstance(kind, BroadcastWeight):
        yield "per_class", lambda: np.linspace(0.5, 2.0, C), OK
        yield "per_row", lambda: np.ones((N, 1)), OK
        yield "full", lambda: np.ones((N, C)), OK
        yield "list", lambda: [1.0] * C, OK
        yield "too_many_dims", lambda: np.ones((2, N, C)), ValueError
        yield "str_array", lambda: np.array(["1"] * C), TypeError
        yield "complex_array", lambda: np.ones(C, complex), TypeError
        yield "object_array", lambda: np.ones(C, object), TypeError
    elif isinstance(kind, Reduction):
        yield "mean", lambda: "mean", OK
        yield "none", lambda: "none", OK
        yield "np.str_", lambda: np.str_("sum"), OK
        yield "bogus", lambda: "bogus", ValueError
        yield "MEAN", lambda: "MEAN", ValueError
        yield "0d_str", lambda: np.array("sum"), ERR
    elif kind is AXES:
        yield "tuple", lambda: (0, 1), OK
        yield "tuple_1", lambda: (-1,), OK
        yield "np_tuple", lambda: (np.int64(1), np.int32(0)), OK
        yield "empty_tuple", lambda: (), OK     # no outcome axis: each element alone
        yield "repeated", lambda: (1, -1), ValueError
        yield "out_of_range", lambda: (0, 2), ValueError
        yield "list", lambda: [0, 1], TypeError
        yield "tuple_of_float", lambda: (0.0,), TypeError
    elif isinstance(kind, GradOutput):
        yield "array_with_none", lambda: np.full((N, C) if "binary" in fname or "focal" in fname
                                                 else (C,), 0.5), (
            OK if "focal" in fname else ValueError)     # focal's default reduction is "none"


def _cases():
    for fname, (fn, build) in FUNCTIONS.items():
        for option in _options(fn):
            kind = _kind(fname, option)
            if kind is None:
                continue            # test_every_option_has_a_kind reports it
            for vid, make in VALUES.items():
                value = make(kind)
                yield pytest.param(fname, option, (lambda m=make, k=kind: m(k)), kind.expect(value),
                                   id=f"{fname}-{option}-{vid}")
            for vid, make, expected in _extra_cases(fname, kind):
                yield pytest.param(fname, option, make, expected, id=f"{fname}-{option}-{vid}")


CASES = list(_cases())


def _name(expected):
    if expected == OK:
        return "OK"
    if expected == ERR:
        return "TypeError or ValueError"
    return expected.__name__


@pytest.mark.parametrize("fname,option,make,expected", CASES)
def test_hostile_option(fname, option, make, expected):
    fn, build = FUNCTIONS[fname]
    args = build()
    value = make()
    with warnings.catch_warnings():
        # NumPy's "conversion of an array with ndim > 0 to a scalar is deprecated" would
        # hide a 1-element array silently taken as a scalar: make it fail the case.
        warnings.simplefilter("error", DeprecationWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning)   # overflow in results
        try:
            fn(*args, **{option: value})
        except Exception as exc:   # noqa: BLE001 - the type is what is checked
            if expected == OK:
                pytest.fail(f"{fname}({option}={value!r}) should succeed, raised "
                            f"{type(exc).__name__}: {exc}")
            want = expected if isinstance(expected, tuple) else (expected,)
            if not isinstance(exc, want):
                pytest.fail(f"{fname}({option}={value!r}) should raise {_name(expected)} naming "
                            f"{option!r}, raised {type(exc).__name__}: {exc}")
            if option not in str(exc):
                pytest.fail(f"{fname}({option}={value!r}) raised {type(exc).__name__} whose "
                            f"message does not name {option!r}: {exc}")
        else:
            if expected != OK:
                pytest.fail(f"{fname}({option}={value!r}) should raise {_name(expected)} "
                            f"naming {option!r}, but it was accepted")


# ------------------------------------------------------------------ coverage of the table

# Keyword options the API contract (../shared/API.md) gives each function.
API_OPTIONS = {
    "softmax": {"out", "n_threads", "axis"},
    "log_softmax": {"out", "n_threads", "axis"},
    "logsumexp": {"out", "n_threads", "axis"},
    "cross_entropy": {"weight", "ignore_index", "reduction", "label_smoothing", "z_loss",
                      "softcap", "n_threads", "axis"},
    "cross_entropy_and_grad": {"weight", "ignore_index", "reduction", "label_smoothing",
                               "z_loss", "softcap", "n_threads", "axis", "grad_output",
                               "grad_out"},
    "binary_cross_entropy": {"weight", "reduction"},
    "binary_cross_entropy_with_logits": {"weight", "pos_weight", "reduction", "n_threads"},
    "sigmoid_focal_loss": {"alpha", "gamma", "reduction", "n_threads"},
    # temperature= and ece_bins= come with the calibration work (issue 21); the KINDS
    # table above already covers them, so they join this set when they land.
    "score": {"k", "ignore_index", "n_threads"},
    "info.surprisal": {"base"},
    "info.entropy": {"base", "axis"},
    "info.cross_entropy": {"base", "axis"},
    "info.kl_divergence": {"base", "axis"},
}


def test_every_public_function_is_in_the_table():
    names = {n for n in xf.__all__ if n not in NO_OPTIONS}
    names |= {f"info.{n}" for n in info.__all__}
    assert names <= set(FUNCTIONS), sorted(names - set(FUNCTIONS))


@pytest.mark.parametrize("fname", list(FUNCTIONS))
def test_every_option_has_a_kind(fname):
    missing = [o for o in _options(FUNCTIONS[fname][0]) if _kind(fname, o) is None]
    assert not missing, f"{fname}: options with no kind in KINDS: {missing}"


@pytest.mark.parametrize("fname", list(API_OPTIONS))
def test_api_options_are_present(fname):
    have = set(_options(FUNCTIONS[fname][0]))
    missing = API_OPTIONS[fname] - have
    assert not missing, f"{fname} lacks the API contract's keyword options {sorted(missing)}"


# ------------------------------------------------------------------ SciPy: empty class axis

@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (2, 3, 0), (0, 0)], ids=str)
def test_logsumexp_of_an_empty_class_axis_is_minus_inf(shape, dt):
    # scipy.special.logsumexp(x, axis=-1): log(0) = -inf per row
    r = xf.logsumexp(np.empty(shape, dt))
    assert np.shape(r) == shape[:-1]
    assert np.asarray(r).dtype == dt
    assert np.all(np.isneginf(r))


def test_logsumexp_of_an_empty_class_axis_into_out():
    out = np.zeros(3)
    r = xf.logsumexp(np.empty((3, 0)), out=out)
    assert r is out
    assert np.all(np.isneginf(out))


@pytest.mark.parametrize("fname", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (2, 3, 0), (0, 0)], ids=str)
def test_softmax_of_an_empty_class_axis_is_empty(fname, shape, dt):
    r = getattr(xf, fname)(np.empty(shape, dt))
    assert r.shape == shape
    assert r.dtype == dt


@pytest.mark.parametrize("fname", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("dt", [np.int64, np.int32, np.bool_], ids=["i64", "i32", "bool"])
def test_softmax_family_takes_integer_and_bool_input_in_float64(fname, dt):
    # API, "Softmax family": integer and bool input are computed in float64, as SciPy does.
    x = np.array([[0, 1, 1], [1, 0, 0]], dtype=dt)
    r = getattr(xf, fname)(x)
    expected = getattr(xf, fname)(x.astype(np.float64))
    assert np.asarray(r).dtype == np.float64
    np.testing.assert_array_equal(r, expected)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (2, 3, 0)], ids=str)
@pytest.mark.parametrize("fname", ["entropy", "cross_entropy", "kl_divergence"])
def test_info_measure_of_an_empty_distribution_is_zero(fname, shape):
    # scipy.stats.entropy(np.ones(0)) == 0.0 (and with qk): a sum over no outcomes.
    fn = getattr(info, fname)
    p = np.empty(shape)
    r = fn(p) if fname == "entropy" else fn(p, np.empty(shape))
    assert np.shape(r) == shape[:-1]
    assert np.asarray(r).dtype == np.float64
    np.testing.assert_array_equal(r, np.zeros(shape[:-1]))


def test_info_measure_of_an_empty_distribution_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert float(info.entropy(np.empty(0))) == float(stats.entropy(np.empty(0)))
        assert float(info.kl_divergence(np.empty(0), np.empty(0))) == float(
            stats.entropy(np.empty(0), np.empty(0)))


def test_surprisal_of_an_empty_array_is_empty():
    r = info.surprisal(np.empty((3, 0)))
    assert r.shape == (3, 0)


@pytest.mark.parametrize("base", ["2", b"2", "e", True, np.bool_(True), 2 + 0j, [2], np.array([2.0])],
                         ids=["str", "bytes", "str_e", "True", "np.bool_", "complex", "list", "1elem"])
@pytest.mark.parametrize("fname", info.__all__)
def test_info_base_must_be_a_real_scalar(fname, base):
    fn = getattr(info, fname)
    args = (_p(),) if fname in ("surprisal", "entropy") else (_p(), _p())
    with pytest.raises(TypeError, match="base"):
        fn(*args, base=base)


@pytest.mark.parametrize("axis", [0, 1, -3, (0, 2), (2, 0), None, ()], ids=str)
@pytest.mark.parametrize("fname", ["entropy", "cross_entropy", "kl_divergence"])
def test_info_axis_is_the_outcome_axis_as_scipy(fname, axis):
    # scipy.stats.entropy(pk, qk, axis=...) semantics (without its renormalisation).
    rng = np.random.default_rng(5)
    p, q = rng.uniform(0.05, 1.0, (2, 3, 4)), rng.uniform(0.05, 1.0, (2, 3, 4))
    terms = {"entropy": -p * np.log(p), "cross_entropy": -p * np.log(q),
             "kl_divergence": p * np.log(p / q)}[fname]
    fn = getattr(info, fname)
    got = fn(p, axis=axis) if fname == "entropy" else fn(p, q, axis=axis)
    np.testing.assert_allclose(got, terms.sum(axis=axis), rtol=1e-12)


def test_info_axis_error_names_the_callers_position():
    p = np.full((3, 4), 0.25)
    q = p.copy()
    q[1, 2] = 1.5
    with pytest.raises(ValueError, match=r"q\[1, 2\] = 1.5"):
        info.kl_divergence(p, q, axis=0)
