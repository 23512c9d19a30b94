"""A representative run of every public function, small enough for valgrind.

Used by tests/valgrind.sh; also runnable on its own. Covers both target kinds and every
option of the cross-entropy, in-place gradients, short rows (the tiled path), long rows
(the blocked path), masked and NaN rows, the binary family, the information measures,
scoring, and calls that raise.
"""

import numpy as np

import xent_fast as xf


def main() -> None:
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
            xf.softmax(x), xf.log_softmax(x), xf.logsumexp(x)
            for kw in ({}, {"weight": w, "label_smoothing": 0.1}, {"z_loss": 1e-3, "softcap": 5.0},
                       {"reduction": "none", "grad_output": rng.standard_normal(n_rows)}):
                xf.cross_entropy_and_grad(x, t, **kw)
                xf.cross_entropy_and_grad(x, y, **{k: v for k, v in kw.items()})
            g = x.copy()
            xf.cross_entropy_and_grad(g, t, grad_out=g)
            xf.softmax(g, out=g)
            xf.binary_cross_entropy_with_logits_and_grad(x, (x > 0).astype(dtype), pos_weight=w)
            xf.binary_cross_entropy_and_grad(y, (y > 0.2).astype(dtype))
            xf.sigmoid_focal_loss_and_grad(x, (x > 0).astype(dtype), reduction="mean")
            xf.info.entropy(y), xf.info.kl_divergence(y, y), xf.info.surprisal(y)
            xf.score(x, t, k=2).summary(), xf.score(x, y, k=7).summary()
            xf.score(x, t, n_threads=2)
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
