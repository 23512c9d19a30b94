"""Shared tolerances and small helpers for the xent_fast tests (not a reference)."""

import signal

import numpy as np

# float64: ~1e-12 relative / 1e-14 absolute against the float64 reference.
# float32 (and float16, computed in float32): ~1e-5 relative, 1e-6 absolute.
TOL = {
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-14),
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6),
}


def comp_dtype(dtype):
    """The computation (and result) dtype for logits of `dtype`."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def assert_close(actual, expected, dtype, **override):
    """Compare a package result with a float64 reference at `dtype`'s tolerance."""
    tol = dict(TOL[comp_dtype(dtype)])
    tol.update(override)
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64),
                               np.asarray(expected, dtype=np.float64),
                               equal_nan=True, **tol)


def readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def assert_scalar(x, dtype):
    """A NumPy scalar (np.generic) of exactly `dtype`."""
    assert isinstance(x, np.generic), f"expected a NumPy scalar, got {type(x)!r}"
    assert x.dtype == np.dtype(dtype), f"expected {np.dtype(dtype)}, got {x.dtype}"


def default_signals():
    """A ``preexec_fn`` giving a child process the default action of the signals that a
    test sends it: a shell that starts the test run in the background (``cmd &``) or
    under ``nohup`` passes them on ignored, and Python then installs no handler."""
    for name in ("SIGINT", "SIGQUIT", "SIGHUP", "SIGTERM", "SIGUSR1", "SIGALRM"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
