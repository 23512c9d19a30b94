"""xent_fast.dask: the summary of dask arrays equals the local call's exactly, on the
threaded scheduler and on a dask.distributed LocalCluster of 2 worker processes."""

import os
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import xent_fast as xf  # noqa: E402
import xent_fast.dask as xfd  # noqa: E402
import reference as ref  # noqa: E402


@pytest.fixture
def data(rng):
    x = (rng.standard_normal((3000, 17)) * 4).astype(np.float32)
    t = rng.integers(0, 17, 3000)
    t[::9] = -100
    return x, t


@pytest.mark.parametrize("x_chunks, t_chunks", [
    ((3000, 17), 3000), ((256, 17), 256), ((333, 5), 1000), ((41, 17), 7)])
def test_threaded_scheduler_gives_exactly_the_local_summary(data, x_chunks, t_chunks):
    x, t = data
    got = xfd.score(da.from_array(x, chunks=x_chunks), da.from_array(t, chunks=t_chunks), k=3)
    assert got == xf.score(x, t, k=3).summary()


def test_leading_axes_probabilities_and_numpy_inputs(rng):
    x = rng.standard_normal((40, 6, 9))
    t = rng.integers(0, 9, (40, 6))
    y = ref.softmax(rng.standard_normal((40, 6, 9)))
    want = xf.score(x, t).summary()
    assert xfd.score(da.from_array(x, chunks=(7, 4, 9)), da.from_array(t, chunks=(40, 1))) == want
    assert xfd.score(x, t) == want
    assert xfd.score(da.from_array(x, chunks=(13, 6, 9)), y) == xf.score(x, y).summary()
    one = xfd.score(da.from_array(x[0, 0]), int(t[0, 0]))
    assert one == xf.score(x[0, 0], t[0, 0]).summary()


def test_delayed_and_split_every(data):
    x, t = data
    lazy = xfd.score(da.from_array(x, chunks=(100, 17)), t, compute=False, split_every=2)
    assert lazy.compute() == xf.score(x, t).summary()


def test_empty_and_all_ignored(rng):
    x = da.zeros((0, 4), chunks=(10, 4))
    assert xfd.score(x, da.zeros(0, dtype=np.int64, chunks=10))["rows"] == 0
    s = xfd.score(np.zeros((20, 3)), np.full(20, -100))
    assert s == xf.score(np.zeros((20, 3)), np.full(20, -100)).summary()


def test_errors_name_the_argument_and_the_global_position(data):
    x, t = data
    bad = t.copy()
    bad[2345] = 17
    with pytest.raises(ValueError, match=r"target\[2345\] = 17 is not a valid class index"):
        xfd.score(da.from_array(x, chunks=(500, 17)), da.from_array(bad, chunks=500))
    with pytest.raises(ValueError, match=r"target\[3, 4\] = 9"):
        tt = np.zeros((5, 6), np.int64)
        tt[3, 4] = 9
        xfd.score(da.zeros((5, 6, 9), chunks=(2, 4, 9)), da.from_array(tt, chunks=(2, 4)))
    with pytest.raises(TypeError, match="logits must be a floating array"):
        xfd.score(da.zeros((3, 2), dtype=np.int64), np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="class indices must be integers"):
        xfd.score(da.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="must have shape"):
        xfd.score(da.zeros((3, 2)), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="k must be a positive int"):
        xfd.score(da.zeros((3, 2)), np.zeros(3, np.int64), k=0)


def test_from_npy_reads_its_rows_lazily(tmp_path, rng):
    x = rng.standard_normal((1000, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "both.npz", logits=x, other=np.zeros(2))
    for spec in (tmp_path / "x.npy", f"{tmp_path / 'both.npz'}:logits"):
        a = xfd.from_npy(str(spec), rows_per_chunk=300)
        assert a.chunks == ((300, 300, 300, 100), (12,))
        np.testing.assert_array_equal(a.compute(), x)
    np.savez_compressed(tmp_path / "c.npz", logits=x)
    with pytest.raises(ValueError, match="compressed"):
        xfd.from_npy(f"{tmp_path / 'c.npz'}:logits")


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    # the worker processes import the same xent_fast as this test
    root = str(Path(xf.__file__).resolve().parent.parent)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = root + (os.pathsep + old if old else "")
    try:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, scheduler_port=0,
                                           silence_logs=50)
    except Exception as exc:  # no sockets or processes here
        pytest.skip(f"cannot start a LocalCluster: {exc}")
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_local_cluster_of_two_processes(cluster_client, tmp_path, rng):
    x = (rng.standard_normal((20000, 50)) * 3).astype(np.float32)
    t = rng.integers(0, 50, 20000)
    t[::17] = -100
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    want = xf.score(x, t).summary()
    # arrays built on the client and shipped, and files each worker reads itself
    got = xfd.score(da.from_array(x, chunks=(1500, 50)), da.from_array(t, chunks=1500))
    assert got == want
    lazy = xfd.score(xfd.from_npy(str(tmp_path / "x.npy"), rows_per_chunk=2500),
                     xfd.from_npy(str(tmp_path / "t.npy"), rows_per_chunk=2500))
    assert lazy == want
    # both workers took part
    who = cluster_client.run(lambda: os.getpid())
    assert len(set(who.values())) == 2
    # errors come back from the workers with the global position
    bad = t.copy()
    bad[19999] = 50
    with pytest.raises(ValueError, match=r"target\[19999\] = 50"):
        xfd.score(da.from_array(x, chunks=(1500, 50)), da.from_array(bad, chunks=1500))


def test_from_npy_reads_format_version_3(tmp_path, rng):
    x = rng.standard_normal((50, 3))
    with open(tmp_path / "x3.npy", "wb") as f:
        np.lib.format.write_array(f, x, version=(3, 0))
    np.testing.assert_array_equal(xfd.from_npy(str(tmp_path / "x3.npy"), 20).compute(), x)


def test_from_npy_of_a_file_cut_short_later_is_an_error_naming_it(tmp_path):
    # the tasks read with plain reads: a file cut after the graph was built is an error
    # (a memory map would kill the worker with SIGBUS)
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4096, 4), np.float32))
    a = xfd.from_npy(str(path), rows_per_chunk=1000)
    os.truncate(path, 2000)
    with pytest.raises(ValueError, match=f"{path} is truncated"):
        a.compute(scheduler="sync")
    os.mkfifo(tmp_path / "fifo.npy")
    with pytest.raises(ValueError, match="not a regular file"):
        xfd.from_npy(str(tmp_path / "fifo.npy"))


def test_a_bad_uint64_target_is_named_with_its_value(data):
    x, t = data
    bad = t.astype(np.uint64)
    bad[bad == 2**64 - 100] = 0
    bad[t == -100] = 0
    bad[1234] = 2**64 - 100             # wraps to -100, the ignore index, as int64
    with pytest.raises(ValueError, match=rf"target\[1234\] = {2**64 - 100} is not a valid"):
        xfd.score(da.from_array(x, chunks=(500, 17)), da.from_array(bad, chunks=500))


def test_arrays_of_unknown_chunk_sizes_are_scored(data):
    # Boolean indexing leaves the chunk sizes unknown (nan); they are learnt first.
    x, t = data
    keep = x[:, 0] > 0
    X, T = da.from_array(x, chunks=(256, 17)), da.from_array(t, chunks=256)
    m = X[:, 0] > 0
    assert xfd.score(X[m], T[m], k=3) == xf.score(x[keep], t[keep], k=3).summary()


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-3, ValueError), (True, TypeError),
                                      (1.5, TypeError), ("4", TypeError)])
def test_from_npy_checks_rows_per_chunk_before_opening(bad, exc):
    with pytest.raises(exc, match="rows_per_chunk"):
        xfd.from_npy("no-such-file.npy", rows_per_chunk=bad)


def test_from_npy_of_no_path_is_a_type_error():
    with pytest.raises(TypeError, match="path"):
        xfd.from_npy(None)
