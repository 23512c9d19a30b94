"""Coverage-guided fuzzing of xent_fast's public entry points with atheris.

Not part of the default test run (it runs until stopped). From the repository root,
after ``python setup.py build_ext --inplace`` and ``pip install atheris`` (without
PYTHONPATH=. it fuzzes the installed xent_fast instead):

    PYTHONPATH=. python tests/fuzz_atheris.py -max_total_time=120     # bounded run
    PYTHONPATH=. python tests/fuzz_atheris.py -atheris_runs=200000    # a number of inputs

Each input picks a function, a dtype, a shape (empty and 1-D included), a memory layout,
option values and array contents (NaN, +-inf, huge and out-of-range values included)
from the fuzzer's bytes. The only exceptions allowed to escape are TypeError and
ValueError; anything else, a crash or a hang is a finding. Valid calls are also checked
for basic invariants (softmax rows in [0, 1] summing to 1, finite losses >= 0).
"""

import sys

import atheris
import numpy as np

with atheris.instrument_imports():
    import xent_fast as xf

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_,
          np.complex64, object]
SPECIALS = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 1e-40, 88.0, -104.0]
FUNCS = ["softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_and_grad",
         "bce", "bce_and_grad", "bce_logits", "bce_logits_and_grad", "focal", "entropy",
         "kl", "surprisal"]


def _array(fdp, shape, dtype):
    n = int(np.prod(shape))
    vals = np.array([fdp.ConsumeRegularFloat() if fdp.ConsumeBool()
                     else SPECIALS[fdp.ConsumeIntInRange(0, len(SPECIALS) - 1)]
                     for _ in range(min(n, 64))] or [0.0])
    data = np.resize(vals, n).reshape(shape)
    with np.errstate(all="ignore"):
        arr = data.astype(dtype) if dtype is not object else data.astype(object)
    layout = fdp.ConsumeIntInRange(0, 3)
    if layout == 1 and arr.ndim >= 2:
        arr = np.asfortranarray(arr)
    elif layout == 2 and arr.ndim >= 1:
        arr = arr[::-1]
    elif layout == 3:
        arr.setflags(write=False)
    return arr


def _options(fdp):
    pick = fdp.ConsumeIntInRange
    return {
        "reduction": ["mean", "sum", "none", "bad"][pick(0, 3)],
        "n_threads": [None, 1, 2, -1, 0][pick(0, 4)],
        "label_smoothing": [0.0, 0.1, 1.0, -0.5][pick(0, 3)],
        "z_loss": [0.0, 1e-3, -1.0][pick(0, 2)],
        "softcap": [None, 5.0, 0.0][pick(0, 2)],
        "ignore_index": [-100, 0, -1][pick(0, 2)],
    }


def one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    ndim = fdp.ConsumeIntInRange(0, 3)
    shape = tuple(fdp.ConsumeIntInRange(0, 6) for _ in range(ndim))
    dtype = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    x = _array(fdp, shape, dtype)
    func = FUNCS[fdp.ConsumeIntInRange(0, len(FUNCS) - 1)]
    opt = _options(fdp)
    nt = opt["n_threads"]
    try:
        if func in ("softmax", "log_softmax", "logsumexp"):
            out = getattr(xf, func)(x, n_threads=nt)
            if func == "softmax" and np.all(np.isfinite(x)) and out.size:
                assert np.all((out >= 0) & (out <= 1))
                assert np.allclose(out.sum(-1), 1, atol=1e-3)
        elif func.startswith("cross_entropy"):
            c = shape[-1] if shape else 1
            if fdp.ConsumeBool():     # class indices, possibly out of range
                t = np.array([fdp.ConsumeIntInRange(-2, c + 1) for _ in range(int(np.prod(shape[:-1])))],
                             dtype=np.int64).reshape(shape[:-1]) if ndim else np.int64(0)
            else:                     # probabilities (or a wrongly shaped float array)
                t = np.abs(_array(fdp, shape if fdp.ConsumeBool() else shape[:-1], np.float64))
            kw = {k: opt[k] for k in ("reduction", "label_smoothing", "z_loss", "softcap",
                                      "ignore_index", "n_threads")}
            res = getattr(xf, func)(x, t, **kw)
            loss = res[0] if isinstance(res, tuple) else res
            finite = np.isfinite(np.asarray(loss))
            assert np.all(np.asarray(loss)[finite] >= -1e-3)
        elif func in ("bce", "bce_and_grad"):
            t = _array(fdp, shape, np.float64)
            f = xf.binary_cross_entropy if func == "bce" else xf.binary_cross_entropy_and_grad
            f(x, t, reduction=opt["reduction"], n_threads=nt)
        elif func in ("bce_logits", "bce_logits_and_grad", "focal"):
            t = _array(fdp, shape, np.float64)
            if func == "focal":
                xf.sigmoid_focal_loss_and_grad(x, t, reduction=opt["reduction"], n_threads=nt)
            else:
                f = (xf.binary_cross_entropy_with_logits if func == "bce_logits"
                     else xf.binary_cross_entropy_with_logits_and_grad)
                pw = np.abs(_array(fdp, shape[-1:], np.float64)) if fdp.ConsumeBool() else None
                f(x, t, pos_weight=pw, reduction=opt["reduction"], n_threads=nt)
        elif func == "entropy":
            xf.info.entropy(x, base=[None, 2, 10, 1][fdp.ConsumeIntInRange(0, 3)])
        elif func == "kl":
            xf.info.kl_divergence(x, _array(fdp, shape, np.float64))
        else:
            xf.info.surprisal(x)
    except (TypeError, ValueError):
        pass


def main():
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
