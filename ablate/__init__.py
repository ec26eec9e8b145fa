"""ablate: ablation studies of diffusion and flow transformers (DiT -> SiT)."""

__version__ = "0.1.0"
