"""A representative run of every public function, small enough for valgrind.

Used by tests/valgrind.sh; also runnable on its own. Covers both target kinds and every
option of the cross-entropy, in-place gradients, short rows (the tiled path), long rows
(the blocked path), masked and NaN rows, the binary family, the information measures,
scoring, and calls that raise. Every result is used by a branch in numpy (_use), so
that an output left partly uninitialised is reported where it is read.
"""

import os

import numpy as np

import xent_fast as xf


def _use(*results):
    """Branch on every value of the results (arrays, numbers, tuples, dicts, Scores):
    memcheck reports a branch on an uninitialised value, not a copy of one. The test
    and the branch run in numpy's code, outside the interpreter, so that no suppression
    of tests/valgrind-python.supp applies."""
    for r in results:
        if isinstance(r, (tuple, list)):
            _use(*r)
        elif isinstance(r, dict):
            _use(*r.values())
        elif hasattr(r, "per_row"):                         # a Scores
            _use(*(getattr(r, a) for a in r.__slots__), r.summary())
        elif r is not None:
            a = np.asarray(r)
            if a.dtype.kind in "fc":
                a = np.isnan(a)
            if np.logical_or.reduce(a.astype(bool), axis=None):
                pass


def main() -> None:
    print(f"xent_fast from {os.path.dirname(xf.__file__)}, SIMD level {xf.config()['simd']}")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n_rows, n_cls in ((37, 5), (9, 3000), (3, 1)):
            x = (rng.standard_normal((n_rows, n_cls)) * 4).astype(dtype)
            x[0, 0] = -np.inf
            if n_rows > 3:
                x[3, :] = np.nan
            t = rng.integers(0, n_cls, n_rows)
            t[1] = -100
            y = rng.dirichlet(np.ones(n_cls), n_rows).astype(dtype)
            w = rng.uniform(0.5, 2, n_cls).astype(dtype)
            _use(xf.softmax(x), xf.log_softmax(x), xf.logsumexp(x))
            for kw in ({}, {"weight": w, "label_smoothing": 0.1}, {"z_loss": 1e-3, "softcap": 5.0},
                       {"reduction": "none", "grad_output": rng.standard_normal(n_rows)}):
                _use(xf.cross_entropy_and_grad(x, t, **kw))
                _use(xf.cross_entropy_and_grad(x, y, **dict(kw)))
            g = x.copy()
            _use(xf.cross_entropy_and_grad(g, t, grad_out=g))
            _use(xf.softmax(g, out=g))
            pos = (x > 0).astype(dtype)
            _use(xf.binary_cross_entropy_with_logits_and_grad(x, pos, pos_weight=w))
            _use(xf.binary_cross_entropy_and_grad(y, (y > 0.2).astype(dtype)))
            _use(xf.sigmoid_focal_loss_and_grad(x, pos, reduction="mean"))
            _use(xf.info.entropy(y), xf.info.kl_divergence(y, y), xf.info.surprisal(y))
            _use(xf.score(x, t, k=2), xf.score(x, y, k=7))
            _use(xf.score(x, t, n_threads=2))
            bad = t.copy()
            bad[-1] = n_cls
            for call in (lambda: xf.cross_entropy_and_grad(x, bad),
                         lambda: xf.cross_entropy(x, bad, reduction="none"),
                         lambda: xf.score(x, bad),
                         lambda: xf.binary_cross_entropy(y + 2, y)):
                try:
                    call()
                except ValueError:
                    pass
    print("valgrind calls done")


if __name__ == "__main__":
    main()
