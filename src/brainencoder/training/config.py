"""Training configuration: defaults <- YAML file <- ``key=value`` overrides.

The merged configuration is validated once (unknown keys and ill-typed values
are errors listing what is valid) and saved into the run directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..models.encoder import EncoderConfig, preset_config
from ..models.lora import LoRAConfig
from ..models.multi_trunk import lora_parts
from ..models.presets import ENCODERS
from ..util.errors import ConfigError, DataError
from ..util.fileio import read_yaml_mapping
from ..util.plugins import load_plugins
from ..util.typecheck import check_seed, from_mapping
from .losses import create_loss, validate_loss
from .overrides import merge_config, parse_overrides, read_overrides

__all__ = ["TrainConfig", "load_config", "parse_overrides"]

_AMP = ("auto", "none", "bf16", "fp16")
_TRAIN_ON = (["train"], ["train", "val"], ["train", "val", "testval"])  # what train_on may be
_VAL_METRIC = re.compile(r"^val/((r2|pearson)_(median|mean)|subj\d+/(r2|pearson)_median)$")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data.

    Attributes
    ----------
    plugins : list of str
        Modules to import before anything else is checked (``[my_readouts]``):
        the readouts, losses and trunk families they register can then be
        named here. Each is looked up as ``import`` does, the current
        directory first (as ``python -m``); only modules named by the user
        are imported, never modules named in a model file or run folder.
    encoder : str
        Named encoder preset (``"tiny"``, ``"eva02_base"``, or one a plugin
        registers: :data:`~brainencoder.models.presets.ENCODERS`).
    model : dict
        Overrides of :class:`~brainencoder.models.encoder.EncoderConfig` fields;
        ``readout`` options merge into the preset's
        (``model.readout.name=grouplin model.readout.dropout=0.5``).
    init_from : str or None
        Run directory (its best model) or model file to start from (phase 2).
        The architecture then comes from that model; ``model`` must be empty.
    pca_file : str or None
        Group PCA from ``brainencoder pca`` (default: fit one on the train split).
    train_trunk : bool
        Train the trunk (phase 2) or keep it frozen (phase 1).
    freeze : list of str
        fnmatch patterns of trunk parameters kept frozen when ``train_trunk``.
    lora : dict, optional
        Fine-tune the (otherwise frozen) trunk through low-rank updates instead
        of unfreezing it: ``{rank, alpha, targets, dropout, weight_decay}``
        (see :class:`~brainencoder.models.lora.LoRAConfig`). The updates are
        merged into the trunk in ``best.safetensors``; checkpoints keep them
        apart so a resumed run continues them.
    trunk_bn_eval : bool
        When training the trunk, keep its BatchNorm layers in eval mode (running
        statistics frozen, as in phase 1); matters for convnet trunks only.
    train_fraction : float
        Train on a seeded random fraction of each subject's train split
        (learning curves); validation always uses the whole val split.
    train_on : list of str
        The store splits to train on: ``[train]``; ``[train, val]`` for a final
        fit once the recipe is chosen, or ``[train, val, testval]`` for one on
        every image with responses (no validation then: the model is the last
        epoch's, and the commands that score on a split refuse the ones a run
        trained on).
    epochs, batch_size, grad_accum : int
        ``batch_size`` is the global batch of one optimizer step, split over
        ``grad_accum`` micro-batches and over DDP processes.
    lr, weight_decay, warmup_frac, min_lr_frac : float
        AdamW; linear warmup over ``warmup_frac`` of the steps, then cosine
        decay to ``min_lr_frac * lr``.
    smoothness : float
        Weight of a smoothness prior on the readout's per-vertex tuning over
        the cortical surface, reached at the last step by a linear ramp (0:
        off; see :mod:`brainencoder.models.readouts.smoothness`).
    betas : list of 2 floats
        AdamW betas (the original entry: [0.9, 0.99]).
    decay_all_params : bool
        Weight decay on every trainable parameter (the original entry), or on
        matrices only (biases and norms undecayed, as nanoGPT).
    grad_clip : float or None
        Max global gradient norm; None: no clipping (the original entry).
    loss : dict
        ``{"name": "mse" | "smooth_l1" | "pearson", **options}``
        (see :mod:`brainencoder.training.losses`).
    amp : {"auto", "none", "bf16", "fp16"}
        Mixed precision: "auto" is bf16 on CUDA devices that support it (else
        fp16 with a gradient scaler) and none on CPU.
    crop_scale : list of 2 floats
        Random-resized-crop area fraction range; ``[1, 1]`` disables it.
    cache_features : bool
        Extract frozen-trunk features once and train the head from the cache.
    cache_views : int
        Feature-cache views per image: view 0 is the plain image, the others
        random-resized crops.
    cache_dir : str or None
        Where feature caches live (default: ``<store>/features``).
    cache_dtype : {"float16", "int8"}
        How cached features are stored: float16, or int8 with a float32 scale
        per (image, channel), dequantized batch by batch (half the disk).
    cache_scope : {"shared", "node"}
        Under torchrun, every rank extracts a share of the cache: of one
        folder all ranks see (a network filesystem, "shared"), or of a folder
        per node, where each node's ranks extract every row ("node").
    decode_workers : int
        Threads reading and preparing the next batches while the trunk runs
        (feature extraction).
    val_metric : str
        Metric that picks the best checkpoint (``val/r2_median`` ...).
    early_stop_patience : int or None
        Stop after this many epochs without improvement.
    checkpoint_every : int
        Also checkpoint every this many steps within an epoch (0: epoch ends only).
    seed : int
    pca_seed : int
    num_workers : int
        Threads reading and cropping the next training batches while the
        current step runs (0: in the loop, between steps); the result does not
        depend on it.
    device : str
        "auto", "cpu", "cuda", "cuda:1", ...
    tensorboard : bool
        Also log every ``metrics.jsonl`` record to TensorBoard, offline, in
        ``RUN/tensorboard/`` (``pip install 'brainencoder[tensorboard]'``).
    wandb : bool
        Also log every ``metrics.jsonl`` record to Weights & Biases, project
        ``brainencoder``, kept in ``RUN/wandb/``; ``WANDB_MODE=offline`` keeps
        it local (``pip install 'brainencoder[wandb]'``). See
        :mod:`brainencoder.training.tracking`.
    log_every : int
        Steps between JSONL training records.
    """

    plugins: list[str] = field(default_factory=list)
    encoder: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    pca_file: str | None = None
    train_trunk: bool = False
    freeze: list[str] = field(default_factory=list)
    lora: dict[str, Any] | None = None
    trunk_bn_eval: bool = True
    train_fraction: float = 1.0
    train_on: list[str] = field(default_factory=lambda: ["train"])
    epochs: int = 40
    batch_size: int = 512
    grad_accum: int = 1
    lr: float = 6e-4
    weight_decay: float = 0.8
    smoothness: float = 0.0
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    decay_all_params: bool = False
    grad_clip: float | None = 1.0
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "mse"})
    amp: str = "auto"
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])
    cache_features: bool = False
    cache_views: int = 1
    cache_dir: str | None = None
    cache_dtype: Literal["float16", "int8"] = "float16"
    cache_scope: Literal["shared", "node"] = "shared"
    decode_workers: int = 2
    val_metric: str = "val/r2_median"
    early_stop_patience: int | None = None
    checkpoint_every: int = 0
    seed: int = 0
    pca_seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    tensorboard: bool = False
    wandb: bool = False
    log_every: int = 10

    def validate(self) -> None:
        """Import the plugins, then check values before any work; ConfigError naming the key."""
        load_plugins(self.plugins)  # first: the names below may be the plugins' own
        if self.encoder not in ENCODERS:
            raise ConfigError(f"'encoder' must be one of {ENCODERS.names()}; got {self.encoder!r}")
        if self.init_from and self.model:
            raise ConfigError(
                "'model' overrides cannot be combined with 'init_from' (the "
                "architecture comes from the initial model)"
            )
        self.encoder_config()  # type-checks every model.* key
        validate_loss(self.loss)
        self._check_numbers()
        self._check_choices()

    def _check_numbers(self) -> None:
        """Counts, seeds, batch sizes and optimizer values in their ranges (part of validate)."""
        for key in ("epochs", "batch_size", "grad_accum", "cache_views", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'{key}' must be >= 1; got {getattr(self, key)}")
        for key in ("seed", "pca_seed"):
            check_seed(key, getattr(self, key))
        for key in ("num_workers", "checkpoint_every", "decode_workers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'{key}' must be >= 0; got {getattr(self, key)}")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            raise ConfigError(f"'early_stop_patience' must be >= 1; got {self.early_stop_patience}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"'batch_size' ({self.batch_size}) must be divisible by "
                f"'grad_accum' ({self.grad_accum})"
            )
        if self.batch_size // self.grad_accum < 2:
            raise ConfigError(
                f"'batch_size' ({self.batch_size}) over 'grad_accum' ({self.grad_accum}) "
                f"micro-batches is {self.batch_size // self.grad_accum} sample per micro-batch; "
                "BatchNorm needs at least 2: raise batch_size to at least "
                f"{2 * self.grad_accum} or lower grad_accum"
            )
        if self.lr <= 0 or self.lr > 1:
            raise ConfigError(f"'lr' must be in (0, 1]; got {self.lr}")
        for key in ("weight_decay", "smoothness"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'{key}' must be >= 0; got {getattr(self, key)}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"'grad_clip' must be > 0 or null; got {self.grad_clip}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"'betas' must be two numbers in [0, 1); got {self.betas}")
        if not (0 <= self.warmup_frac < 1 and 0 <= self.min_lr_frac <= 1):
            raise ConfigError("'warmup_frac' must be in [0, 1) and 'min_lr_frac' in [0, 1]")

    def _check_choices(self) -> None:
        """Data, precision, crops, cache and LoRA, selection metric: values and pairs (validate)."""
        if not 0 < self.train_fraction <= 1:
            raise ConfigError(f"'train_fraction' must be in (0, 1]; got {self.train_fraction}")
        if self.train_on not in _TRAIN_ON:
            raise ConfigError(
                "'train_on' must be [train], [train, val] or [train, val, testval]; "
                f"got {self.train_on}"
            )
        if not self.validates and self.early_stop_patience is not None:
            raise ConfigError(
                "'early_stop_patience' needs the val split, which 'train_on' trains on; "
                "drop one of them"
            )
        if self.amp not in _AMP:
            raise ConfigError(f"'amp' must be one of {set(_AMP)}; got {self.amp!r}")
        scale = self.crop_scale
        if len(scale) != 2 or not (0 < scale[0] <= scale[1] <= 1):
            raise ConfigError(
                f"'crop_scale' must be [min, max] with 0 < min <= max <= 1; got {self.crop_scale}"
            )
        if self.cache_features and self.train_trunk:
            raise ConfigError("'cache_features' needs a frozen trunk; set train_trunk: false")
        if self.lora is not None:
            self.lora_config()
            if self.train_trunk:
                raise ConfigError(
                    "'lora' fine-tunes the trunk through low-rank updates instead of "
                    "unfreezing it; set train_trunk: false (or drop lora)"
                )
            if self.cache_features:
                raise ConfigError("'lora' changes the trunk's features; set cache_features: false")
        if not _VAL_METRIC.match(self.val_metric):
            raise ConfigError(
                "'val_metric' must be val/{r2,pearson}_{median,mean} or "
                f"val/subjXX/{{r2,pearson}}_median; got {self.val_metric!r}"
            )
        if self.grad_accum > 1 and not _decomposes(self.loss):
            raise ConfigError(
                f"loss {self.loss['name']!r} does not decompose over samples, so gradient "
                "accumulation would change it: set grad_accum: 1 (or use mse / smooth_l1)"
            )

    @property
    def validates(self) -> bool:
        """Whether the val split is held out (and picks the best epoch)."""
        return "val" not in self.train_on

    def lora_config(self) -> LoRAConfig | None:
        """``lora`` as a checked LoRAConfig (its ``trunk``: :func:`~.multi_trunk.lora_parts`)."""
        return None if self.lora is None else lora_parts(self.lora)[0]

    def encoder_config(self) -> EncoderConfig:
        """The preset named by ``encoder`` with the ``model`` overrides, type-checked."""
        return preset_config(self.encoder, self.model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _decomposes(loss: dict[str, Any]) -> bool:
    return create_loss(loss).decomposes


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> TrainConfig:
    """Defaults, then the YAML file, then overrides; validated.

    Parameters
    ----------
    path : path, optional
        YAML file with TrainConfig keys.
    overrides : mapping or sequence of str, optional
        A mapping of dotted keys or nested mappings, values as they are
        (``{"lr": 1e-3, "model.readout.name": "point"}``), or the command line's
        ``key=value`` strings, values read as YAML (``["model.readout.dropout=0.5"]``);
        see :mod:`brainencoder.training.overrides`. Both meet the same checks.

    Returns
    -------
    TrainConfig
        Checked: a ConfigError names a malformed override, an unknown key or a bad value.

    Examples
    --------
    >>> load_config(None, {"epochs": 2, "model.readout.name": "point"}).epochs
    2
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = read_yaml_mapping(path, "config file")
        except DataError as exc:
            raise ConfigError(str(exc)) from None
    data = merge_config(data, read_overrides(overrides))
    if isinstance(data.get("loss"), str):  # "loss: smooth_l1" shorthand
        data["loss"] = {"name": data["loss"]}
    if isinstance(data.get("loss"), dict):  # "loss.beta=0.1" keeps the default name
        data["loss"] = {**TrainConfig().loss, **data["loss"]}
    return from_mapping(TrainConfig, data)


def resolve_config(name: str | Path) -> Path | None:
    """The config file a ``train`` argument names: a packaged config, or a YAML file.

    The rule does not depend on what the current folder holds: ``""`` and
    ``"none"`` are the defaults (None); a :class:`~pathlib.Path`, or text with a
    ``/`` or ending in ``.yaml`` / ``.yml``, is a YAML file (``./demo``,
    ``runs/p1/config.yaml``, ``my.yaml``); any other text is the name of a config
    packaged with brainencoder (``phase1``, ``demo``...), read from the installed
    package: a file or folder ``demo`` in the current folder never hides it.

    Raises
    ------
    ConfigError
        A folder, a missing file, or a name that is no packaged config (listing them).
    """
    folder = Path(__file__).parents[1] / "configs"
    available = sorted(p.stem for p in folder.glob("*.yaml"))
    text = str(name)
    if text in ("", "none"):
        return None
    pathlike = isinstance(name, Path) or "/" in text or os.sep in text
    if not pathlike and not text.endswith((".yaml", ".yml")):
        if (folder / f"{text}.yaml").is_file():
            return folder / f"{text}.yaml"
        found = Path(text).is_file()
        what = "not a packaged config" if found else "neither a file nor a packaged config"
        hint = f"pass ./{text} to read that file" if found else "give a file as ./NAME or NAME.yaml"
        raise ConfigError(f"config {text!r} is {what} ({available}); {hint}")
    path = Path(name)
    if path.is_dir():
        raise ConfigError(
            f"{path}: is a folder, not a config file; pass a YAML file, or a packaged config "
            f"by its name alone ({available})"
        )
    if not path.is_file():
        packaged = (
            f" (the packaged config is named {path.stem!r})" if path.stem in available else ""
        )
        raise ConfigError(f"{path}: config file not found{packaged}")
    return path
