"""Training and evaluation glue: trainer, train loop, solver wiring, checkpoints, config checks.

``BMPTrainer`` is imported on first use so that the light helpers (checkpoint I/O, config
checks) can be used by tools without building the data and evaluation stack.
"""

from .checkpoint import AtomicCheckpointer, atomic_torch_save, atomic_write
from .defaults import ConfigError, adapt_config_to_machine, check_config, load_config
from .eval_report import iou_table, write_eval_report
from .train_loop import BMPAMPTrainer, BMPSimpleTrainer, check_losses_finite

__all__ = [
    "AtomicCheckpointer",
    "atomic_torch_save",
    "atomic_write",
    "ConfigError",
    "adapt_config_to_machine",
    "check_config",
    "load_config",
    "iou_table",
    "write_eval_report",
    "BMPAMPTrainer",
    "BMPSimpleTrainer",
    "check_losses_finite",
    "BMPTrainer",
]


def __getattr__(name: str):
    if name == "BMPTrainer":
        from .trainer import BMPTrainer

        return BMPTrainer
    raise AttributeError(f"module 'bmp.engine' has no attribute '{name}'")
