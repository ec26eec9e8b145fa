"""DiT backbone: official names and shapes, parameter counts, initialisation, an independent functional
re-implementation of the paper's equations (float64), class dropout, unconditional mode, guidance."""

import math

import pytest
import torch
import torch.nn.functional as F

from ablate.models import DiT, build_model, preset_config
from ablate.models.dit import sincos_pos_embed_2d, timestep_embedding


def _official_keys(depth: int, conditional: bool = True) -> set[str]:
    """Parameter names of the official DiT/SiT models.py (timm PatchEmbed/Attention/Mlp inside)."""
    keys = {"pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias"}
    keys |= {f"t_embedder.mlp.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
    if conditional:
        keys.add("y_embedder.embedding_table.weight")
    for b in range(depth):
        for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"):
            keys |= {f"blocks.{b}.{layer}.weight", f"blocks.{b}.{layer}.bias"}
    for layer in ("final_layer.linear", "final_layer.adaLN_modulation.1"):
        keys |= {f"{layer}.weight", f"{layer}.bias"}
    return keys


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)


def _small(**kw) -> DiT:
    cfg = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=4, num_classes=5)
    cfg.update(kw)
    return DiT(**cfg)


# ----------------------------------------------------------------------------------------------------------
# Names, shapes, counts
# ----------------------------------------------------------------------------------------------------------


def test_state_dict_uses_the_official_names_and_xl2_shapes():
    assert set(_small().state_dict()) == _official_keys(2)
    with torch.device("meta"):
        m = build_model("DiT-XL/2")
    sd = m.state_dict()
    assert set(sd) == _official_keys(28)
    assert sd["x_embedder.proj.weight"].shape == (1152, 4, 2, 2)
    assert sd["pos_embed"].shape == (1, 256, 1152)
    assert sd["y_embedder.embedding_table.weight"].shape == (1001, 1152)  # 1000 classes + null
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * 1152, 1152)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (4 * 1152, 1152)
    assert sd["blocks.0.adaLN_modulation.1.weight"].shape == (6 * 1152, 1152)
    assert sd["final_layer.linear.weight"].shape == (2 * 2 * 8, 1152)  # learn_sigma: 2 x 4 channels
    assert not m.pos_embed.requires_grad


@pytest.mark.parametrize(
    "name,count",
    [("DiT-S/2", 32_963_360), ("DiT-B/2", 130_512_416), ("DiT-L/2", 458_102_816), ("DiT-XL/2", 675_129_632)],
)
def test_parameter_counts_equal_the_official_ones(name, count):
    with torch.device("meta"):
        m = build_model(name)
    assert sum(p.numel() for p in m.parameters()) == count


def test_presets_and_errors():
    with torch.device("meta"):
        tiny = build_model("tiny-8")
    assert (tiny.depth, tiny.hidden_size, tiny.patch_size, tiny.x_embedder.num_patches) == (6, 256, 2, 16)
    assert (tiny.input_size, tiny.in_channels) == (8, 1)
    with pytest.raises(ValueError, match="valid presets: .*DiT-XL/2.*tiny-8"):
        build_model("DiT-XXL/2")
    with pytest.raises(ValueError, match="unknown DiT argument.*hiden_size"):
        preset_config("DiT-S/2", hiden_size=3)
    with torch.device("meta"):
        m = build_model("DiT-S/4", input_size=16, in_channels=1, num_classes=7, learn_sigma=False)
    assert (m.x_embedder.num_patches, m.out_channels, m.y_embedder.embedding_table.num_embeddings) == (
        16,
        1,
        8,
    )


# ----------------------------------------------------------------------------------------------------------
# Initialisation
# ----------------------------------------------------------------------------------------------------------


def test_adaln_zero_and_output_layers_start_at_zero_and_the_rest_is_xavier():
    torch.manual_seed(0)
    m = _small(hidden_size=64)
    for b in m.blocks:
        assert b.adaLN_modulation[1].weight.abs().sum() == 0 and b.adaLN_modulation[1].bias.abs().sum() == 0
    fl = m.final_layer
    for p in (fl.adaLN_modulation[1].weight, fl.adaLN_modulation[1].bias, fl.linear.weight, fl.linear.bias):
        assert p.abs().sum() == 0
    # Xavier uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), std a / sqrt(3); biases zero.
    w = m.blocks[0].mlp.fc1.weight
    a = math.sqrt(6 / sum(w.shape))
    assert w.abs().max() <= a and abs(w.std().item() - a / math.sqrt(3)) < 0.05 * a
    assert m.blocks[0].attn.qkv.bias.abs().sum() == 0
    assert abs(m.t_embedder.mlp[0].weight.std().item() - 0.02) < 0.002
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(m(x, torch.tensor([1, 500]), torch.tensor([0, 4])), torch.zeros(2, 6, 8, 8))


def test_fixed_embeddings_match_their_closed_forms():
    D, g = 16, 3
    pe = sincos_pos_embed_2d(D, g)
    omega = 10000 ** (-torch.arange(D // 4, dtype=torch.float64) / (D // 4))
    for i in range(g):
        for j in range(g):  # token i * g + j: [sin(j w), cos(j w), sin(i w), cos(i w)]
            want = torch.cat(
                [torch.sin(j * omega), torch.cos(j * omega), torch.sin(i * omega), torch.cos(i * omega)]
            )
            torch.testing.assert_close(pe[i * g + j], want, rtol=0, atol=1e-15)
    t = torch.tensor([0.0, 3.0, 999.0], dtype=torch.float64)
    e = timestep_embedding(t, 8, dtype=torch.float64)
    f = torch.exp(-math.log(10000) * torch.arange(4, dtype=torch.float64) / 4)
    torch.testing.assert_close(e, torch.cat([torch.cos(t[:, None] * f), torch.sin(t[:, None] * f)], 1))
    assert timestep_embedding(t, 7).shape == (3, 7) and (timestep_embedding(t, 7)[:, -1] == 0).all()


# ----------------------------------------------------------------------------------------------------------
# The forward pass against the paper's equations, written out independently in float64
# ----------------------------------------------------------------------------------------------------------


def _reference_forward(m: DiT, x, t, y):
    """DiT (Peebles & Xie 2023, sec. 3) written from the equations with explicit softmax attention,
    explicit LayerNorm and the tanh-GELU formula, reading the weights by their official names."""
    P = dict(m.state_dict())
    p, D, H = m.patch_size, m.hidden_size, m.num_heads
    h = F.conv2d(x, P["x_embedder.proj.weight"], P["x_embedder.proj.bias"], stride=p)  # [B, D, g, g]
    h = h.flatten(2).transpose(1, 2) + P["pos_embed"]
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    tf = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], 1)
    lin = lambda v, name: v @ P[f"{name}.weight"].T + P[f"{name}.bias"]
    silu = lambda v: v / (1 + torch.exp(-v))
    c = lin(silu(lin(tf, "t_embedder.mlp.0")), "t_embedder.mlp.2") + P["y_embedder.embedding_table.weight"][y]

    def ln(v):
        mu = v.mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(((v - mu) ** 2).mean(-1, keepdim=True) + 1e-6)

    def gelu_tanh(v):
        return 0.5 * v * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    B, T = h.shape[:2]
    for i in range(m.depth):
        n = f"blocks.{i}"
        mod = lin(silu(c), f"{n}.adaLN_modulation.1")[:, None, :]
        b1, g1, a1, b2, g2, a2 = mod.split(D, dim=-1)
        u = ln(h) * (1 + g1) + b1
        q, k, v = lin(u, f"{n}.attn.qkv").split(D, dim=-1)
        q, k, v = (z.reshape(B, T, H, D // H).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), dim=-1)
        h = h + a1 * lin((att @ v).transpose(1, 2).reshape(B, T, D), f"{n}.attn.proj")
        u = ln(h) * (1 + g2) + b2
        h = h + a2 * lin(gelu_tanh(lin(u, f"{n}.mlp.fc1")), f"{n}.mlp.fc2")
    sh, sc = lin(silu(c), "final_layer.adaLN_modulation.1")[:, None, :].split(D, dim=-1)
    out = lin(ln(h) * (1 + sc) + sh, "final_layer.linear")  # [B, T, p p C_out]
    g = m.input_size // p
    out = out.reshape(B, g, g, p, p, m.out_channels)
    return torch.einsum("nhwpqc->nchpwq", out).reshape(B, m.out_channels, g * p, g * p)


def test_forward_equals_the_paper_equations_in_float64():
    torch.manual_seed(0)
    m = _small().double().eval()
    _randomise(m)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 17, 999])
    y = torch.tensor([0, 4, 2])
    out = m(x, t, y)
    assert out.shape == (3, 6, 8, 8) and out.dtype == torch.float64
    torch.testing.assert_close(out, _reference_forward(m, x, t.double(), y), rtol=1e-10, atol=1e-10)
    # Fractional (SiT) time and a scalar time broadcast to the batch.
    ts = torch.full((3,), 0.25, dtype=torch.float64)
    torch.testing.assert_close(m(x, 0.25, y), _reference_forward(m, x, ts, y), rtol=1e-10, atol=1e-10)


def test_float32_agrees_with_float64():
    torch.manual_seed(1)
    m64 = _small().double().eval()
    _randomise(m64, seed=1)
    m32 = _small().eval()
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    t, y = torch.tensor([3, 900]), torch.tensor([1, 3])
    ref = m64(x, t, y)
    # float32 rounds each operation by eps32 = 1.2e-7 (relative); through two blocks (reductions of up to 128
    # terms, layer norms, softmax) this input's error is ~45 eps32 of the output scale (6e-5 at scale 11), and
    # it depends on the CPU's matmul blocking. The former 1e-4 tolerance was within 2x of it. Tolerance:
    # 1000 eps32 x the output scale (~20x the measured error, still 1e-4 of the scale).
    tol = 1000 * torch.finfo(torch.float32).eps * ref.abs().max().item()
    torch.testing.assert_close(m32(x.float(), t, y).double(), ref, rtol=0, atol=tol)


# ----------------------------------------------------------------------------------------------------------
# Labels, unconditional mode, learned sigma, guidance
# ----------------------------------------------------------------------------------------------------------


def test_class_dropout_maps_to_the_null_index_num_classes():
    m = _small(num_classes=7, class_dropout_prob=0.25)
    emb = m.y_embedder
    assert emb.embedding_table.num_embeddings == 8 and m.null_class == 7
    labels = torch.tensor([0, 6, 3])
    dropped = emb.token_drop(labels, force_drop_ids=torch.tensor([1, 0, 1]))
    assert dropped.tolist() == [7, 6, 7]
    torch.manual_seed(0)
    n = 20000
    frac = (emb.token_drop(torch.zeros(n, dtype=torch.long)) == 7).double().mean().item()
    assert abs(frac - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)  # binomial 4-sigma band
    # Eval mode never drops; y=None is the null class.
    m.eval()
    _randomise(m)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 5])
    torch.testing.assert_close(m(x, t, None), m(x, t, torch.tensor([7, 7])))
    assert not torch.allclose(m(x, t, torch.tensor([1, 1])), m(x, t, None))
    with pytest.raises(ValueError, match="class dropout probability"):
        _small(class_dropout_prob=1.0)
    nodrop = _small(class_dropout_prob=0.0)
    assert nodrop.y_embedder.embedding_table.num_embeddings == 5 and nodrop.null_class is None
    with pytest.raises(ValueError, match="null class"):
        nodrop(x, t, None)


def test_unconditional_model_has_no_label_embedder():
    m = _small(num_classes=0).eval()
    assert m.y_embedder is None and "y_embedder.embedding_table.weight" not in m.state_dict()
    assert set(m.state_dict()) == _official_keys(2, conditional=False)
    _randomise(m)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 6])
    c = m.t_embedder(t)
    torch.testing.assert_close(m.embed_condition(t, None), c)
    assert m(x, t).shape == (2, 6, 8, 8)
    with pytest.raises(ValueError, match="unconditional"):
        m(x, t, torch.tensor([0, 1]))


def test_learn_sigma_and_return_sigma():
    m = _small(learn_sigma=True).eval()
    _randomise(m)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1])
    full = m(x, t, y)
    m.return_sigma = False
    torch.testing.assert_close(m(x, t, y), full[:, :3])
    assert _small(learn_sigma=False)(x, t, y).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="input spatial size"):
        m(torch.randn(2, 3, 16, 16), t, y)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \[2\]"):
        m(x, torch.tensor([1, 2, 3]), y)


def test_forward_with_cfg_matches_the_guidance_formula():
    # float64: the guided batch [cond; null] of 4 and the two batches of 2 it is compared with run different
    # matmul blockings, and s = 4 amplifies their float32 rounding (1 + 2s = 9 times ~1e-6) past any tolerance
    # that would still catch a wrong formula. In float64 the same rounding is ~1e-15.
    m = _small(in_channels=4, learn_sigma=True).double().eval()
    _randomise(m)
    g = torch.Generator().manual_seed(0)
    xh = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    x = torch.cat([xh, torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)])  # second half is replaced
    t = torch.tensor([10, 20, 10, 20])
    y = torch.tensor([1, 3, 5, 5])  # [cond; null]
    s = 4.0
    cond, uncond = m(xh, t[:2], y[:2]), m(xh, t[2:], y[2:])
    out = m.forward_with_cfg(x, t, y, s)
    guided = uncond[:, :4] + s * (cond[:, :4] - uncond[:, :4])
    tol = dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[:2, :4], guided, **tol)
    torch.testing.assert_close(out[2:, :4], guided, **tol)
    torch.testing.assert_close(out[:2, 4:], cond[:, 4:], **tol)  # variance: unguided
    legacy = m.forward_with_cfg(x, t, y, s, guided_channels=3)
    torch.testing.assert_close(legacy[:2, :3], guided[:, :3], **tol)
    torch.testing.assert_close(legacy[:2, 3:], cond[:, 3:], **tol)
    torch.testing.assert_close(legacy[2:, 3:], uncond[:, 3:], **tol)
    torch.testing.assert_close(m.forward_with_cfg(x, t, y, 1.0)[:2], cond, **tol)
    with pytest.raises(ValueError, match="guided_channels must lie in 1..4"):
        m.forward_with_cfg(x, t, y, s, guided_channels=5)


def test_backward_reaches_every_trainable_parameter():
    m = _small().train()
    _randomise(m)
    out = m(torch.randn(4, 3, 8, 8), torch.randint(0, 1000, (4,)), torch.randint(0, 5, (4,)))
    out.square().mean().backward()
    for name, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.pos_embed.grad is None
