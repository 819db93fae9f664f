"""The authors' BMP code, run on CPU in this process from a checkout the user gives.

Their code (github.com/zh460045050/BMP-WSSS) is imported or executed from ``--official`` at run
time and never copied here. Two entry points serve the tools that compare with it:

* :func:`import_official`: their model, PAR and label functions as modules. ``mmcv`` and
  ``pydensecrf`` (imported at module load, neither installs on a current stack) and ``imageio``
  get stand-ins when missing: ``mmcv.cnn.ConvModule`` as conv (no bias) -> BatchNorm -> ReLU with
  their parameter names ``conv`` / ``bn``, and functions that refuse to run for the rest.
* :class:`TheirTrainingLoop`: one iteration of their ``train_voc.py`` loop. Their ``train()``
  sets up CUDA, NCCL, data loaders and TensorBoard before the loop, so the harness reads the
  file's syntax tree and executes, in one namespace: the file's imports that the loop needs, its
  argument parser (with the flags of their ``runTrain.sh``), the config overrides of its
  ``__main__`` block, the set-up statements of ``train()`` that build what the loop body reads
  (PAR, the affinity masks, the optimizer, ...), and then the loop body itself for a given
  ``n_iter`` on a given batch. The model is built by the caller (their class, not DDP-wrapped).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import shlex
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml
from torch import nn

# ----------------------------------------------------------------------------- their modules


class _ConvModuleStandIn(nn.Module):
    """conv (no bias) -> BatchNorm2d -> ReLU, with mmcv's parameter names ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **_: object):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def _refuse(*_: object, **__: object) -> None:
    raise RuntimeError("stand-in: this function is not part of the comparison")


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def install_stand_ins() -> list[str]:
    """Register modules their code imports but no comparison needs; return their names."""
    installed = []
    if _missing("mmcv"):
        mmcv = types.ModuleType("mmcv")
        cnn = types.ModuleType("mmcv.cnn")
        cnn.ConvModule = _ConvModuleStandIn
        mmcv.cnn = cnn
        sys.modules.update({"mmcv": mmcv, "mmcv.cnn": cnn})
        installed.append("mmcv.cnn.ConvModule")
    if _missing("pydensecrf"):
        root = types.ModuleType("pydensecrf")
        dense = types.ModuleType("pydensecrf.densecrf")
        utils = types.ModuleType("pydensecrf.utils")
        dense.DenseCRF2D = _refuse
        utils.unary_from_softmax = utils.unary_from_labels = _refuse
        root.densecrf, root.utils = dense, utils
        sys.modules.update(
            {"pydensecrf": root, "pydensecrf.densecrf": dense, "pydensecrf.utils": utils}
        )
        installed.append("pydensecrf")
    if _missing("imageio"):
        imageio = types.ModuleType("imageio")
        imageio.imread = imageio.imsave = _refuse
        sys.modules["imageio"] = imageio
        installed.append("imageio")
    return installed


def check_checkout(path: Path) -> Path:
    path = Path(path).resolve()
    needed = ("libs/model.py", "utils/camutils.py", "train_voc.py")
    if not all((path / f).is_file() for f in needed):
        raise SystemExit(
            f"error: {path} does not look like a BMP-WSSS checkout (it needs {', '.join(needed)});"
            " pass the repository root with --official"
        )
    return path


def import_official(path: Path) -> SimpleNamespace:
    """Import their model, PAR, label functions, optimizer and transforms from ``path``."""
    path = check_checkout(path)
    stand_ins = install_stand_ins()
    for name in list(sys.modules):  # a different 'utils' or 'libs' package must not shadow theirs
        if name in ("libs", "utils") or name.startswith(("libs.", "utils.")):
            del sys.modules[name]
    sys.path.insert(0, str(path))
    try:
        mods = {
            key: importlib.import_module(name)
            for key, name in (
                ("model", "libs.model"),
                ("par", "libs.PAR"),
                ("camutils", "utils.camutils"),
                ("imutils", "utils.imutils"),
                ("optimizer", "utils.optimizer"),
            )
        }
        spec = importlib.util.spec_from_file_location(
            "_bmp_official_transforms", path / "datasets" / "transforms.py"
        )
        transforms = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(transforms)
    finally:
        sys.path.remove(str(path))
    return SimpleNamespace(**mods, transforms=transforms, stand_ins=stand_ins, path=path)


def build_their_model(
    official: SimpleNamespace,
    seed: int,
    checkpoint: str | None = None,
    unsafe_unpickle: bool = False,
):
    """Their MiT-B1 BMP (VOC, 21 classes): random weights from ``seed`` or a checkpoint's.

    Random weights get BatchNorm statistics that are not the identity, so the decoder's BatchNorm
    is exercised too. The checkpoint is read as data unless ``unsafe_unpickle`` (a downloaded
    file may be crafted to run code). The model is returned in train mode; callers choose.
    """
    from convert_bmp_official import strip_module_prefix

    from bmp.utils.weights import load_state_dict_file

    torch.manual_seed(seed)
    model = official.model.BMP(
        "mit_b1", num_classes=21, embedding_dim=256, stride=[4, 2, 2, 1], pooling="gmp"
    )
    if checkpoint:
        state = load_state_dict_file(checkpoint, unsafe_unpickle=unsafe_unpickle)
        model.load_state_dict(strip_module_prefix(state), strict=True)
    else:
        gen = torch.Generator().manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


def disable_dropout(model: nn.Module) -> nn.Module:
    """Dropout and drop-path off (train mode otherwise draws random masks on either side)."""
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
    return model


# ----------------------------------------------------------------------- their training loop

# What the loop body reads that train() builds before the loop, by assignment target; the rest
# of train() (CUDA, NCCL, data loaders, the model, DDP, TensorBoard, logging) is replaced.
_SETUP_TARGETS = (
    "param_groups",
    "par",
    "mask_size",
    "infer_size",
    "attn_mask",
    "attn_mask_infer",
    "optimizer",
    "avg_meter",
    "bkg_cls",
)
_SETUP_CALLS = ("par.to", "model.to")
_LAUNCHER_FLAGS = ("--nproc_per_node", "--master_port")


class _Cfg(SimpleNamespace):
    """Attribute access over their YAML config, as OmegaConf gives it to their code."""


def _to_cfg(value: Any) -> Any:
    if isinstance(value, dict):
        return _Cfg(**{k: _to_cfg(v) for k, v in value.items()})
    return value


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``6e-5`` as a string; OmegaConf, which their code uses, reads a float."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def run_train_flags(script: Path) -> list[str]:
    """The flags their ``runTrain.sh`` passes to ``train_voc.py``, its shell variables expanded
    (the launcher's own flags and the script name dropped)."""
    text = script.read_text().replace("\\\n", " ")
    env = dict(re.findall(r"^\s*([A-Za-z_]\w*)=(\S+)\s*$", text, flags=re.M))
    line = next((ln for ln in text.splitlines() if "python" in ln and "--" in ln), None)
    if line is None:
        raise SystemExit(f"error: {script} has no python command line to read the flags from")
    words = [re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), w) for w in
             shlex.split(line.split("python", 1)[1])]  # fmt: skip
    flags: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        takes_value = i + 1 < len(words) and not words[i + 1].startswith("--")
        if w.startswith("--") and w not in _LAUNCHER_FLAGS and "=" not in w:
            flags += [w, words[i + 1]] if takes_value else [w]
        i += 2 if w.startswith("--") and takes_value else 1
    return flags


def _names_loaded(nodes: list[ast.stmt]) -> set[str]:
    return {
        n.id
        for node in nodes
        for n in ast.walk(node)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }


def _source(node: ast.AST) -> str:
    return ast.unparse(node)


class TheirTrainingLoop:
    """One iteration of their ``train_voc.py`` loop body on CPU, with their optimizer.

    ``model`` is their ``BMP`` (plain, in train mode); ``flags`` default to their
    ``runTrain.sh``'s, then ``extra_flags`` (e.g. ``["--crop_size", "320"]``) are appended.
    """

    def __init__(self, official: SimpleNamespace, model: nn.Module, extra_flags=()) -> None:
        self.path = official.path
        tree = ast.parse((self.path / "train_voc.py").read_text(), filename="train_voc.py")
        train = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
        loop = next(
            n
            for n in train.body
            if isinstance(n, ast.For) and getattr(n.target, "id", None) == "n_iter"
        )
        setup = [s for s in train.body if self._is_setup(s)]
        self.loop_body = compile(
            ast.Module(body=loop.body, type_ignores=[]), "train_voc.py", "exec"
        )
        needed = _names_loaded(loop.body + setup)
        self.ns: dict[str, Any] = {"__name__": "_bmp_official_train_voc"}
        self._run_imports(tree, needed)
        self.flags = run_train_flags(self.path / "runTrain.sh") + list(extra_flags)
        self.args = self._parse_args(tree)
        self.cfg = self._load_config(tree)
        # Logging and evaluation blocks of the loop run every log_iters / eval_iters iterations;
        # they write images and checkpoints, which a one-step comparison does not want.
        self.cfg.train.log_iters = self.cfg.train.eval_iters = 10**12
        self.ns.update(
            args=self.args, cfg=self.cfg, model=model, device=torch.device("cpu"),
        )  # fmt: skip
        for stmt in setup:
            exec(compile(ast.Module(body=[stmt], type_ignores=[]), "train_voc.py", "exec"), self.ns)
        self.model, self.optimizer = model, self.ns["optimizer"]

    @staticmethod
    def _is_setup(stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.Assign):
            targets = {t.id for t in stmt.targets if isinstance(t, ast.Name)}
            return bool(targets & set(_SETUP_TARGETS))
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            return _source(stmt.value.func) in _SETUP_CALLS
        return False

    def _run_imports(self, tree: ast.Module, needed: set[str]) -> None:
        """Their module's imports that bind a name the loop or its set-up reads."""
        sys.path.insert(0, str(self.path))
        try:
            for node in tree.body:
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                for alias in node.names:  # one name at a time: 'evaluate' needs scikit-learn
                    if (alias.asname or alias.name).split(".")[0] not in needed:
                        continue
                    one = (
                        ast.ImportFrom(module=node.module, names=[alias], level=node.level)
                        if isinstance(node, ast.ImportFrom)
                        else ast.Import(names=[alias])
                    )
                    code = ast.Module(body=[ast.fix_missing_locations(one)], type_ignores=[])
                    exec(compile(code, "train_voc.py", "exec"), self.ns)
        finally:
            sys.path.remove(str(self.path))

    def _parse_args(self, tree: ast.Module) -> argparse.Namespace:
        """Their top-level ``parser`` statements, then ``parse_args`` on the flags."""
        stmts = [
            s
            for s in tree.body
            if (isinstance(s, ast.Assign) and _source(s.targets[0]) == "parser")
            or (isinstance(s, ast.Expr) and _source(s).startswith("parser.add_argument"))
        ]
        ns = {"argparse": argparse}
        exec(compile(ast.Module(body=stmts, type_ignores=[]), "train_voc.py", "exec"), ns)
        args, unknown = ns["parser"].parse_known_args(self.flags)
        if unknown:
            raise SystemExit(f"error: their train_voc.py does not take {unknown}")
        return args

    def _load_config(self, tree: ast.Module) -> _Cfg:
        """Their ``--config`` YAML, with the ``cfg.dataset`` / ``cfg.cam`` overrides that their
        ``__main__`` block applies from the flags."""
        with open(self.path / self.args.config) as f:
            cfg = _to_cfg(yaml.load(f, Loader=_YamlLoader))
        main = next(n for n in tree.body if isinstance(n, ast.If) and "__main__" in _source(n.test))
        overrides = [
            s
            for s in main.body
            if isinstance(s, ast.Assign)
            and _source(s.targets[0]).startswith(("cfg.dataset.", "cfg.cam."))
        ]
        exec(
            compile(ast.Module(body=overrides, type_ignores=[]), "train_voc.py", "exec"),
            {"cfg": cfg, "args": self.args},
        )
        return cfg

    def lr_at(self, iteration: int) -> list[float]:
        """The LR of every group that their ``PolyWarmupAdamW.step`` sets at ``iteration``.

        Runs their ``step`` on a copy of the optimizer's groups with no gradients (AdamW skips
        parameters without one), so neither the weights nor the optimizer change."""
        probe = [{**g, "params": [torch.zeros(1, requires_grad=True)]} for g in
                 self.optimizer.param_groups]  # fmt: skip
        opt = type(self.optimizer)(
            probe, lr=probe[0]["lr"], weight_decay=0.0, betas=(0.9, 0.999),
            warmup_iter=self.optimizer.warmup_iter, max_iter=self.optimizer.max_iter,
            warmup_ratio=self.optimizer.warmup_ratio, power=self.optimizer.power,
        )  # fmt: skip
        opt.global_step = iteration
        opt.step()
        return [g["lr"] for g in opt.param_groups]

    def step(self, n_iter: int, inputs: torch.Tensor, cls_labels: torch.Tensor, img_box) -> dict:
        """Run their loop body once at ``n_iter`` on one batch; return the loop's variables.

        ``inputs`` are their normalised images (B, 3, H, W), ``cls_labels`` (B, 20) multi-hot,
        ``img_box`` (B, 4) ``[y0, y1, x0, x1]`` boxes of real pixels, as their loader gives them.
        """
        self.optimizer.global_step = n_iter
        batch = ([f"image{i}" for i in range(len(inputs))], inputs, cls_labels, img_box)
        self.ns.update(n_iter=n_iter, train_loader_iter=iter([batch]))
        exec(self.loop_body, self.ns)
        return self.ns
