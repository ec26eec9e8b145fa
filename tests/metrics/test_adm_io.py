"""ADM-format .npz: export bit-exact against the sampling scripts' conversions, streaming reads, reference keys."""

import zipfile

import numpy as np
import pytest
import torch

from ablate.metrics.adm_io import (
    REFERENCE_KEYS,
    AdmNpzWriter,
    AdmReference,
    MissingNpzKey,
    iter_npz_batches,
    merge_adm_npz,
    npz_array_header,
    read_adm_npz,
    samples_to_uint8,
    save_adm_npz,
)


def _samples(n=10, c=3, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, hw, hw, generator=g) * 2.4 - 1.2  # overshoot on both sides: the clamp matters
    grid = torch.arange(-255, 256) / 255.0  # every half-step of the pixel grid and the exact edges
    x.view(-1)[: grid.numel()] = grid[: min(grid.numel(), x.numel())]
    return x


def _dit_reference(x: torch.Tensor) -> np.ndarray:
    """DiT/SiT sample_ddp.py in numpy float32: clip(127.5 x + 128, 0, 255), truncating cast, NHWC."""
    a = x.numpy().astype(np.float32)
    a = np.clip(np.float32(127.5) * a + np.float32(128.0), 0, 255).astype(np.uint8)
    a = a.transpose(0, 2, 3, 1)
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def _adm_reference(x: torch.Tensor) -> np.ndarray:
    """guided-diffusion image_sample.py in numpy float32: clip((x + 1) * 127.5, 0, 255), truncating cast."""
    a = x.numpy().astype(np.float32)
    return np.clip((a + np.float32(1)) * np.float32(127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def test_conversions_match_the_reference_scripts_bit_exactly():
    x = _samples(n=12)
    assert np.array_equal(samples_to_uint8(x).numpy(), _dit_reference(x))
    assert np.array_equal(samples_to_uint8(x, "adm").numpy(), _adm_reference(x))
    # the two scripts differ by the rounding: DiT's is (x + 1) * 127.5 rounded half up, ADM's truncated
    assert (samples_to_uint8(x).int() - samples_to_uint8(x, "adm").int()).unique().tolist() == [0, 1]
    edges = samples_to_uint8(torch.tensor([-1.0, 1.0, -5.0, 5.0]).view(1, 1, 1, 4))[0, 0, :, 0].tolist()
    assert edges == [0, 255, 0, 255]


def test_export_reads_back_bit_exactly_with_labels(tmp_path):
    x, y = _samples(n=10), torch.randint(0, 1000, (10,))
    path = save_adm_npz(tmp_path / "s.npz", x, y, batch_size=3)
    arr, labels = read_adm_npz(path)
    assert arr.dtype == np.uint8 and arr.shape == (10, 8, 8, 3)
    assert np.array_equal(arr, _dit_reference(x))
    assert labels.dtype == np.int64 and np.array_equal(labels, y.numpy())
    with zipfile.ZipFile(path) as z:  # np.savez's layout: stored members arr_0.npy, arr_1.npy
        assert z.namelist() == ["arr_0.npy", "arr_1.npy"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())


def test_streaming_writer_with_unknown_count_and_grey_images(tmp_path):
    x = _samples(n=7, c=1)
    with AdmNpzWriter(tmp_path / "g.npz") as w:  # no num_images: spooled, header written at close
        for i in range(0, 7, 3):
            w.write(x[i : i + 3])
    arr, labels = read_adm_npz(tmp_path / "g.npz")
    assert labels is None and arr.shape == (7, 8, 8, 3)
    assert np.array_equal(arr, _dit_reference(x))  # grey repeated to RGB
    assert (arr[..., 0] == arr[..., 2]).all()
    assert not list(tmp_path.glob("*.raw")) and not list(tmp_path.glob("*.partial"))


def test_writer_accepts_uint8_batches(tmp_path):
    u8 = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    with AdmNpzWriter(tmp_path / "u.npz", num_images=5) as w:
        w.write(u8[:2])
        w.write(torch.from_numpy(u8[2:]).permute(0, 3, 1, 2))  # uint8 NCHW tensor
    assert np.array_equal(read_adm_npz(tmp_path / "u.npz")[0], u8)


def test_writer_failures_leave_no_file(tmp_path):
    x = _samples(n=4)
    p = tmp_path / "bad.npz"
    w = AdmNpzWriter(p, num_images=5)
    w.write(x)
    with pytest.raises(ValueError, match="num_images=5"):
        w.close()
    assert not p.exists() and not list(tmp_path.iterdir())
    with pytest.raises(RuntimeError), AdmNpzWriter(p) as w:
        w.write(x)
        raise RuntimeError("sampler crashed")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="every batch or for none"), AdmNpzWriter(p) as w:
        w.write(x[:2], torch.tensor([1, 2]))
        w.write(x[2:])
    with pytest.raises(ValueError, match="NaN"):
        samples_to_uint8(torch.full((1, 3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="C in"):
        samples_to_uint8(torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("writer", [np.savez, np.savez_compressed])
def test_streaming_reader(tmp_path, writer):
    a = np.random.default_rng(1).integers(0, 256, (11, 5, 6, 3), dtype=np.uint8)
    writer(tmp_path / "a.npz", arr_0=a, other=np.arange(3.0))
    batches = list(iter_npz_batches(tmp_path / "a.npz", 4))
    assert [len(b) for b in batches] == [4, 4, 3] and np.array_equal(np.concatenate(batches), a)
    assert batches[0].flags.writeable
    assert npz_array_header(tmp_path / "a.npz") == ((11, 5, 6, 3), np.dtype(np.uint8))
    with pytest.raises(MissingNpzKey, match="no array 'arr_1'"):
        next(iter_npz_batches(tmp_path / "a.npz", 4, key="arr_1"))


def _fake_reference(path, keys=("mu", "sigma", "mu_s", "sigma_s", "arr_0"), n=6):
    rng = np.random.default_rng(0)
    full = {"mu": rng.standard_normal(2048), "sigma": np.eye(2048), "mu_s": rng.standard_normal(2023),
            "sigma_s": np.eye(2023), "arr_0": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)}
    np.savez(path, **{k: full[k] for k in keys})
    return full


def test_reference_keys_feed_their_metrics(tmp_path):
    full = _fake_reference(tmp_path / "ref.npz")
    ref = AdmReference(tmp_path / "ref.npz")
    mu, sigma = ref.statistics("fid")
    assert mu.dtype == np.float64 and np.array_equal(mu, full["mu"]) and sigma.shape == (2048, 2048)
    assert np.array_equal(ref.statistics("sfid")[0], full["mu_s"])
    assert ref.num_images() == 6 and np.array_equal(np.concatenate(list(ref.images(4))), full["arr_0"])
    assert REFERENCE_KEYS == {"fid": ("mu", "sigma"), "sfid": ("mu_s", "sigma_s"), "precision": ("arr_0",),
                              "recall": ("arr_0",)}


@pytest.mark.parametrize("missing,metric", [("mu_s", "sfid"), ("sigma", "fid"), ("arr_0", "precision")])
def test_missing_reference_key_names_file_key_and_metric(tmp_path, missing, metric):
    keys = [k for k in ("mu", "sigma", "mu_s", "sigma_s", "arr_0") if k != missing]
    _fake_reference(tmp_path / "partial_ref.npz", keys)
    ref = AdmReference(tmp_path / "partial_ref.npz")
    with pytest.raises(MissingNpzKey) as e:
        ref.statistics(metric) if metric in ("fid", "sfid") else ref.num_images()
    msg = str(e.value)
    assert "partial_ref.npz" in msg and repr(missing) in msg and metric in msg


def test_reference_shape_is_checked(tmp_path):
    np.savez(tmp_path / "r.npz", mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(ValueError, match="expected \\(2048,\\)"):
        AdmReference(tmp_path / "r.npz").statistics("fid")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AdmReference(tmp_path / "nope.npz")


def test_merge_rank_parts_in_order(tmp_path):
    x, y = _samples(n=9), torch.arange(9)
    parts = [save_adm_npz(tmp_path / f"part{r}.npz", x[a:b], y[a:b]) for r, (a, b) in enumerate([(0, 4), (4, 9)])]
    out = merge_adm_npz(tmp_path / "all.npz", parts, batch_size=3)
    arr, labels = read_adm_npz(out)
    assert np.array_equal(arr, _dit_reference(x)) and np.array_equal(labels, y.numpy())
