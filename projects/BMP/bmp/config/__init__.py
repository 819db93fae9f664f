"""BMP's configuration: its keys (:mod:`.keys`) and how a config is loaded and checked
(:mod:`.loading`)."""

from .keys import add_bmp_config, derive_keys
from .loading import (
    AMP_PRECISIONS,
    ConfigError,
    adapt_config_to_machine,
    amp_dtype,
    check_config,
    dataset_num_classes,
    load_config,
    resolve_sync_norm,
    training_device,
)

__all__ = [
    "add_bmp_config",
    "derive_keys",
    "ConfigError",
    "adapt_config_to_machine",
    "check_config",
    "dataset_num_classes",
    "load_config",
    "resolve_sync_norm",
    "AMP_PRECISIONS",
    "amp_dtype",
    "training_device",
]
