"""Training: BMP's trainer, its hooks, checkpoints and multi-process glue."""

from .checkpoint import AtomicCheckpointer, DamagedCheckpointError
from .finite_loss import add_finite_loss_check, check_losses_finite
from .trainer import BMPTrainer, GroupLRLogger

__all__ = [
    "AtomicCheckpointer",
    "DamagedCheckpointError",
    "BMPTrainer",
    "GroupLRLogger",
    "add_finite_loss_check",
    "check_losses_finite",
]
