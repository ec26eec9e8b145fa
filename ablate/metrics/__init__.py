"""Metrics: FID/KID/IS/PRC through torch-fidelity with offline extractors (see ``ablate/metrics/README.md``).

Importing this package registers the committed small-CNN extractors (``ablate-digits``, ...) with
torch-fidelity, so ``torch_fidelity.calculate_metrics(..., feature_extractor="ablate-digits")`` works.
"""

from .extractor import (
    EXTRACTOR_FOR_DATASET,
    FeatureExtractorAblate,
    SmallCNN,
    load_extractor,
    register_extractors,
)
from .fid import METRICS, compute_metrics, default_cache_dir, feature_statistics, frechet_distance
from .inception import INCEPTION, inception_weights_path

register_extractors()

__all__ = [
    "EXTRACTOR_FOR_DATASET",
    "INCEPTION",
    "METRICS",
    "FeatureExtractorAblate",
    "SmallCNN",
    "compute_metrics",
    "default_cache_dir",
    "feature_statistics",
    "frechet_distance",
    "inception_weights_path",
    "load_extractor",
    "register_extractors",
]
