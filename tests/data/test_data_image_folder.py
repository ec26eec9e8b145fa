"""ADM center crop (closed-form cases) and random horizontal flip of the image-folder dataset."""

import numpy as np
import pytest
import torch
from PIL import Image

from ablate.data import ImageFolderDataset, center_crop_arr


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_center_crop_wide_image_takes_the_middle_columns():
    s = 8
    arr = _rgb(s, 3 * s)  # short side = s: no halving, scale 1 (no resize), crop columns [s, 2s)
    out = center_crop_arr(Image.fromarray(arr), s)
    assert np.array_equal(out, arr[:, s: 2 * s])


def test_center_crop_odd_margin_goes_bottom_right():
    s = 8
    arr = _rgb(s + 3, s)  # tall by 3 rows: crop starts at (3 // 2) = 1
    out = center_crop_arr(Image.fromarray(arr), s)
    assert np.array_equal(out, arr[1: 1 + s])


def test_center_crop_halves_with_box_filter_then_keeps_size():
    s = 8
    arr = _rgb(2 * s, 2 * s)  # short side >= 2s: one BOX halving = 2x2 block means; then scale 1
    out = center_crop_arr(Image.fromarray(arr), s).astype(np.float64)
    block_mean = arr.reshape(s, 2, s, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(out - block_mean).max() <= 1.0  # PIL rounds the mean to an integer


@pytest.fixture
def folder(tmp_path):
    for cls, seed in (("b_cat", 1), ("a_dog", 2)):
        (tmp_path / cls).mkdir()
        Image.fromarray(_rgb(12, 20, seed)).save(tmp_path / cls / "x.png")
    return tmp_path


def test_image_folder_labels_range_and_flip(folder):
    plain = ImageFolderDataset(folder, 8, flip_p=0.0)
    flipped = ImageFolderDataset(folder, 8, flip_p=1.0)
    assert plain.classes == ["a_dog", "b_cat"] and len(plain) == 2
    x, y = plain[1]
    assert y == 1 and x.shape == (3, 8, 8) and x.dtype == torch.float32
    crop = center_crop_arr(Image.open(folder / "b_cat" / "x.png").convert("RGB"), 8)
    assert torch.equal(x, torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 127.5 - 1.0)
    assert torch.equal(flipped[1][0], x.flip(-1))
    half = ImageFolderDataset(folder, 8, flip_p=0.5, generator=torch.Generator().manual_seed(0))
    draws = [torch.equal(half[1][0], x) for _ in range(40)]
    assert 5 < sum(draws) < 35  # both orientations occur


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path, 8)
    with pytest.raises(ValueError, match="flip_p"):
        ImageFolderDataset(tmp_path, 8, flip_p=2.0)
