"""VAE latents with a tiny random AutoencoderKL: encode once, read back, scale 0.18215, offline errors."""

import os

import pytest
import torch

from ablate.data import LATENT_SCALE, LatentDataset, TensorImageDataset, encode_latents, load_vae

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=16)
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return TensorImageDataset(torch.rand(5, 3, 16, 16, generator=g) * 2 - 1, torch.arange(5))


def test_encode_once_read_back_scaled_mean(tiny_vae_dir, images, tmp_path):
    out = tmp_path / "lat.pt"
    encode_latents(images, tiny_vae_dir, out, batch_size=2, posterior="mean")
    ds = LatentDataset(out, flip=False)
    assert len(ds) == 5 and ds.shape == (4, 8, 8) and ds.scale == LATENT_SCALE
    vae = load_vae(tiny_vae_dir)
    with torch.no_grad():
        mean = vae.encode(images.images).latent_dist.mean
        mean_flipped = vae.encode(images.images.flip(-1)).latent_dist.mean
    z, y = ds[3]
    assert y == 3
    torch.testing.assert_close(z, 0.18215 * mean[3], rtol=1e-5, atol=1e-6)
    # view 1 is the *encoded mirror image*, not a mirrored latent
    torch.testing.assert_close(ds.latents[:, 1], 0.18215 * mean_flipped, rtol=1e-5, atol=1e-6)
    # a second call reuses the file (written once) ...
    mtime = os.stat(out).st_mtime_ns
    encode_latents(images, tiny_vae_dir, out, posterior="mean")
    assert os.stat(out).st_mtime_ns == mtime
    # ... but refuses to reuse it for different settings
    with pytest.raises(ValueError, match="different settings"):
        encode_latents(images, tiny_vae_dir, out, posterior="sample")


def test_sampled_posterior_is_seeded_and_flip_view_is_random(tiny_vae_dir, images, tmp_path):
    a = encode_latents(images, tiny_vae_dir, tmp_path / "a.pt", seed=3)
    b = encode_latents(images, tiny_vae_dir, tmp_path / "b.pt", seed=3)
    la, lb = LatentDataset(a), LatentDataset(b)
    assert torch.equal(la.latents, lb.latents)
    ds = LatentDataset(a, flip=True, generator=torch.Generator().manual_seed(0))
    views = [torch.equal(ds[0][0], ds.latents[0, 1]) for _ in range(40)]
    assert 5 < sum(views) < 35


def test_offline_errors(tmp_path, images):
    with pytest.raises(FileNotFoundError, match="local Hugging Face cache.*pass vae=DIR"):
        load_vae("nobody/not-a-cached-vae")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_vae(tmp_path)
    with pytest.raises(FileNotFoundError, match="encode_latents"):
        LatentDataset(tmp_path / "missing.pt")
