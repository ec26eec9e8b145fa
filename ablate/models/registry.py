"""Model presets: the DiT paper's 12 configurations (Table 1: S/B/L/XL x patch 2/4/8) and tiny CPU presets.

A preset is a dict of :class:`~ablate.models.dit.DiT` keyword arguments; ``build_model(name, **overrides)``
merges overrides on top (input size, channels, classes, learn_sigma, ...). Paper presets default to the
ImageNet-256 latent setting (32 x 32 x 4, 1000 classes). To add a preset, add one entry to ``PRESETS``.
"""

from __future__ import annotations

from functools import partial

from .dit import DiT

__all__ = ["PRESETS", "DiT_models", "build_model", "preset_config", "available_models", "ModelSpec"]

# DiT Table 1: (depth, hidden size, heads).
_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
_LATENT_256 = dict(input_size=32, in_channels=4, num_classes=1000, learn_sigma=True, class_dropout_prob=0.1)

PRESETS: dict[str, dict] = {
    f"DiT-{size}/{p}": dict(_LATENT_256, depth=d, hidden_size=w, num_heads=h, patch_size=p)
    for size, (d, w, h) in _SIZES.items()
    for p in (2, 4, 8)
}
# Tiny CPU presets for the embedded data sets (depth 6, width 256, 4 heads of 64).
_TINY = dict(depth=6, hidden_size=256, num_heads=4, num_classes=10, learn_sigma=True, class_dropout_prob=0.1)
PRESETS.update(
    {
        "tiny-8": dict(_TINY, input_size=8, in_channels=1, patch_size=2),  # sklearn digits: 16 tokens
        "tiny-28": dict(_TINY, input_size=28, in_channels=1, patch_size=4),  # (Fashion-)MNIST: 49 tokens
        "tiny-32": dict(_TINY, input_size=32, in_channels=3, patch_size=4),  # 32 x 32 RGB: 64 tokens
    }
)


def available_models() -> list[str]:
    return list(PRESETS)


def preset_config(name: str, **overrides) -> dict:
    """The keyword arguments of preset ``name`` with ``overrides`` applied (unknown keys raise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {available_models()}")
    valid = set(DiT.__init__.__code__.co_varnames[1 : DiT.__init__.__code__.co_argcount])
    bad = sorted(set(overrides) - valid)
    if bad:
        raise ValueError(
            f"unknown DiT argument(s) {bad} for preset {name!r}; valid arguments: {sorted(valid)}"
        )
    return {**PRESETS[name], **overrides}


def build_model(name: str, **overrides) -> DiT:
    """Build preset ``name`` (e.g. ``"DiT-XL/2"``, ``"tiny-8"``) with keyword overrides, e.g.
    ``build_model("DiT-S/2", input_size=64, num_classes=0)``. Use ``torch.device("meta")`` as a context
    manager to build without allocating (parameter counts, FLOPs)."""
    return DiT(**preset_config(name, **overrides))


# The official-style registry: name -> constructor taking keyword overrides.
DiT_models = {name: partial(build_model, name) for name in PRESETS}


class ModelSpec:
    """The ``model`` config group's target: a preset and its DiT keyword overrides, checked when built.

    ``ModelSpec("tiny-8", input_size=8, depth=None, ...)``: a ``None`` override keeps the preset's value (so a
    config can reset an override to the preset's). :meth:`build` makes the network; :meth:`describe` is its
    identity for the training key and the results row. Any other DiT argument can be given (on the command line
    ``+model.mlp_ratio=2``); an unknown one is refused with the valid arguments.
    """

    def __init__(self, name: str, **overrides):
        self.name = str(name)
        self.overrides = {k: v for k, v in overrides.items() if v is not None}
        self.config = preset_config(self.name, **self.overrides)  # validates the name and every argument

    def build(self) -> DiT:
        return DiT(**self.config)

    def __getattr__(self, key):  # input_size, in_channels, num_classes, learn_sigma, ... of the built network
        config = self.__dict__.get("config", {})
        if key in config:
            return config[key]
        raise AttributeError(key)

    def describe(self) -> dict:
        return {"name": self.name, **self.overrides}

    def __repr__(self) -> str:
        return f"ModelSpec({self.name!r}, {self.overrides})"
