"""Official-checkpoint loader: round trips through tiny models saved in the official formats (nothing is
downloaded), SiT's 8-channel head used as 4, the SiT time/sign adapter, and the mismatch error message."""

import argparse

import pytest
import torch

from ablate.models import DiT
from ablate.models.checkpoints import SiTPaperTime, infer_config, load_official

CFG = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=1, num_classes=10)


def _tiny(seed: int, **kw) -> DiT:
    torch.manual_seed(seed)
    m = DiT(**{**CFG, **kw})
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name != "pos_embed":
                p.normal_(0, 0.1)  # non-zero everywhere so that the outputs depend on every tensor
    return m.eval()


def _inputs(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 4, 8, 8, generator=g),
        torch.tensor([3, 400, 999])[:batch],
        torch.tensor([1, 2, 9]),
    )


def test_plain_dit_state_dict_round_trip(tmp_path):
    src = _tiny(0)
    path = tmp_path / "DiT-tiny-8x8.pt"
    torch.save(src.state_dict(), path)
    model, info = load_official(path, num_heads=1)
    x, t, y = _inputs()
    torch.testing.assert_close(model(x, t, y), src(x, t, y), rtol=0, atol=0)
    assert not model.training
    assert (info.kind, info.network_time, info.prediction, info.output_sign) == (
        "dit",
        "ddpm_index",
        "noise",
        1,
    )
    assert info.entry == "state_dict" and info.num_timesteps == 1000
    assert model(x, t, y).shape == (3, 8, 8, 8)  # DiT keeps its learned-variance channels
    for k in (
        "depth",
        "hidden_size",
        "patch_size",
        "input_size",
        "in_channels",
        "num_classes",
        "learn_sigma",
    ):
        assert info.config[k] == getattr(src, k)
    with pytest.raises(ValueError, match="paper_time"):
        info.paper_time(model)


def test_infer_config_reads_every_architecture_field():
    with torch.device("meta"):
        m = DiT(
            input_size=16,
            patch_size=4,
            in_channels=3,
            hidden_size=96,
            depth=3,
            num_heads=2,
            num_classes=7,
            mlp_ratio=2.0,
            learn_sigma=False,
        )
    with pytest.warns(UserWarning, match="num_heads"):  # width 96 is not a known width: heads are guessed
        cfg = infer_config(m.state_dict())
    assert infer_config(m.state_dict(), num_heads=2)["num_heads"] == 2
    assert cfg == dict(
        depth=3,
        hidden_size=96,
        patch_size=4,
        input_size=16,
        in_channels=3,
        learn_sigma=False,
        num_heads=1,
        mlp_ratio=2.0,
        num_classes=7,
        class_dropout_prob=0.1,
    )
    with torch.device("meta"):
        xl = DiT()  # the official XL/2 defaults: heads from the paper's table
    assert infer_config(xl.state_dict())["num_heads"] == 16


def test_training_checkpoint_prefers_ema_and_tolerates_args_and_prefixes(tmp_path):
    ema, raw = _tiny(1), _tiny(2)
    ckpt = {
        "model": {f"module.{k}": v for k, v in raw.state_dict().items()},  # DDP-wrapped names
        "ema": ema.state_dict(),
        "opt": {"state": {}, "param_groups": []},
        "args": argparse.Namespace(model="DiT-XL/2", image_size=256),
    }
    path = tmp_path / "0400000.pt"
    torch.save(ckpt, path)
    x, t, y = _inputs()
    model, info = load_official(path, num_heads=1)  # kind from args.model
    assert info.kind == "dit" and info.entry == "ema"
    torch.testing.assert_close(model(x, t, y), ema(x, t, y), rtol=0, atol=0)
    model, info = load_official(path, kind="dit", use_ema=False, num_heads=1)
    assert info.entry == "model"
    torch.testing.assert_close(model(x, t, y), raw(x, t, y), rtol=0, atol=0)


def test_sit_checkpoint_uses_four_of_its_eight_channels_and_adapts_time(tmp_path):
    src = _tiny(3)  # learn_sigma=True: 8 output channels, as in SiT-XL-2-256x256.pt
    assert src.final_layer.linear.out_features == 2 * 2 * 8
    path = tmp_path / "SiT-tiny-8x8.pt"
    torch.save(src.state_dict(), path)
    model, info = load_official(path, num_heads=1)
    assert (info.kind, info.network_time, info.prediction, info.output_sign) == (
        "sit",
        "sit_reversed",
        "velocity",
        -1,
    )
    x, _, y = _inputs()
    t_sit = torch.tensor([0.1, 0.5, 0.95])
    full = src(x, t_sit, y)
    out = model(x, t_sit, y)
    assert out.shape == (3, 4, 8, 8) and info.config["return_sigma"] is False
    torch.testing.assert_close(out, full[:, :4], rtol=0, atol=0)
    # In the library's time t = 1 - t_sit the velocity changes sign: v(x, t) = -v_sit(x, 1 - t). In float64:
    # 1 - (1 - t) differs from t by float32 rounding (2e-8 at t = 0.1), which moved the float32 outputs by
    # ~5e-7, within 2x of a 1e-6 tolerance; in float64 the same rounding is ~1e-16.
    paper = info.paper_time(model)
    assert isinstance(paper, SiTPaperTime)
    model.double()
    src.double()
    x64, t64 = x.double(), t_sit.double()
    torch.testing.assert_close(paper(x64, 1 - t64, y), -src(x64, t64, y)[:, :4], rtol=1e-12, atol=1e-12)
    # Guidance: the guidance scale would amplify the same rounding.
    yy = torch.tensor([1, 2, 10, 10])
    xx = torch.cat([x[:2], x[:2]]).double()
    tt = torch.tensor([0.3, 0.7, 0.3, 0.7], dtype=torch.float64)
    torch.testing.assert_close(
        paper.forward_with_cfg(xx, tt, yy, 2.0), -model.forward_with_cfg(xx, 1 - tt, yy, 2.0), rtol=1e-12, atol=1e-12
    )


def test_mismatch_error_names_the_fitting_config(tmp_path):
    path = tmp_path / "DiT-tiny.pt"
    torch.save(_tiny(0).state_dict(), path)
    with pytest.raises(ValueError) as err:
        load_official(path, input_size=16, num_heads=1)
    msg = str(err.value)
    assert "pos_embed: file (1, 16, 64) vs model (1, 64, 64)" in msg
    assert "input_size=8" in msg and "hidden_size=64" in msg and "learn_sigma=True" in msg
    with pytest.raises(ValueError, match="final_layer.linear.weight.*The file fits.*learn_sigma=True"):
        load_official(path, learn_sigma=False, num_heads=1)


def test_kind_errors(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_tiny(0).state_dict(), path)
    with pytest.raises(ValueError, match=r"pass kind='dit' or kind='sit' \(valid kinds"):
        load_official(path)
    with pytest.raises(
        ValueError, match=r"unknown checkpoint kind 'edm'; valid kinds: \['dit', 'sit', 'auto'\]"
    ):
        load_official(path, kind="edm")
    torch.save({"something": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a DiT/SiT state dict"):
        load_official(path, kind="dit")


def test_loader_reads_with_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "DiT-evil.pt"
    torch.save({"model": _tiny(0).state_dict(), "payload": Evil()}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        load_official(path, num_heads=1)


def test_loaded_state_dict_and_training_checkpoint_dict(tmp_path):
    """A checkpoint already in memory loads like its file: a plain state dict (kind required: no file name)
    and a training-checkpoint dict (kind from its args, EMA preferred)."""
    src = _tiny(4)
    x, t, y = _inputs()
    model, info = load_official(src.state_dict(), kind="dit", num_heads=1)
    torch.testing.assert_close(model(x, t, y), src(x, t, y), rtol=0, atol=0)
    assert info.path == "<state dict>" and info.entry == "state_dict"
    with pytest.raises(ValueError, match="pass kind="):
        load_official(src.state_dict(), num_heads=1)
    ema = _tiny(5)
    ckpt = {"model": src.state_dict(), "ema": ema.state_dict(), "args": argparse.Namespace(model="SiT-XL/2")}
    model, info = load_official(ckpt, num_heads=1)
    assert (info.kind, info.entry) == ("sit", "ema")
    torch.testing.assert_close(model(x, t.float() / 1000, y), ema(x, t.float() / 1000, y)[:, :4], rtol=0, atol=0)


def test_heads_are_required_outside_the_known_widths(tmp_path):
    sd = _tiny(0).state_dict()  # width 64: not a paper or preset width
    with pytest.raises(ValueError, match="num_heads="):
        load_official(sd, kind="dit")
    load_official(sd, kind="dit", num_heads=1)
    with torch.device("meta"):  # the tiny presets' width 256 has 4 heads: no argument needed
        tiny = DiT(input_size=8, patch_size=2, in_channels=1, hidden_size=256, depth=1, num_heads=4, num_classes=10)
    assert infer_config(tiny.state_dict())["num_heads"] == 4
