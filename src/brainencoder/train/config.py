"""Training configuration: defaults <- YAML file <- ``key=value`` overrides.

The merged configuration is validated once (unknown keys and ill-typed values
are errors listing what is valid) and saved into the run directory.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..models.encoder import ENCODER_CONFIGS, EncoderConfig

__all__ = ["TrainConfig", "load_config", "parse_overrides"]

_AMP = ("auto", "none", "bf16", "fp16")
_VAL_METRIC = re.compile(r"^val/((r2|pearson)_(median|mean)|subj\d+/(r2|pearson)_median)$")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data.

    Attributes
    ----------
    encoder : str
        Named encoder configuration (``"tiny"``, ``"eva02_base"``).
    model : dict
        Overrides of :class:`~brainencoder.models.encoder.EncoderConfig` fields.
    init_from : str or None
        Run directory (its best model) or model file to start from (phase 2).
        The architecture then comes from that model; ``model`` must be empty.
    pca_file : str or None
        Group PCA from ``brainencoder pca`` (default: fit one on the train split).
    train_trunk : bool
        Train the trunk (phase 2) or keep it frozen (phase 1).
    freeze : list of str
        fnmatch patterns of trunk parameters kept frozen when ``train_trunk``.
    trunk_bn_eval : bool
        When training the trunk, keep its BatchNorm layers in eval mode (running
        statistics frozen, as in phase 1); matters for convnet trunks only.
    train_fraction : float
        Train on a seeded random fraction of each subject's train split
        (learning curves); validation always uses the whole val split.
    epochs, batch_size, grad_accum : int
        ``batch_size`` is the global batch of one optimizer step, split over
        ``grad_accum`` micro-batches and over DDP processes.
    lr, weight_decay, warmup_frac, min_lr_frac : float
        AdamW with decay on matrices only; linear warmup over ``warmup_frac``
        of the steps, then cosine decay to ``min_lr_frac * lr``.
    grad_clip : float or None
        Max global gradient norm.
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
    val_metric : str
        Metric that picks the best checkpoint (``val/r2_median`` ...).
    early_stop_patience : int or None
        Stop after this many epochs without improvement.
    checkpoint_every : int
        Also checkpoint every this many steps within an epoch (0: epoch ends only).
    seed : int
    pca_seed : int
    num_workers : int
    device : str
        "auto", "cpu", "cuda", "cuda:1", ...
    wandb : bool
        Also log to Weights & Biases (needs ``wandb`` installed).
    log_every : int
        Steps between JSONL training records.
    """

    encoder: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    pca_file: str | None = None
    train_trunk: bool = False
    freeze: list[str] = field(default_factory=list)
    trunk_bn_eval: bool = True
    train_fraction: float = 1.0
    epochs: int = 40
    batch_size: int = 512
    grad_accum: int = 1
    lr: float = 6e-4
    weight_decay: float = 0.8
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.05
    grad_clip: float | None = 1.0
    amp: str = "auto"
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])
    cache_features: bool = False
    cache_views: int = 1
    cache_dir: str | None = None
    val_metric: str = "val/r2_median"
    early_stop_patience: int | None = None
    checkpoint_every: int = 0
    seed: int = 0
    pca_seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    wandb: bool = False
    log_every: int = 10

    def validate(self) -> None:
        """Check values; raises ConfigError naming the key."""
        if self.encoder not in ENCODER_CONFIGS:
            raise ConfigError(
                f"'encoder' must be one of {sorted(ENCODER_CONFIGS)}; got {self.encoder!r}"
            )
        valid_model = {f.name for f in dataclasses.fields(EncoderConfig)}
        unknown = sorted(set(self.model) - valid_model)
        if unknown:
            raise ConfigError(f"unknown model key(s) {unknown}; valid: {sorted(valid_model)}")
        if self.init_from and self.model:
            raise ConfigError(
                "'model' overrides cannot be combined with 'init_from' (the "
                "architecture comes from the initial model)"
            )
        positive = ("epochs", "batch_size", "grad_accum", "cache_views", "log_every")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"'{key}' must be >= 1; got {getattr(self, key)}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"'batch_size' ({self.batch_size}) must be divisible by "
                f"'grad_accum' ({self.grad_accum})"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(
                f"'lr' must be > 0 and 'weight_decay' >= 0; got {self.lr}, {self.weight_decay}"
            )
        if not (0 <= self.warmup_frac < 1 and 0 <= self.min_lr_frac <= 1):
            raise ConfigError("'warmup_frac' must be in [0, 1) and 'min_lr_frac' in [0, 1]")
        if not 0 < self.train_fraction <= 1:
            raise ConfigError(f"'train_fraction' must be in (0, 1]; got {self.train_fraction}")
        if self.amp not in _AMP:
            raise ConfigError(f"'amp' must be one of {set(_AMP)}; got {self.amp!r}")
        scale = self.crop_scale
        if len(scale) != 2 or not (0 < scale[0] <= scale[1] <= 1):
            raise ConfigError(
                f"'crop_scale' must be [min, max] with 0 < min <= max <= 1; got {self.crop_scale}"
            )
        if self.cache_features and self.train_trunk:
            raise ConfigError("'cache_features' needs a frozen trunk; set train_trunk: false")
        if not _VAL_METRIC.match(self.val_metric):
            raise ConfigError(
                "'val_metric' must be val/{r2,pearson}_{median,mean} or "
                f"val/subjXX/{{r2,pearson}}_median; got {self.val_metric!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Coerce ``value`` to ``annotation`` where lossless; raise otherwise."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"'{key}' must be {annotation}; got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list; got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_check_type(key, v, item) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping; got {value!r}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is Any:
        return value
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"'{key}' must be {annotation.__name__}; got {value!r}")
    if not isinstance(value, annotation):
        raise ConfigError(f"'{key}' must be {annotation.__name__}; got {value!r}")
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "model.dropout=0.5"]`` -> ``{"lr": 0.001, "model": {"dropout": 0.5}}``.

    Values are parsed as YAML scalars/lists (``true``, ``[0, 2]``, ``null``).
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value ({exc})") from None
        target = out
        *parents, last = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    return out


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then overrides; validated.

    Parameters
    ----------
    path : path, optional
        YAML file with TrainConfig keys.
    overrides : list of str, optional
        ``key=value`` strings (nested keys with dots: ``model.dropout=0.5``).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
        data = loaded
    data = _merge(data, parse_overrides(overrides or []))
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(TrainConfig)
    values = {k: _check_type(k, v, hints[k]) for k, v in data.items()}
    config = TrainConfig(**values)
    config.validate()
    return config
