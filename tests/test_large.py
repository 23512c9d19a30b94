"""Arrays of more than 2**31 elements: 64-bit offsets everywhere.

A sparse float32 file of shape (2**31 // 1000 + 2, 1000) (8.6 GB virtual, a few KB
on disk) is memory-mapped; only its last rows hold data. The softmax family and the
cross-entropy run on views of those last rows (data pointers about 8.6 GB past the
file's start), and ``cross_entropy`` runs on the WHOLE read-only memmap with every row
ignored but the last ones: the kernel then reads the logits only at flat element
offsets ``i * C + t`` beyond 2**31 (and 2**32 bytes), which a 32-bit offset would wrap.
Ignored rows are never read, so this takes well under a second, and the whole array
must be used as is (a copy would need 8.6 GB).
"""

import os

import numpy as np
import pytest

import xent_fast as xf
import reference as ref
from helpers import assert_close

C = 1000
ROWS = 2**31 // C + 2          # 2_147_485 rows
K = 3                          # rows with data, at the end
assert ROWS * C > 2**31 and (ROWS - 1) * C > 2**31


def _last_rows():
    rng = np.random.default_rng(31)
    x = (rng.standard_normal((K, C)) * 4).astype(np.float32)
    # distinctive entries at the very ends of the rows, the file's last element included
    x[:, -1] = [9.5, -3.25, 12.0]
    x[:, 0] = [-7.0, 11.0, 0.5]
    return x


TARGETS = np.array([C - 1, 0, C - 1])   # the last row's target is the file's last element


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("large") / "logits.f32"
    try:
        mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(ROWS, C))
    except (OSError, ValueError, OverflowError) as exc:
        pytest.skip(f"cannot create an 8.6 GB sparse file here: {exc}")
    try:
        if os.stat(path).st_blocks * 512 > 64 * 2**20:
            pytest.skip("the filesystem does not keep the file sparse")
        mm[-K:] = _last_rows()
        mm.flush()
    finally:
        del mm
    if os.stat(path).st_blocks * 512 > 64 * 2**20:
        path.unlink()
        pytest.skip("the filesystem does not keep the file sparse")
    yield path
    path.unlink()


@pytest.fixture(scope="module")
def big(big_file):
    """The whole file, read-only."""
    return np.memmap(big_file, dtype=np.float32, mode="r", shape=(ROWS, C))


def _offset_elements(view, base):
    return (view.ctypes.data - base.ctypes.data) // view.itemsize


def test_views_of_the_last_rows_point_past_2_31_elements(big):
    assert big.size > 2**31 and not big.flags.writeable
    assert _offset_elements(big[-1:], big) > 2**31
    assert _offset_elements(big[-2:], big) + 2 * C > 2**31  # x[-2:] straddles element 2**31
    np.testing.assert_array_equal(big[-K:], _last_rows())


@pytest.mark.parametrize("k", [1, 2, 3])
def test_softmax_family_on_the_last_rows(big, k):
    v = big[-k:]
    assert v.flags.c_contiguous
    x = _last_rows()[-k:]
    assert_close(xf.logsumexp(v), ref.logsumexp(x), np.float32)
    assert_close(xf.softmax(v), ref.softmax(x), np.float32)
    assert_close(xf.log_softmax(v), ref.log_softmax(x), np.float32)
    out = np.empty(k, np.float32)
    assert xf.logsumexp(v, out=out) is out
    assert_close(out, ref.logsumexp(x), np.float32)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_cross_entropy_on_the_last_rows(big, k):
    v = big[-k:]
    x, t = _last_rows()[-k:], TARGETS[-k:]
    loss = xf.cross_entropy(v, t, reduction="none")
    assert loss.shape == (k,) and loss.dtype == np.float32
    assert_close(loss, ref.cross_entropy(x, t, reduction="none"), np.float32)
    loss, grad = xf.cross_entropy_and_grad(v, t, reduction="sum", z_loss=1e-4)
    rl, rg = ref.cross_entropy_and_grad(x, t, reduction="sum", z_loss=1e-4)
    assert_close(loss, rl, np.float32)
    assert_close(grad, rg, np.float32)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_cross_entropy_on_the_whole_array_reads_past_2_31(big, n_threads):
    # Every row is ignored but the last K: the kernel reads logits[i * C + t] with
    # i * C > 2**31 only.
    t = np.full(ROWS, -100, dtype=np.int64)
    t[-K:] = TARGETS
    expected = ref.cross_entropy(_last_rows(), TARGETS, reduction="none")

    loss = xf.cross_entropy(big, t, reduction="none", n_threads=n_threads)
    assert loss.shape == (ROWS,) and loss.dtype == np.float32
    assert_close(loss[-K:], expected, np.float32)
    assert not loss[:-K].any()  # ignored rows: exactly 0

    mean = xf.cross_entropy(big, t, n_threads=n_threads)  # "mean" over the K counted rows
    assert_close(mean, expected.mean(), np.float32)
    total = xf.cross_entropy(big, t, reduction="sum", label_smoothing=0.1, n_threads=n_threads)
    assert_close(total, ref.cross_entropy(_last_rows(), TARGETS, reduction="sum", label_smoothing=0.1),
                 np.float32)


@pytest.mark.parametrize("bad", [C, -1, 2**40])
def test_bad_class_index_past_2_31_is_reported(big, bad):
    t = np.full(ROWS, -100, dtype=np.int64)
    t[-K:] = TARGETS
    t[-1] = bad
    with pytest.raises(ValueError, match="target") as e:
        xf.cross_entropy(big, t, n_threads=2)
    assert f"[{ROWS - 1}]" in str(e.value) and str(bad) in str(e.value)
