"""Bad input, table-driven: every public function, every argument.

Each case of ``CASES`` is one line: an id documenting it, the exception type expected,
the substrings the message must contain (the argument's name, and for bad class
indices the offending value and its position), and a zero-argument callable that
builds fresh arrays and returns ``(function, args, kwargs)``. ``test_bad_input`` runs
every case and checks the exception type, the message, and that no array argument
(outputs included: they are rejected before anything is written) was modified.

The second half checks valid-but-odd inputs (layouts, dtypes, memmaps, empty batches,
non-finite rows) against the plain C-contiguous float32/float64 result.
"""

import re

import numpy as np
import pytest

import xent_fast as xf
from xent_fast import info
import reference as ref
from helpers import assert_close

N, C = 4, 5  # the small cases' logits are (N, C)


# ------------------------------------------------------------------ builders

def c(f, *args, **kwargs):
    """A case's call: (function, args, kwargs)."""
    return f, args, kwargs


def X(dt=np.float64, shape=(N, C)):
    return np.random.default_rng(1).standard_normal(shape).astype(dt)


def T():
    return np.array([0, 1, 4, 2])


def Y():
    return np.full((N, C), 1.0 / C)


def P():
    return np.random.default_rng(2).uniform(0.05, 0.95, (N, C))


def B():
    return (np.random.default_rng(3).random((N, C)) > 0.5).astype(np.float64)


def W(n=C):
    return np.linspace(0.5, 2.0, n)


def bad_at(a, pos, value):
    a = np.array(a, dtype=np.float64)
    a[pos] = value
    return a


def readonly(a):
    a.setflags(write=False)
    return a


def buf_pair(n1, n2, off, s1, s2=None):
    """Two views of one float64 buffer: buf[:n1] reshaped to s1 and buf[off:off+n2]
    reshaped to s2, so that they overlap partially."""
    buf = np.random.default_rng(4).uniform(0.1, 0.9, max(n1, off + n2))
    return buf[:n1].reshape(s1), buf[off:off + n2].reshape(s2 if s2 is not None else s1)


def target_overlapping_grad():
    """(grad_out, class-index target) sharing bytes: the target starts in grad_out's last element."""
    raw = np.zeros(N * C + N)
    g = raw[:N * C].reshape(N, C)
    t = raw[N * C - 1:N * C - 1 + N].view(np.int64)
    t[:] = T()
    return g, t


# big batch for the class-index checks: 5000 x 40, split over threads
BN, BC = 5000, 40


def BX():
    return np.random.default_rng(5).standard_normal((BN, BC))


def BT(dtype=np.int64, bad=None):
    """Valid targets of ``dtype`` with ``bad`` = {position: value} put in."""
    t = np.random.default_rng(6).integers(0, BC, BN).astype(dtype)
    for pos, value in (bad or {}).items():
        t[pos] = value
    return t


# ------------------------------------------------------------------ the table

SOFTMAX_FAMILY = [("softmax", xf.softmax), ("log_softmax", xf.log_softmax), ("logsumexp", xf.logsumexp)]
CE = [("ce", xf.cross_entropy), ("ce_grad", xf.cross_entropy_and_grad)]
BCE = [("bce", xf.binary_cross_entropy), ("bce_grad", xf.binary_cross_entropy_and_grad)]
BCEL = [("bcel", xf.binary_cross_entropy_with_logits),
        ("bcel_grad", xf.binary_cross_entropy_with_logits_and_grad)]
FOCAL = [("focal", xf.sigmoid_focal_loss), ("focal_grad", xf.sigmoid_focal_loss_and_grad)]
LOSSES = CE + BCE + BCEL + FOCAL
GRADS = [CE[1], BCE[1], BCEL[1], FOCAL[1]]
INFO_1 = [("info.surprisal", info.surprisal), ("info.entropy", info.entropy)]
INFO_2 = [("info.cross_entropy", info.cross_entropy), ("info.kl_divergence", info.kl_divergence)]


def _first_arg_name(name):
    return "probs" if name.startswith("bce") and not name.startswith("bcel") else "logits"


def _loss_args(name):
    """Valid (first, second) arguments for a loss."""
    if name.startswith("ce"):
        return X(), T()
    if name.startswith("bce") and not name.startswith("bcel"):
        return P(), B()
    return X(), B()


NON_FLOAT = [
    ("int", lambda: np.array([[1, 2, 3]])),
    ("uint8", lambda: np.array([[1, 2, 3]], dtype=np.uint8)),
    ("bool", lambda: np.array([[True, False, True]])),
    ("complex", lambda: np.array([[1 + 1j, 2, 3]])),
    ("object", lambda: np.array([[1.0, "a", 2.0]], dtype=object)),
    ("str", lambda: np.array([["a", "b", "c"]])),
    ("None", lambda: None),
]

CASES = []

# --- class indices out of range, big batches, over threads and reductions; the message
# names the offending value and its position.
BAD_INDEX = [
    ("C", np.int64, BC, {}),
    ("minus1", np.int64, -1, {}),
    ("minus1-ignore-2", np.int64, -1, dict(ignore_index=-2)),
    ("minus100-ignore-1", np.int32, -100, dict(ignore_index=-1)),
    ("2**62", np.int64, 2**62, {}),
    ("uint64-2**63", np.uint64, 2**63, {}),
    ("uint64-max", np.uint64, 2**64 - 1, {}),
    ("int8-C", np.int8, BC, {}),
]
for fname, f in CE:
    for nt in (1, 2):
        for red in ("mean", "sum", "none"):
            for label, dt, value, kw in BAD_INDEX:
                CASES.append((
                    f"{fname}/index-{label}/nt{nt}/{red}", ValueError, ("target", f"[{BN - 10}]", str(value)),
                    lambda f=f, dt=dt, value=value, kw=kw, nt=nt, red=red: c(
                        f, BX(), BT(dt, {BN - 10: value}), n_threads=nt, reduction=red, **kw)))
        # two bad values in different threads' halves: the first is reported
        CASES.append((f"{fname}/index-first-of-two/nt{nt}", ValueError, ("target", "[100]", str(BC)),
                      lambda f=f, nt=nt: c(f, BX(), BT(np.int64, {100: BC, BN - 3: 2**62}), n_threads=nt)))
CASES += [
    ("ce/index-3d-batch-position", ValueError, ("target", "[1, 2]", "7"),
     lambda: c(xf.cross_entropy, X(shape=(2, 3, 5)), np.array([[0, 1, 2], [3, 4, 7]]))),
    ("ce/index-1d-logits-scalar-target", ValueError, ("target", "5"), lambda: c(xf.cross_entropy, X(shape=(5,)), 5)),
    ("ce_grad/index-weight-label-smoothing", ValueError, ("target", "[3]", "-3"),
     lambda: c(xf.cross_entropy_and_grad, X(), np.array([0, 1, 2, -3]), weight=W(), label_smoothing=0.1)),
    ("ce_grad/index-with-grad-out", ValueError, ("target", "[0]", "5"),
     lambda: c(xf.cross_entropy_and_grad, X(), np.array([5, 1, 2, 3]), grad_out=np.zeros((N, C)))),
]

# --- float class indices and bool targets
for fname, f in CE:
    CASES += [
        (f"{fname}/float64-class-indices", TypeError, ("target", "class indices must be integers"),
         lambda f=f: c(f, X(), T().astype(np.float64))),
        (f"{fname}/float32-class-indices", TypeError, ("target", "class indices must be integers"),
         lambda f=f: c(f, X(), T().astype(np.float32))),
        (f"{fname}/float16-class-indices", TypeError, ("target", "class indices must be integers"),
         lambda f=f: c(f, X(), T().astype(np.float16))),
        (f"{fname}/float-scalar-class-index", TypeError, ("target", "class indices must be integers"),
         lambda f=f: c(f, X(shape=(C,)), np.float64(1.0))),
        (f"{fname}/bool-target-batch-shape", TypeError, "target", lambda f=f: c(f, X(), np.array([True, False, True, True]))),
        (f"{fname}/bool-target-logits-shape", TypeError, "target", lambda f=f: c(f, X(), np.ones((N, C), dtype=bool))),
        (f"{fname}/complex-target", TypeError, "target", lambda f=f: c(f, X(), Y().astype(complex))),
        (f"{fname}/str-target", TypeError, "target", lambda f=f: c(f, X(), np.array(["a", "b", "c", "d"]))),
        (f"{fname}/None-target", TypeError, "target", lambda f=f: c(f, X(), None)),
    ]

# --- non-float logits / probs, 0-d logits, zero classes
for fname, f in SOFTMAX_FAMILY + LOSSES:
    arg = _first_arg_name(fname)
    for label, make in NON_FLOAT:
        if label in ("int", "uint8", "bool") and fname in dict(SOFTMAX_FAMILY):
            continue  # computed in float64, as SciPy does (test_softmax.py)
        CASES.append((f"{fname}/{arg}-{label}", TypeError, arg,
                      lambda f=f, fname=fname, make=make: c(f, make(), _loss_args(fname)[1]) if fname not in
                      dict(SOFTMAX_FAMILY) else c(f, make())))
for fname, f in SOFTMAX_FAMILY:
    CASES += [
        (f"{fname}/0d-logits", ValueError, "logits", lambda f=f: c(f, np.array(1.0))),
        (f"{fname}/python-float-logits", ValueError, "logits", lambda f=f: c(f, 2.0)),
        (f"{fname}/ragged-list", TypeError, "logits", lambda f=f: c(f, [[1.0, 2.0], [3.0]])),
    ]
for fname, f in CE:
    CASES += [
        (f"{fname}/0d-logits", ValueError, "logits", lambda f=f: c(f, np.array(1.0), np.array(0))),
        (f"{fname}/zero-classes-(4,0)", ValueError, "logits", lambda f=f: c(f, np.zeros((4, 0)), np.zeros(4, np.int64))),
        (f"{fname}/zero-classes-(2,3,0)", ValueError, "logits",
         lambda f=f: c(f, np.zeros((2, 3, 0)), np.zeros((2, 3), np.int64))),
    ]

# --- target shapes, weight, pos_weight
for fname, f in CE:
    CASES += [
        (f"{fname}/index-target-too-short", ValueError, "target", lambda f=f: c(f, X(), np.array([0, 1, 2]))),
        (f"{fname}/index-target-(4,1)", ValueError, "target", lambda f=f: c(f, X(), T()[:, None])),
        (f"{fname}/index-target-logits-shape", ValueError, "target", lambda f=f: c(f, X(), np.zeros((N, C), np.int64))),
        (f"{fname}/probs-target-(4,6)", ValueError, "target", lambda f=f: c(f, X(), np.full((N, C + 1), 0.2))),
        (f"{fname}/probs-target-(5,5)", ValueError, "target", lambda f=f: c(f, X(), np.full((N + 1, C), 0.2))),
        (f"{fname}/probs-target-(4,5,1)", ValueError, "target", lambda f=f: c(f, X(), Y()[..., None])),
        (f"{fname}/weight-len-C+1", ValueError, "weight", lambda f=f: c(f, X(), T(), weight=W(C + 1))),
        (f"{fname}/weight-len-C-1", ValueError, "weight", lambda f=f: c(f, X(), T(), weight=W(C - 1))),
        (f"{fname}/weight-(C,1)", ValueError, "weight", lambda f=f: c(f, X(), T(), weight=W()[:, None])),
        (f"{fname}/weight-probs-target-len-C+1", ValueError, "weight", lambda f=f: c(f, X(), Y(), weight=W(C + 1))),
        (f"{fname}/weight-complex", TypeError, "weight", lambda f=f: c(f, X(), T(), weight=W().astype(complex))),
        (f"{fname}/weight-str", TypeError, "weight", lambda f=f: c(f, X(), T(), weight=np.array(["a"] * C))),
    ]
for fname, f in BCE + BCEL + FOCAL:
    CASES += [
        (f"{fname}/target-(4,4)", ValueError, "target", lambda f=f, fname=fname: c(f, _loss_args(fname)[0], B()[:, :4])),
        (f"{fname}/target-(4,5,1)", ValueError, "target", lambda f=f, fname=fname: c(f, _loss_args(fname)[0], B()[..., None])),
        (f"{fname}/target-complex", TypeError, "target",
         lambda f=f, fname=fname: c(f, _loss_args(fname)[0], B().astype(complex))),
        (f"{fname}/target-None", TypeError, "target", lambda f=f, fname=fname: c(f, _loss_args(fname)[0], None)),
    ]
for fname, f in BCE + BCEL:
    CASES += [
        (f"{fname}/weight-(4,)-does-not-broadcast", ValueError, "weight",
         lambda f=f, fname=fname: c(f, *_loss_args(fname), weight=W(N))),
        (f"{fname}/weight-(2,5)-does-not-broadcast", ValueError, "weight",
         lambda f=f, fname=fname: c(f, *_loss_args(fname), weight=np.ones((2, C)))),
    ]
for fname, f in BCEL:
    CASES += [
        (f"{fname}/pos_weight-(4,)-does-not-broadcast", ValueError, "pos_weight",
         lambda f=f: c(f, X(), B(), pos_weight=W(N))),
        (f"{fname}/pos_weight-(C+1,)", ValueError, "pos_weight", lambda f=f: c(f, X(), B(), pos_weight=W(C + 1))),
        (f"{fname}/pos_weight-complex", TypeError, "pos_weight", lambda f=f: c(f, X(), B(), pos_weight=W().astype(complex))),
    ]

# --- options: reduction, label_smoothing, z_loss, softcap, ignore_index, n_threads, alpha, gamma
for fname, f in LOSSES:
    for bad in ("avg", "MEAN", "", None, 3):
        CASES.append((f"{fname}/reduction={bad!r}", ValueError, "reduction",
                      lambda f=f, fname=fname, bad=bad: c(f, *_loss_args(fname), reduction=bad)))
    # an unhashable reduction: either error type, but the message must name the argument
    CASES.append((f"{fname}/reduction=['mean']", (TypeError, ValueError), "reduction",
                  lambda f=f, fname=fname: c(f, *_loss_args(fname), reduction=["mean"])))
for fname, f in CE:
    for tname, tmake in (("index", T), ("probs", Y)):
        for v in (-0.1, 1.5, np.nan, np.inf):
            CASES.append((f"{fname}/{tname}/label_smoothing={v}", ValueError, "label_smoothing",
                          lambda f=f, tmake=tmake, v=v: c(f, X(), tmake(), label_smoothing=v)))
        for v in (-1.0, -1e-9, np.inf, np.nan):
            CASES.append((f"{fname}/{tname}/z_loss={v}", ValueError, "z_loss",
                          lambda f=f, tmake=tmake, v=v: c(f, X(), tmake(), z_loss=v)))
        for v in (0, 0.0, -1.0, np.nan, np.inf):
            CASES.append((f"{fname}/{tname}/softcap={v}", ValueError, "softcap",
                          lambda f=f, tmake=tmake, v=v: c(f, X(), tmake(), softcap=v)))
    CASES += [
        (f"{fname}/label_smoothing=True", TypeError, "label_smoothing", lambda f=f: c(f, X(), T(), label_smoothing=True)),
        (f"{fname}/label_smoothing-str", TypeError, "label_smoothing", lambda f=f: c(f, X(), T(), label_smoothing="0.1")),
        (f"{fname}/z_loss-list", TypeError, "z_loss", lambda f=f: c(f, X(), T(), z_loss=[0.1])),
        (f"{fname}/softcap-str", TypeError, "softcap", lambda f=f: c(f, X(), T(), softcap="a")),
        (f"{fname}/ignore_index=1.5", TypeError, "ignore_index", lambda f=f: c(f, X(), T(), ignore_index=1.5)),
        (f"{fname}/ignore_index-str", TypeError, "ignore_index", lambda f=f: c(f, X(), T(), ignore_index="x")),
        (f"{fname}/ignore_index=2**64", ValueError, "ignore_index", lambda f=f: c(f, X(), T(), ignore_index=2**64)),
    ]
for fname, f in SOFTMAX_FAMILY + LOSSES:
    for v, exc in ((0, ValueError), (-2, ValueError), (-100, ValueError), (1.5, TypeError), (True, TypeError),
                   ("2", TypeError)):
        CASES.append((f"{fname}/n_threads={v!r}", exc, "n_threads",
                      lambda f=f, fname=fname, v=v: c(f, X(), n_threads=v) if fname in dict(SOFTMAX_FAMILY)
                      else c(f, *_loss_args(fname), n_threads=v)))
for fname, f in FOCAL:
    CASES += [
        (f"{fname}/alpha=1.5", ValueError, "alpha", lambda f=f: c(f, X(), B(), alpha=1.5)),
        (f"{fname}/alpha=nan", ValueError, "alpha", lambda f=f: c(f, X(), B(), alpha=np.nan)),
        (f"{fname}/alpha-str", TypeError, "alpha", lambda f=f: c(f, X(), B(), alpha="a")),
        (f"{fname}/gamma=-1", ValueError, "gamma", lambda f=f: c(f, X(), B(), gamma=-1)),
        (f"{fname}/gamma=inf", ValueError, "gamma", lambda f=f: c(f, X(), B(), gamma=np.inf)),
        (f"{fname}/gamma=None", TypeError, "gamma", lambda f=f: c(f, X(), B(), gamma=None)),
    ]

# --- out= (softmax family)
for fname, f in SOFTMAX_FAMILY:
    shape = (N,) if fname == "logsumexp" else (N, C)
    n_out = N if fname == "logsumexp" else N * C
    CASES += [
        (f"{fname}/out-float32-for-float64", TypeError, "out", lambda f=f, s=shape: c(f, X(), out=np.zeros(s, np.float32))),
        (f"{fname}/out-float64-for-float32", TypeError, "out",
         lambda f=f, s=shape: c(f, X(np.float32), out=np.zeros(s))),
        (f"{fname}/out-float16-for-float16", TypeError, "out",
         lambda f=f, s=shape: c(f, X(np.float16), out=np.zeros(s, np.float16))),
        (f"{fname}/out-int", TypeError, "out", lambda f=f, s=shape: c(f, X(), out=np.zeros(s, np.int64))),
        (f"{fname}/out-list", TypeError, "out", lambda f=f, s=shape: c(f, X(), out=np.zeros(s).tolist())),
        (f"{fname}/out-wrong-shape", ValueError, "out", lambda f=f, s=shape: c(f, X(), out=np.zeros(s[::-1] + (1,)))),
        (f"{fname}/out-flat", ValueError, "out", lambda f=f, n=n_out: c(f, X(shape=(2, 2, C)), out=np.zeros(n))),
        (f"{fname}/out-non-contiguous", ValueError, "out",
         lambda f=f, s=shape: c(f, X(), out=np.zeros(s[:-1] + (2 * s[-1],))[..., ::2])),
        (f"{fname}/out-read-only", ValueError, "out", lambda f=f, s=shape: c(f, X(), out=readonly(np.zeros(s)))),
        (f"{fname}/out-partially-overlaps-logits", ValueError, "out",
         lambda f=f, s=shape, n=n_out: (lambda x, o: c(f, x, out=o))(*buf_pair(N * C, n, N * C - 2, (N, C), s))),
    ]
CASES += [
    ("softmax/out-shifted-by-one-row-of-logits", ValueError, "out",
     lambda: (lambda x, o: c(xf.softmax, x, out=o))(*buf_pair(N * C, N * C, C, (N, C)))),
    ("logsumexp/out-is-part-of-logits", ValueError, "out", lambda: (lambda x: c(xf.logsumexp, x, out=x[0, :N]))(X())),
    ("logsumexp/out-is-logits", ValueError, "out", lambda: (lambda x: c(xf.logsumexp, x, out=x))(X())),
]

# --- grad_out= and grad_output (the *_and_grad functions)
for fname, f in GRADS:
    mk = lambda fname=fname: _loss_args(fname)  # noqa: E731
    CASES += [
        (f"{fname}/grad_out-float32-for-float64", TypeError, "grad_out",
         lambda f=f, mk=mk: c(f, *mk(), grad_out=np.zeros((N, C), np.float32))),
        (f"{fname}/grad_out-float16-for-float16", TypeError, "grad_out",
         lambda f=f, mk=mk: (lambda a, b: c(f, a.astype(np.float16), b, grad_out=np.zeros((N, C), np.float16)))(*mk())),
        (f"{fname}/grad_out-list", TypeError, "grad_out", lambda f=f, mk=mk: c(f, *mk(), grad_out=np.zeros((N, C)).tolist())),
        (f"{fname}/grad_out-wrong-shape", ValueError, "grad_out", lambda f=f, mk=mk: c(f, *mk(), grad_out=np.zeros((C, N)))),
        (f"{fname}/grad_out-flat", ValueError, "grad_out", lambda f=f, mk=mk: c(f, *mk(), grad_out=np.zeros(N * C))),
        (f"{fname}/grad_out-non-contiguous", ValueError, "grad_out",
         lambda f=f, mk=mk: c(f, *mk(), grad_out=np.zeros((N, 2 * C))[:, ::2])),
        (f"{fname}/grad_out-fortran", ValueError, "grad_out", lambda f=f, mk=mk: c(f, *mk(), grad_out=np.zeros((C, N)).T)),
        (f"{fname}/grad_out-read-only", ValueError, "grad_out",
         lambda f=f, mk=mk: c(f, *mk(), grad_out=readonly(np.zeros((N, C))))),
        (f"{fname}/grad_out-partially-overlaps-first-arg", ValueError, "grad_out",
         lambda f=f, mk=mk: (lambda x, g: c(f, x, mk()[1], grad_out=g))(*buf_pair(N * C, N * C, 3, (N, C)))),
        (f"{fname}/grad_out-as-first-arg-that-needs-a-copy", ValueError, "grad_out",
         lambda f=f, mk=mk: (lambda x: c(f, x, mk()[1], grad_out=x))(np.asfortranarray(mk()[0]))),
        (f"{fname}/grad_output-none-wrong-shape", ValueError, "grad_output",
         lambda f=f, mk=mk, fname=fname: c(f, *mk(), reduction="none", grad_output=np.ones(N + 1 if fname == "ce_grad"
                                                                                          else (N, C + 1)))),
        (f"{fname}/grad_output-none-transposed", ValueError, "grad_output",
         lambda f=f, mk=mk, fname=fname: c(f, *mk(), reduction="none", grad_output=np.ones((1, N) if fname == "ce_grad"
                                                                                          else (C, N)))),
        (f"{fname}/grad_output-array-with-mean", ValueError, "grad_output",
         lambda f=f, mk=mk, fname=fname: c(f, *mk(), reduction="mean", grad_output=np.ones(N if fname == "ce_grad"
                                                                                          else (N, C)))),
        (f"{fname}/grad_output-array-with-sum", ValueError, "grad_output",
         lambda f=f, mk=mk, fname=fname: c(f, *mk(), reduction="sum", grad_output=np.ones(N if fname == "ce_grad"
                                                                                         else (N, C)))),
        (f"{fname}/grad_output-str", TypeError, "grad_output", lambda f=f, mk=mk: c(f, *mk(), grad_output="1")),
        (f"{fname}/grad_output-None", TypeError, "grad_output", lambda f=f, mk=mk: c(f, *mk(), grad_output=None)),
        (f"{fname}/grad_output-complex", TypeError, "grad_output",
         lambda f=f, mk=mk: c(f, *mk(), reduction="none", grad_output=np.ones(N if f is xf.cross_entropy_and_grad
                                                                               else (N, C), complex))),
    ]
CASES += [
    ("ce_grad/grad_out-overlaps-probs-target", ValueError, "grad_out",
     lambda: (lambda y, g: c(xf.cross_entropy_and_grad, X(), y, grad_out=g))(*buf_pair(N * C, N * C, 4, (N, C)))),
    ("ce_grad/grad_out-is-probs-target", ValueError, "grad_out",
     lambda: (lambda y: c(xf.cross_entropy_and_grad, X(), y, grad_out=y))(Y())),
    ("ce_grad/grad_out-overlaps-index-target", ValueError, "grad_out",
     lambda: (lambda g, t: c(xf.cross_entropy_and_grad, X(), t, grad_out=g))(*target_overlapping_grad())),
    ("ce_grad/grad_out-overlaps-weight", ValueError, "grad_out",
     lambda: (lambda g, w: c(xf.cross_entropy_and_grad, X(), T(), weight=w, grad_out=g))(
         *buf_pair(N * C, C, N * C - 1, (N, C), (C,)))),
    ("ce_grad/grad_out-overlaps-grad_output", ValueError, "grad_out",
     lambda: (lambda g, go: c(xf.cross_entropy_and_grad, X(), T(), reduction="none", grad_output=go, grad_out=g))(
         *buf_pair(N * C, N, N * C - 1, (N, C), (N,)))),
    ("bce_grad/grad_out-is-target", ValueError, "grad_out",
     lambda: (lambda y: c(xf.binary_cross_entropy_and_grad, P(), y, grad_out=y))(B())),
    ("bce_grad/grad_out-overlaps-weight", ValueError, "grad_out",
     lambda: (lambda g, w: c(xf.binary_cross_entropy_and_grad, P(), B(), weight=w, grad_out=g))(
         *buf_pair(N * C, C, N * C - 2, (N, C), (C,)))),
    ("bcel_grad/grad_out-overlaps-target", ValueError, "grad_out",
     lambda: (lambda y, g: c(xf.binary_cross_entropy_with_logits_and_grad, X(), y, grad_out=g))(
         *buf_pair(N * C, N * C, 1, (N, C)))),
    ("bcel_grad/grad_out-overlaps-weight", ValueError, "grad_out",
     lambda: (lambda g, w: c(xf.binary_cross_entropy_with_logits_and_grad, X(), B(), weight=w, grad_out=g))(
         *buf_pair(N * C, C, N * C - 2, (N, C), (C,)))),
    ("bcel_grad/grad_out-overlaps-pos_weight", ValueError, "grad_out",
     lambda: (lambda g, pw: c(xf.binary_cross_entropy_with_logits_and_grad, X(), B(), pos_weight=pw, grad_out=g))(
         *buf_pair(N * C, C, N * C - 2, (N, C), (C,)))),
    ("bcel_grad/grad_out-is-grad_output", ValueError, "grad_out",
     lambda: (lambda g: c(xf.binary_cross_entropy_with_logits_and_grad, X(), B(), reduction="none", grad_output=g,
                          grad_out=g))(np.ones((N, C)))),
    ("focal_grad/grad_out-overlaps-target", ValueError, "grad_out",
     lambda: (lambda y, g: c(xf.sigmoid_focal_loss_and_grad, X(), y, grad_out=g))(*buf_pair(N * C, N * C, C, (N, C)))),
    ("focal_grad/grad_out-overlaps-grad_output", ValueError, "grad_out",
     lambda: (lambda go, g: c(xf.sigmoid_focal_loss_and_grad, X(), B(), grad_output=go, grad_out=g))(
         *buf_pair(N * C, N * C, 2, (N, C)))),
]

# --- probabilities outside [0, 1]: binary_cross_entropy's probs, info's p and q
for fname, f in BCE:
    for v in (-0.1, 1.5, np.nan, -np.inf, np.inf):
        CASES.append((f"{fname}/probs={v}", ValueError, ("probs[1, 2]",),
                      lambda f=f, v=v: c(f, bad_at(P(), (1, 2), v), B())))
for fname, f in INFO_1 + INFO_2:
    two = (fname, f) in INFO_2
    for v in (-0.1, 1.5, np.nan, -np.inf, np.inf):
        CASES.append((f"{fname}/p={v}", ValueError, "p[1, 2]",
                      lambda f=f, v=v, two=two: c(f, bad_at(Y(), (1, 2), v), *((P(),) if two else ()))))
    for base in (1, 1.0, 0, -2, np.inf, np.nan):
        CASES.append((f"{fname}/base={base}", ValueError, "base",
                      lambda f=f, base=base, two=two: c(f, Y(), *((P(),) if two else ()), base=base)))
    CASES += [
        (f"{fname}/base-str", TypeError, "base", lambda f=f, two=two: c(f, Y(), *((P(),) if two else ()), base="two")),
        (f"{fname}/p-complex", TypeError, "p", lambda f=f, two=two: c(f, Y().astype(complex), *((P(),) if two else ()))),
        (f"{fname}/p-str", TypeError, "p", lambda f=f, two=two: c(f, np.array(["a", "b"]), *((P(),) if two else ()))),
        (f"{fname}/p-None", TypeError, "p", lambda f=f, two=two: c(f, None, *((P(),) if two else ()))),
    ]
for fname, f in INFO_2:
    for v in (-0.1, 1.5, np.nan, -np.inf):
        CASES.append((f"{fname}/q={v}", ValueError, "q[1, 2]", lambda f=f, v=v: c(f, Y(), bad_at(P(), (1, 2), v))))
    CASES += [
        (f"{fname}/p-q-shape-mismatch-(4,5)-(4,4)", ValueError, ("p", "q"), lambda f=f: c(f, Y(), P()[:, :4])),
        (f"{fname}/p-q-shape-mismatch-(4,5)-(3,5)", ValueError, ("p", "q"), lambda f=f: c(f, Y(), P()[:3])),
        (f"{fname}/q-complex", TypeError, "q", lambda f=f: c(f, Y(), P().astype(complex))),
        (f"{fname}/q-None", TypeError, "q", lambda f=f: c(f, Y(), None)),
        (f"{fname}/p-scalar", ValueError, "p", lambda f=f: c(f, 0.5, 0.5)),
    ]
CASES += [
    ("info.entropy/p-scalar", ValueError, "p", lambda: c(info.entropy, 0.5)),
    ("info.surprisal/p-scalar-negative", ValueError, "p", lambda: c(info.surprisal, -1.0)),
]

CASE_IDS = [case[0] for case in CASES]


# ------------------------------------------------------------------ the test

def _contains(msg, s):
    """``s`` in ``msg``, not as part of a longer identifier or number ("weight" does
    not match inside "pos_weight", "40" not inside "400")."""
    pat = re.escape(s)
    if re.match(r"\w", s[0]):
        pat = r"(?<!\w)" + pat
    if re.match(r"\w", s[-1]):
        pat += r"(?!\w)"
    return re.search(pat, msg) is not None


def _arrays(args, kwargs):
    return [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]


def _same(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    numeric = a.dtype.kind in "biufc"
    if not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
        return False
    return a.tobytes() == b.tobytes() if numeric else True


@pytest.mark.parametrize("exc,match,build", [pytest.param(e, m, b, id=i) for i, e, m, b in CASES])
def test_bad_input(exc, match, build):
    f, args, kwargs = build()
    arrays = _arrays(args, kwargs)
    before = [np.array(a, copy=True) for a in arrays]
    with pytest.raises(exc) as e:
        f(*args, **kwargs)
    msg = str(e.value)
    for s in (match,) if isinstance(match, str) else match:
        assert _contains(msg, s), f"{s!r} not in the message: {msg!r}"
    for i, (a, b) in enumerate(zip(arrays, before)):
        assert _same(np.asarray(a), b), f"array argument {i} was modified"


def _other_float_dtypes():
    """Float dtypes (kind "f") other than float16/32/64: long double where it is wider
    than double, and the float8 types of ml_dtypes (JAX's dependency) when installed."""
    dts = [np.dtype(np.longdouble)] if np.dtype(np.longdouble).itemsize > 8 else []
    try:
        import ml_dtypes
    except ImportError:
        return dts
    return dts + [np.dtype(ml_dtypes.float8_e5m2), np.dtype(ml_dtypes.float8_e4m3fn)]


@pytest.mark.parametrize("dt", _other_float_dtypes(), ids=str)
@pytest.mark.parametrize("call", [
    lambda x: xf.cross_entropy(x, [0, 1]),
    lambda x: xf.cross_entropy_and_grad(x, [0, 1]),
    lambda x: xf.softmax(x),
    lambda x: xf.logsumexp(x),
    lambda x: xf.binary_cross_entropy_with_logits(x, np.zeros((2, 3))),
    lambda x: xf.binary_cross_entropy(x, np.zeros((2, 3))),
], ids=["cross_entropy", "cross_entropy_and_grad", "softmax", "logsumexp", "bce_logits",
        "bce"])
def test_other_float_dtypes_are_a_type_error(dt, call):
    # kind "f" but not a type the kernels compute in: refused by name, never passed on.
    x = np.zeros((2, 3)).astype(dt)
    with pytest.raises(TypeError, match=rf"dtype {dt}\b") as e:
        call(x)
    assert "logits" in str(e.value) or "probs" in str(e.value)


def test_case_table_is_complete():
    assert len(CASE_IDS) == len(set(CASE_IDS)), "duplicate case ids"
    funcs, names = set(), set()
    for _, _, match, build in CASES:
        f, _, _ = build()
        funcs.add(f)
        names.update((match,) if isinstance(match, str) else match)
    for f in [xf.softmax, xf.log_softmax, xf.logsumexp, xf.cross_entropy, xf.cross_entropy_and_grad,
              xf.binary_cross_entropy, xf.binary_cross_entropy_and_grad, xf.binary_cross_entropy_with_logits,
              xf.binary_cross_entropy_with_logits_and_grad, xf.sigmoid_focal_loss, xf.sigmoid_focal_loss_and_grad,
              info.surprisal, info.entropy, info.cross_entropy, info.kl_divergence]:
        assert f in funcs, f.__name__
    for name in ["target", "logits", "weight", "pos_weight", "reduction", "label_smoothing", "n_threads", "out",
                 "grad_out", "grad_output", "probs[1, 2]", "p[1, 2]", "q[1, 2]", "alpha", "gamma", "softcap",
                 "z_loss", "ignore_index", "base", "class indices must be integers"]:
        assert name in names, name


# ================================================================== valid but odd inputs

R = 6  # rows of the valid inputs


def _valid_base(dt):
    rng = np.random.default_rng(7)
    return {
        "x": (rng.standard_normal((R, C)) * 2).astype(dt),
        "t": np.array([0, 4, -100, 1, 3, 2]),
        "y": rng.dirichlet(np.ones(C), R).astype(dt),
        "w": rng.uniform(0.5, 2.0, C).astype(dt),
        "p": rng.uniform(0.02, 0.98, (R, C)).astype(dt),
        "b": rng.random((R, C)).astype(dt),
        "pw": rng.uniform(0.5, 3.0, C).astype(dt),
        "g": rng.uniform(0.5, 1.5, R).astype(dt),
    }


# name -> (function of the inputs, input keys, output kinds: L = input's shape,
# R = one per row, S = scalar)
OPS = {
    "softmax": (lambda d: xf.softmax(d["x"]), "x", "L"),
    "log_softmax": (lambda d: xf.log_softmax(d["x"]), "x", "L"),
    "logsumexp": (lambda d: xf.logsumexp(d["x"]), "x", "R"),
    "ce_index_mean": (lambda d: xf.cross_entropy(d["x"], d["t"], weight=d["w"], label_smoothing=0.1, z_loss=1e-3),
                      "x t w", "S"),
    "ce_index_none_grad": (lambda d: xf.cross_entropy_and_grad(d["x"], d["t"], reduction="none", z_loss=1e-3,
                                                               grad_output=d["g"]), "x t g", "RL"),
    "ce_index_sum_softcap_grad": (lambda d: xf.cross_entropy_and_grad(d["x"], d["t"], weight=d["w"], reduction="sum",
                                                                      softcap=3.0), "x t w", "SL"),
    "ce_probs_none_grad": (lambda d: xf.cross_entropy_and_grad(d["x"], d["y"], reduction="none"), "x y", "RL"),
    "ce_probs_mean": (lambda d: xf.cross_entropy(d["x"], d["y"], weight=d["w"], label_smoothing=0.2), "x y w", "S"),
    "bce_none_grad": (lambda d: xf.binary_cross_entropy_and_grad(d["p"], d["b"], weight=d["w"], reduction="none"),
                      "p b w", "LL"),
    "bce_mean": (lambda d: xf.binary_cross_entropy(d["p"], d["b"]), "p b", "S"),
    "bcel_none_grad": (lambda d: xf.binary_cross_entropy_with_logits_and_grad(
        d["x"], d["b"], weight=d["w"], pos_weight=d["pw"], reduction="none"), "x b w pw", "LL"),
    "bcel_mean_grad": (lambda d: xf.binary_cross_entropy_with_logits_and_grad(d["x"], d["b"]), "x b", "SL"),
    "focal_none_grad": (lambda d: xf.sigmoid_focal_loss_and_grad(d["x"], d["b"], reduction="none"), "x b", "LL"),
    "focal_sum": (lambda d: xf.sigmoid_focal_loss(d["x"], d["b"], reduction="sum"), "x b", "S"),
    "info_surprisal": (lambda d: info.surprisal(d["p"], base=2), "p", "L"),
    "info_entropy": (lambda d: info.entropy(d["y"]), "y", "R"),
    "info_cross_entropy": (lambda d: info.cross_entropy(d["y"], d["p"]), "y p", "R"),
    "info_kl_divergence": (lambda d: info.kl_divergence(d["y"], d["p"], base=10), "y p", "R"),
}

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def _outputs(r):
    return list(r) if isinstance(r, tuple) else [r]


def _to_memmap(a, path):
    mm = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    mm[...] = a
    mm.flush()
    del mm
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)


def _layout(variant, a, key, tmp_path):
    """``a`` in layout ``variant``, the same values."""
    if variant == "list":
        return a.tolist()
    if variant == "readonly":
        return readonly(a.copy())
    if variant == "fortran":
        return np.asfortranarray(a)
    if variant == "negstride":
        return a[::-1].copy()[::-1]
    if variant == "bigendian":
        return a.astype(a.dtype.newbyteorder(">"))
    if variant == "memmap":
        return _to_memmap(a, tmp_path / f"{key}.bin")
    raise AssertionError(variant)


LAYOUTS = ["list", "readonly", "fortran", "negstride", "bigendian", "memmap"]
VALID_PARAMS = [pytest.param(op, v, dt, id=f"{op}-{v}-{np.dtype(dt).name}")
                for op in OPS for v in LAYOUTS for dt in (np.float32, np.float64)
                if not (v == "list" and dt == np.float32)]  # a list is float64
VALID_PARAMS += [pytest.param(op, "float16", np.float32, id=f"{op}-float16") for op in OPS]
VALID_PARAMS += [pytest.param(op, f"labels-{np.dtype(it).name}", np.float64, id=f"{op}-labels-{np.dtype(it).name}")
                 for op in OPS if "t" in OPS[op][1].split() for it in INT_DTYPES]


@pytest.mark.parametrize("op,variant,dt", VALID_PARAMS)
def test_valid_odd_input_gives_the_plain_answer(tmp_path, op, variant, dt):
    fn, keys, kinds = OPS[op]
    keys = keys.split()
    plain_in = _valid_base(dt)
    if variant.startswith("labels-"):
        it = np.dtype(variant[len("labels-"):])
        if it.kind == "u":  # no ignored row: -100 is not representable
            plain_in["t"] = np.where(plain_in["t"] < 0, 3, plain_in["t"])
        odd = dict(plain_in, t=plain_in["t"].astype(it))
    elif variant == "float16":
        f16 = {k: plain_in[k].astype(np.float16) for k in keys if k != "t"}
        plain_in.update({k: v.astype(np.float32) for k, v in f16.items()})  # what float16 computes on
        odd = dict(plain_in, **f16)
    else:
        odd = {k: (_layout(variant, v, k, tmp_path) if k in keys else v) for k, v in plain_in.items()}
    odd_arrays = [(k, odd[k], np.array(odd[k], copy=True)) for k in keys if isinstance(odd[k], np.ndarray)]

    expected = _outputs(fn(plain_in))
    got = _outputs(fn(odd))

    assert len(got) == len(expected) == len(kinds)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert isinstance(g, (np.ndarray, np.generic)), f"output {i}: {type(g)}"
        assert g.dtype == e.dtype == np.dtype(dt), f"output {i}: dtype {g.dtype}, plain {e.dtype}"
        assert np.shape(g) == np.shape(e), f"output {i}"
        if variant == "float16":
            np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7, err_msg=f"output {i}")
        else:  # bit for bit
            assert np.array_equal(g, e, equal_nan=True) and np.asarray(g).tobytes() == np.asarray(e).tobytes(), \
                f"output {i} differs from the plain C-contiguous input's"
    for k, a, copy in odd_arrays:
        assert _same(np.asarray(a), copy), f"input {k} was modified"


def _empty_inputs(dt, batch):
    d = _valid_base(dt)
    for k in "xypb":
        d[k] = np.zeros(batch + (C,), dt)
    d["t"] = np.zeros(batch, np.int64)
    d["g"] = np.ones(batch, dt)
    return d


@pytest.mark.parametrize("batch", [(0,), (2, 0), (0, 3)], ids=str)
@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("op", list(OPS))
def test_valid_empty_batch(op, dt, batch):
    fn, _, kinds = OPS[op]
    got = _outputs(fn(_empty_inputs(dt, batch)))
    assert len(got) == len(kinds)
    for g, kind in zip(got, kinds):
        assert g.dtype == np.dtype(dt)
        if kind == "S":
            assert isinstance(g, np.generic) and g == 0.0, g  # "mean" over nothing is 0 (not nan)
        else:
            assert isinstance(g, np.ndarray) and g.shape == (batch + (C,) if kind == "L" else batch)


# ------------------------------------------------------------------ one non-finite row

ROW_OPS = ["softmax", "log_softmax", "logsumexp", "ce_index_none_grad", "ce_probs_none_grad",
           "bcel_none_grad", "focal_none_grad"]
BAD_ROW, BAD_COL = 2, 1
ROW_KEYS = {"x", "t", "y", "p", "b", "g"}


def _ref_row(op, d):
    """The reference result of ``op`` for row BAD_ROW only (softmax family, cross-entropy)."""
    x = d["x"][BAD_ROW:BAD_ROW + 1]
    if op in ("softmax", "log_softmax", "logsumexp"):
        return [getattr(ref, op)(x)[0]]
    target = d["t"][BAD_ROW:BAD_ROW + 1] if op == "ce_index_none_grad" else d["y"][BAD_ROW:BAD_ROW + 1]
    kw = dict(z_loss=1e-3, grad_output=d["g"][BAD_ROW:BAD_ROW + 1]) if op == "ce_index_none_grad" else {}
    with np.errstate(invalid="ignore"):
        loss, grad = ref.cross_entropy_and_grad(x.astype(np.float64), target, reduction="none", **kw)
    return [loss[0], grad[0]]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("op", ROW_OPS)
def test_valid_non_finite_in_one_row(op, dt, value):
    fn, _, _ = OPS[op]
    clean = _valid_base(dt)
    clean["t"] = np.array([0, 4, 3, 1, 3, 2])  # the bad row's target is not the bad column
    clean["y"][BAD_ROW, BAD_COL] = 0.0  # a masked class with probability 0 adds nothing
    d = {k: v.copy() for k, v in clean.items()}
    d["x"][BAD_ROW, BAD_COL] = value
    without = {k: (np.delete(v, BAD_ROW, axis=0) if k in ROW_KEYS else v) for k, v in clean.items()}

    got = _outputs(fn(d))
    rest = _outputs(fn(without))
    full_clean = _outputs(fn(clean))
    for i, (g, r) in enumerate(zip(got, rest)):
        # every other row: exactly the result without the bad row
        other = np.delete(g, BAD_ROW, axis=0)
        assert np.array_equal(other, r, equal_nan=True) and other.tobytes() == r.tobytes(), \
            f"output {i}: rows other than the non-finite one changed"
    if op.startswith(("bcel", "focal")):
        # elementwise: only the bad element of the bad row may change
        for i, (g, fc) in enumerate(zip(got, full_clean)):
            assert np.array_equal(np.delete(g[BAD_ROW], BAD_COL), np.delete(fc[BAD_ROW], BAD_COL)), f"output {i}"
            if value != value:
                assert np.isnan(g[BAD_ROW, BAD_COL]), f"output {i}: nan logit gave {g[BAD_ROW, BAD_COL]}"
        return
    # softmax family and cross-entropy: the bad row against the reference (nan for a nan
    # or +inf row, -inf a masked class)
    for i, (g, e) in enumerate(zip(got, _ref_row(op, d))):
        assert_close(g[BAD_ROW], e, dt, err_msg=f"output {i}")
        if value != value:
            assert np.isnan(g[BAD_ROW]).all(), f"output {i}: a nan row must be nan"
        elif value < 0:  # a masked class: the row stays finite (but the masked entry of log_softmax)
            row = np.atleast_1d(g[BAD_ROW])
            assert np.isfinite(row if row.size == 1 else np.delete(row, BAD_COL)).all(), f"output {i}"


# ------------------------------------------------------------------ torch.compile options

@pytest.mark.parametrize("call, bad", [
    ("cross_entropy", dict(label_smoothing=True)),
    ("cross_entropy", dict(z_loss="1")),
    ("cross_entropy", dict(ignore_index=-100.5)),
    ("sigmoid_focal_loss", dict(alpha=True)),
    ("sigmoid_focal_loss", dict(gamma="2")),
    ("linear_cross_entropy", dict(label_smoothing=True)),
    ("linear_cross_entropy", dict(z_loss="1")),
])
def test_compiled_torch_losses_check_option_types(call, bad):
    # while compiling, the options went through float()/int() unchecked: z_loss="1" ran
    # as 1.0 and label_smoothing=True as 1.0 where the eager call raises TypeError
    torch = pytest.importorskip("torch")
    import xent_fast.torch as xt
    x = torch.randn(N, C, dtype=torch.float64)
    if call == "cross_entropy":
        args = (x, torch.tensor([0, 1, 2, 3]))
    elif call == "sigmoid_focal_loss":
        args = (x, torch.rand(N, C, dtype=torch.float64))
    else:
        args = (x, torch.randn(7, C, dtype=torch.float64), torch.tensor([0, 1, 2, 3]))
    fn = getattr(xt, call)
    with pytest.raises(TypeError, match=next(iter(bad))):
        fn(*args, **bad)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *a: fn(*a, **bad).sum(), fullgraph=True, backend="eager")
    with pytest.raises((TypeError, RuntimeError), match=next(iter(bad))):
        compiled(*args)
