"""BMP's :class:`DefaultTrainer`: WSSS data, segmentation + seed evaluation, the authors' solver.

It overrides detectron2's ``build_*`` methods and adds hooks; everything else (train loop,
writers, checkpoint and evaluation periods, DDP) is detectron2's, so BMP runs the way any
detectron2 project does. What the overrides add:

* the model stops training on the first non-finite loss and names it (:mod:`.finite_loss`);
* checkpoints hold the optimizer state (detectron2 v0.6 drops it) and the training data's
  position, and are written atomically; ``--resume`` skips damaged files (:mod:`.checkpoint`);
* the model's initialisation is seeded with ``SEED`` + rank (what detectron2's
  ``default_setup`` does, so any entry point gets the weights ``train_net.py`` gets);
* a resumed run repeats an uninterrupted one: the data stream's position is checkpointed
  (:mod:`bmp.data.train_loader`) and the RNGs are seeded at every step (:mod:`.step_seed`);
* with several processes, buffers (BatchNorm statistics) are rank 0's after every step, and
  CPU models get DDP without device ids (:mod:`.ddp`);
* evaluation images get the test size and small-image rule of :mod:`bmp.data.eval_size`, and
  every evaluation writes a per-class IoU table (:mod:`bmp.evaluation.report`);
* the LR of every param group is logged, and the ETA knows the pseudo-label phases.
"""

import logging
import weakref
from typing import Any, Dict, List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer, default_writers, hooks
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from bmp.config import adapt_config_to_machine, amp_dtype, training_device
from bmp.data import SemSegEvalMapper, build_train_mapper
from bmp.data.eval_size import EvalImageSize, drop_small_images
from bmp.data.registered import bmp_dataset_dicts, bmp_metadata
from bmp.data.train_loader import build_resumable_train_loader, resolve_seed
from bmp.evaluation.build import build_bmp_evaluator
from bmp.evaluation.crf import CRFParams, require_crf
from bmp.evaluation.report import write_eval_report
from bmp.modeling import with_test_time_augmentation
from bmp.seeding import seed_all
from bmp.solver import build_bmp_lr_scheduler, build_bmp_optimizer
from bmp.utils import deferred_scalars

from .amp import MixedPrecisionTrainer
from .checkpoint import AtomicCheckpointer
from .ddp import BroadcastBuffers, cpu_ddp_for_default_trainer
from .finite_loss import add_finite_loss_check
from .preemption import Preempted, PreemptionHook, resolve_signals
from .progress_hook import PhaseETAHook, training_phases
from .step_seed import SeedEveryStep
from .training_panels import TrainingPanels

__all__ = ["BMPTrainer", "GroupLRLogger", "FlushDeferredScalars"]


class GroupLRLogger(hooks.HookBase):
    """Put the LR of every named param group into EventStorage as ``lr/<name>``.

    Runs before detectron2's LRScheduler hook steps the schedule, so it logs the LR used by the
    iteration that just finished.
    """

    def after_step(self) -> None:
        storage = self.trainer.storage
        for i, group in enumerate(self.trainer.optimizer.param_groups):
            storage.put_scalar(f"lr/{group.get('name', i)}", group["lr"], smoothing_hint=False)


class FlushDeferredScalars(hooks.HookBase):
    """Write the model's device-side scalars (:mod:`bmp.utils.deferred_scalars`) into the event
    storage just before detectron2's writers write (every ``period`` iterations and at the end),
    in one host read; on every process, so none keeps them longer."""

    def __init__(self, period: int = 20) -> None:
        self._period = period

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1:
            deferred_scalars.flush(self.trainer.storage)


class BMPTrainer(DefaultTrainer):
    """detectron2's DefaultTrainer wired to BMP's data, evaluators and solver."""

    def __init__(self, cfg: CfgNode) -> None:
        self.seed = resolve_seed(cfg.SEED)
        # The weights are drawn while the model is built here: without this, a run started
        # by anything but train_net.py (whose default_setup seeds) would start from other weights.
        seed_all(self.seed + comm.get_rank())
        dtype = amp_dtype(cfg, training_device(cfg))
        base = cfg
        if dtype is not None:  # detectron2 would build its own (float16, CUDA-only) AMPTrainer
            base = cfg.clone()
            base.defrost()
            base.SOLVER.AMP.ENABLED = False
            base.freeze()
        with cpu_ddp_for_default_trainer():
            super().__init__(base)
        self.cfg = cfg
        if dtype is not None:
            t = self._trainer
            device_type = next(t.model.parameters()).device.type
            self._trainer = MixedPrecisionTrainer(
                t.model, t.data_loader, t.optimizer, device_type, dtype
            )

    def train(self) -> Optional[Dict[str, Any]]:
        """Train; return the last evaluation's results (detectron2 only does with
        ``TEST.EXPECTED_RESULTS``), so scripts can report them.

        A preemption signal ends it with ``SystemExit(SOLVER.PREEMPTION.EXIT_CODE)`` after the
        checkpoint of the step in progress (:mod:`.preemption`)."""
        try:
            super().train()
        except Preempted as stop:
            if comm.get_world_size() > 1:  # leave the group cleanly before the process ends
                comm.synchronize()
                torch.distributed.destroy_process_group()
            raise SystemExit(stop.exit_code) from None
        finally:
            if hasattr(self.data_loader, "close"):
                self.data_loader.close()  # its workers end now, not at interpreter exit
        return getattr(self, "_last_eval_results", None)

    def state_dict(self) -> Dict[str, Any]:
        # detectron2 v0.6 leaves the optimizer out of checkpoints, so a resumed AdamW would
        # restart its moments; newer detectron2 stores it under the same key. The training
        # data's position goes in as well, so a resumed run sees the batches an uninterrupted
        # one would have seen.
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        if hasattr(self.data_loader, "state_dict"):
            ret["train_data"] = self.data_loader.state_dict()
        return ret

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        if "train_data" in state_dict and hasattr(self.data_loader, "load_state_dict"):
            self.data_loader.load_state_dict(state_dict["train_data"])

    def build_hooks(self) -> List[hooks.HookBase]:
        if CRFParams.from_config(self.cfg.TEST.CRF) is not None:
            require_crf()  # a missing extra fails now, not at the first evaluation
        # The checkpointer the hooks save with: atomic writes and a damage-aware resume.
        self.checkpointer = AtomicCheckpointer(
            self._trainer.model,
            self.cfg.OUTPUT_DIR,
            unsafe_unpickle=self.cfg.MODEL.WEIGHTS_UNSAFE_UNPICKLE,
            trainer=weakref.proxy(self),
        )
        ret = super().build_hooks()
        ret.insert(1, GroupLRLogger())
        # Buffers are made equal after PreciseBN (which recomputes them per process) and before
        # the checkpointer and the evaluation read them.
        # Only the main process has a checkpointer; every process has the evaluation hook.
        readers = (hooks.PeriodicCheckpointer, hooks.EvalHook)
        before = next(i for i, h in enumerate(ret) if isinstance(h, readers))
        ret.insert(before, BroadcastBuffers())
        signals = resolve_signals(self.cfg.SOLVER.PREEMPTION.SIGNALS)
        if signals:  # after the checkpointer and before the evaluation (not run on preemption)
            after = next((i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook)), len(ret))
            ret.insert(after, PreemptionHook(signals, self.cfg.SOLVER.PREEMPTION.EXIT_CODE))
        if self.cfg.VIS_PERIOD > 0:
            names = list(self.cfg.DATASETS.TRAIN)
            meta = bmp_metadata(names[0]) if names else MetadataCatalog.get("__none__")
            ignore = self.cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
            panels = TrainingPanels(self.cfg.VIS_PERIOD, meta, ignore)
            ret.insert(_writer_index(ret), panels)  # before the writer, which writes the panel
        # Before the writer (the last hook on the main process; absent on the others).
        ret.insert(_writer_index(ret), FlushDeferredScalars())
        ret.insert(0, SeedEveryStep(self.seed))
        ret.insert(0, PhaseETAHook(self.max_iter, training_phases(self.cfg)))
        return ret

    def build_writers(self) -> List[Any]:
        # No max_iter: detectron2's printer would log an ETA from the median of all iterations,
        # which is far too low once the pseudo-label phases start; PhaseETAHook logs the ETA.
        return default_writers(self.cfg.OUTPUT_DIR, max_iter=None)

    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        """Build on this machine's device; SyncBN becomes NaiveSyncBN for multi-process CPU."""
        cfg = cfg.clone()
        cfg.defrost()
        adapt_config_to_machine(cfg)
        model = add_finite_loss_check(build_model(cfg))
        logging.getLogger(__name__).info(
            f"Model: {type(model).__name__}, "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
        )
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_bmp_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer) -> Any:
        return build_bmp_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Any:
        return build_resumable_train_loader(cfg, build_train_mapper(cfg))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str) -> Any:
        """detectron2's test loader; images the "skip" small-image rule leaves out are dropped."""
        dicts = drop_small_images(
            bmp_dataset_dicts(dataset_name), EvalImageSize.from_config(cfg), dataset_name
        )
        mapper = SemSegEvalMapper(cfg, False, dataset_name=dataset_name)
        return build_detection_test_loader(
            dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS
        )

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
    ) -> DatasetEvaluator:
        return build_bmp_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(
        cls, cfg: CfgNode, model: torch.nn.Module, evaluators: Optional[List] = None
    ) -> Dict[str, Any]:
        """detectron2's evaluation plus a per-class IoU table per dataset (log + OUTPUT_DIR).

        With ``TEST.AUG.ENABLED`` the model is evaluated through :class:`BMPWithTTA`.
        """
        results = super().test(cfg, with_test_time_augmentation(cfg, model), evaluators)
        if not comm.is_main_process() or not cfg.DATASETS.TEST:
            return results
        per_dataset = results if len(cfg.DATASETS.TEST) > 1 else {cfg.DATASETS.TEST[0]: results}
        tag = _iteration_tag(cfg.SOLVER.MAX_ITER)
        for name, res in per_dataset.items():
            if res:
                write_eval_report(res, cfg.OUTPUT_DIR, name, tag)
        return results


def _writer_index(ret: List[hooks.HookBase]) -> int:
    writer = [i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)]
    return writer[0] if writer else len(ret)


def _iteration_tag(max_iter: int) -> str:
    """``iter<N>`` with N = iterations completed (EvalHook runs after step N-1, or after training
    with the storage at ``max_iter``); ``eval_only`` outside training."""
    try:
        it = get_event_storage().iter
    except AssertionError:
        return "eval_only"
    return f"iter{it if it >= max_iter else it + 1:07d}"
