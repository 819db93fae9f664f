"""BMP's :class:`DefaultTrainer`: WSSS data, segmentation + seed evaluation, the authors' solver.

Everything else (hooks, writers, checkpoint periods, evaluation period, DDP) is detectron2's, so
BMP runs the way any detectron2 project does. Differences from the default trainer:

* the train loop stops on the first non-finite loss and names it (:mod:`bmp.engine.train_loop`);
* checkpoints include the optimizer state (detectron2 v0.6 drops it), so resumed AdamW
  continues with its moments;
* checkpoints and ``last_checkpoint`` are written atomically (:mod:`bmp.engine.checkpoint`);
* a resumed run repeats an uninterrupted one: the data stream's position is checkpointed
  (:mod:`bmp.data.train_loader`) and the RNGs are seeded at every step
  (:mod:`bmp.engine.step_seed`);
* with several processes, buffers (BatchNorm statistics) are rank 0's after every step, and
  CPU models get DDP without device ids (:mod:`bmp.engine.ddp`);
* evaluation images get the test size and small-image rule of :mod:`bmp.data.eval_size`;
* the LR of every param group is logged (``lr/<group>``), not only the largest group's;
* every evaluation also writes a per-class IoU table (:mod:`bmp.engine.eval_report`).
"""

import logging
import os
import weakref
from typing import Any, Dict, List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
)
from detectron2.engine import (
    DefaultTrainer,
    TrainerBase,
    default_writers,
    hooks,
)
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, SemSegEvaluator
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import setup_logger

from bmp.data import SemSegEvalMapper, build_train_mapper
from bmp.data.eval_size import EvalImageSize, drop_small_images
from bmp.data.train_loader import build_resumable_train_loader, resolve_seed
from bmp.evaluation import (
    VOC_SUBMISSION_DIR,
    ClassificationEvaluator,
    SeedEvaluator,
    SemSegSubmissionWriter,
)
from bmp.evaluation.crf import CRFParams, require_crf
from bmp.evaluation.crf_evaluator import CRFRefinedEvaluator
from bmp.evaluation.progress import EvalProgressBar
from bmp.modeling import with_test_time_augmentation
from bmp.solver import build_bmp_lr_scheduler, build_bmp_optimizer

from .checkpoint import AtomicCheckpointer
from .ddp import BroadcastBuffers, create_ddp_model
from .defaults import adapt_config_to_machine
from .eval_report import write_eval_report
from .phase_eta import name_phases
from .progress_hook import PhaseETAHook
from .step_seed import SeedEveryStep
from .train_loop import BMPAMPTrainer, BMPSimpleTrainer

__all__ = ["BMPTrainer", "GroupLRLogger", "OutputGatedEvaluator", "wants_seed_evaluation"]


class GroupLRLogger(hooks.HookBase):
    """Put the LR of every named param group into EventStorage as ``lr/<name>``.

    Runs before detectron2's LRScheduler hook steps the schedule, so it logs the LR used by the
    iteration that just finished.
    """

    def after_step(self) -> None:
        storage = self.trainer.storage
        for i, group in enumerate(self.trainer.optimizer.param_groups):
            storage.put_scalar(f"lr/{group.get('name', i)}", group["lr"], smoothing_hint=False)


class OutputGatedEvaluator(DatasetEvaluator):
    """Run ``inner`` only if the model's outputs carry ``key``; otherwise report nothing.

    Image-level classification is evaluated from ``outputs["cls_score"]``, which not every
    model variant returns. The decision is made on the outputs themselves and agreed across ranks,
    so every process calls the inner evaluator's (collective) ``evaluate`` or none does.
    """

    def __init__(self, key: str, inner: DatasetEvaluator) -> None:
        self._key = key
        self._inner = inner
        self._seen = False

    def reset(self) -> None:
        self._seen = False
        self._inner.reset()

    def process(self, inputs, outputs) -> None:
        if outputs and all(isinstance(o, dict) and self._key in o for o in outputs):
            self._seen = True
            self._inner.process(inputs, outputs)

    def evaluate(self):
        seen = any(comm.all_gather(self._seen)) if comm.get_world_size() > 1 else self._seen
        if not seen:
            logging.getLogger(__name__).info(
                f"The model returns no '{self._key}'; {type(self._inner).__name__} skipped."
            )
            return {}
        return self._inner.evaluate()


def wants_seed_evaluation(cfg: CfgNode, dataset_name: str) -> bool:
    """Seeds are evaluated when the model emits them (``TEST.BMP.EXTRA_OUTPUTS``)."""
    del dataset_name  # the model, not the split, decides whether seeds exist
    return bool(cfg.TEST.BMP.EXTRA_OUTPUTS)


class BMPTrainer(DefaultTrainer):
    """detectron2's DefaultTrainer wired to BMP's data, evaluators and solver."""

    def __init__(self, cfg: CfgNode) -> None:
        # Same construction order as DefaultTrainer.__init__, with BMP's train loop and
        # checkpointer in place of detectron2's.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # Buffers are made equal after each step by BroadcastBuffers, not before each forward.
        model = create_ddp_model(model, broadcast_buffers=False)
        loop = BMPAMPTrainer if cfg.SOLVER.AMP.ENABLED else BMPSimpleTrainer
        self._trainer = loop(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.seed = resolve_seed(cfg.SEED)
        self.register_hooks(self.build_hooks())

    def train(self) -> Optional[Dict[str, Any]]:
        """Train; return the last evaluation's results (detectron2 only does with
        ``TEST.EXPECTED_RESULTS``), so scripts can report them."""
        super().train()
        return getattr(self, "_last_eval_results", None)

    def state_dict(self) -> Dict[str, Any]:
        # detectron2 v0.6 leaves the optimizer out of checkpoints, so a resumed AdamW would
        # restart its moments; newer detectron2 stores it under the same key.
        # The training data's position goes in as well, so a resumed run sees the batches an
        # uninterrupted one would have seen.
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
        ret = super().build_hooks()
        ret.insert(1, GroupLRLogger())
        ret[:0] = [SeedEveryStep(self.seed), BroadcastBuffers()]
        ret.insert(0, PhaseETAHook(self.max_iter, _training_phases(self.cfg)))
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
        model = build_model(cfg)
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
            DatasetCatalog.get(dataset_name), EvalImageSize.from_config(cfg), dataset_name
        )
        return build_detection_test_loader(
            dicts, mapper=SemSegEvalMapper(cfg, False), num_workers=cfg.DATALOADER.NUM_WORKERS
        )

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
    ) -> DatasetEvaluator:
        """Segmentation mIoU, image-label accuracy and, with extra outputs, the seeds' mIoU.

        A split without ground truth (``evaluator_type`` None, e.g. ``voc_2012_test``) instead
        gets its predictions written as palette PNGs for the benchmark server.
        """
        crf = CRFParams.from_config(cfg.TEST.CRF)
        progress = EvalProgressBar(dataset_name, len(DatasetCatalog.get(dataset_name)))
        if MetadataCatalog.get(dataset_name).get("evaluator_type") is None:
            folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "submission", dataset_name)
            writer = SemSegSubmissionWriter(dataset_name, os.path.join(folder, VOC_SUBMISSION_DIR))
            if crf is not None:  # the server gets the CRF-refined prediction only
                writer = CRFRefinedEvaluator(writer, crf)
            return DatasetEvaluators([progress, writer])
        evaluators: List[DatasetEvaluator] = [
            progress,
            SemSegEvaluator(dataset_name, distributed=True),
        ]
        if crf is not None:  # mIoU with and without CRF, from the same predictions
            evaluators.append(
                CRFRefinedEvaluator(SemSegEvaluator(dataset_name), crf, result_key="sem_seg_crf")
            )
        if wants_seed_evaluation(cfg, dataset_name):
            evaluators.append(SeedEvaluator(dataset_name, distributed=True))
        evaluators.append(
            OutputGatedEvaluator(
                "cls_score", ClassificationEvaluator(dataset_name, distributed=True)
            )
        )
        return DatasetEvaluators(evaluators)

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


def _training_phases(cfg: CfgNode) -> Dict[int, str]:
    """Start iteration -> name of each loss that switches on after the warm-up."""
    bmp = cfg.MODEL.BMP
    starts = {
        "c2s": bmp.C2S.START_ITER if bmp.C2S.ENABLED else None,
        "s2c": bmp.S2C.START_ITER if bmp.S2C.ENABLED else None,
        "aff": bmp.AFFINITY.START_ITER if bmp.AFFINITY.ENABLED else None,
        "bsp": bmp.BSP.START_ITER if bmp.BSP.ENABLED and bmp.C2S.ENABLED else None,
    }
    return name_phases({k: v for k, v in starts.items() if v is not None})


def _iteration_tag(max_iter: int) -> str:
    """``iter<N>`` with N = iterations completed (EvalHook runs after step N-1, or after training
    with the storage at ``max_iter``); ``eval_only`` outside training."""
    try:
        it = get_event_storage().iter
    except AssertionError:
        return "eval_only"
    return f"iter{it if it >= max_iter else it + 1:07d}"
