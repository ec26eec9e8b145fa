import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@pytest.fixture
def compose():
    """compose(overrides) -> the composed Hydra config (no run, no working-dir change)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def _c(overrides=()):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return _compose(config_name="config", overrides=list(overrides))

    yield _c
    GlobalHydra.instance().clear()
