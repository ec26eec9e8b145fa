"""DiT backbone, presets, and the loader for official DiT/SiT checkpoints (see README.md)."""

from .checkpoints import CheckpointInfo, SiTPaperTime, infer_config, load_official
from .dit import DiT, DiTBlock, FinalLayer, LabelEmbedder, TimestepEmbedder
from .registry import PRESETS, DiT_models, ModelSpec, available_models, build_model, preset_config

__all__ = [
    "DiT",
    "DiTBlock",
    "FinalLayer",
    "LabelEmbedder",
    "TimestepEmbedder",
    "PRESETS",
    "ModelSpec",
    "DiT_models",
    "available_models",
    "build_model",
    "preset_config",
    "load_official",
    "infer_config",
    "CheckpointInfo",
    "SiTPaperTime",
]
