"""Experiment trackers: TensorBoard (``tensorboard: true``) and Weights & Biases (``wandb: true``).

``metrics.jsonl`` stays the source of truth (the run writes it); a
:class:`Tracker`, opened on rank 0 only, sends every record written there to the
enabled trackers as well: each numeric value but ``step`` becomes a scalar at
the record's ``step``.

- TensorBoard: event files in ``RUN/tensorboard/`` (``tensorboard --logdir
  RUN/tensorboard``), written offline. A resumed run first hides the events
  logged after its checkpoint, as ``metrics.jsonl`` drops those records.
- Weights & Biases: a run of project ``brainencoder`` named after the run
  folder, kept in ``RUN/wandb/``, with the training config as its config.
  ``WANDB_MODE=offline`` keeps it local (``wandb sync`` uploads it later); a
  resumed run is a new W&B run. Online, it needs a W&B login (``wandb login``,
  ``WANDB_API_KEY``): without one, :func:`require_trackers` stops the run
  before its folder is made (wandb would wait at its login prompt, or fail
  without a terminal).

Each needs its package, installed with its extra (``pip install
'brainencoder[tensorboard]'``, ``'brainencoder[wandb]'``).
"""

from __future__ import annotations

import os
from numbers import Real
from typing import TYPE_CHECKING, Any, Protocol

from ..util.errors import ConfigError

if TYPE_CHECKING:
    from ..runs.run import Run
    from .config import TrainConfig

__all__ = ["TRACKERS", "Tracker", "require_trackers", "scalars"]

#: config key -> the extra that installs its package
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}


def require_trackers(config: TrainConfig) -> None:
    """Import the packages of the enabled trackers (every rank, before any work).

    Raises
    ------
    ConfigError
        One line naming the extra to install when a package is missing, or
        saying how to log in when W&B would run online without a login.
    """
    for key in TRACKERS:
        if getattr(config, key):
            _package(key)
    if config.wandb and _wandb_needs_login(_package("wandb")):
        raise ConfigError(
            "'wandb: true' needs a W&B login and this machine has none (no WANDB_API_KEY, "
            "no 'wandb login'): run 'wandb login' or set WANDB_API_KEY, or set "
            "WANDB_MODE=offline to keep the W&B run in the run folder"
        )


def _wandb_needs_login(wandb: Any) -> bool:
    """Whether ``wandb.init`` would ask for a login: online, with no credentials to use.

    Reads what ``wandb.init`` reads, without prompting or the network: its
    settings (``WANDB_MODE``, the settings files ``wandb offline`` writes) and
    its credentials (a login of this process, ``WANDB_API_KEY``, an ``api_key``
    setting, an identity token file, the ``.netrc`` entry of its host).

    Parameters
    ----------
    wandb : module
        The imported ``wandb`` package.

    Returns
    -------
    bool
        False offline, disabled, or with credentials (a malformed one is
        ``wandb.init``'s to report).
    """
    key = os.getenv("WANDB_API_KEY")
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings  # what wandb.init uses; no service started
        if settings.mode in ("offline", "dryrun", "disabled"):
            return False
        host = settings.base_url
        if key or settings.api_key or settings.identity_token_file:
            return False
        if wbauth.session_credentials(host=host) is not None:
            return False
        try:
            return not wbauth.read_netrc_auth(host=host)
        except Exception:  # an entry wandb finds malformed: wandb.init reports it
            return False
    except (ImportError, AttributeError):  # a wandb before wandb_setup.singleton and wbauth
        if os.getenv("WANDB_MODE", "") in ("offline", "dryrun", "disabled"):
            return False
        api = getattr(wandb, "api", None)  # unknown: wandb.init decides
        return api is not None and not (key or api.api_key)


def _package(key: str) -> Any:
    """The module a tracker writes with (``SummaryWriter``, ``wandb``)."""
    try:
        if key == "tensorboard":
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it, imported or not)
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter
        import wandb

        return wandb
    except ImportError:
        raise ConfigError(
            f"'{key}: true' needs the {key} package: pip install 'brainencoder[{TRACKERS[key]}]'"
        ) from None


def scalars(record: dict[str, Any]) -> dict[str, float | int]:
    """The values of a ``metrics.jsonl`` record that trackers log: numbers, ``step`` aside."""
    return {
        key: value
        for key, value in record.items()
        if key != "step" and isinstance(value, Real) and not isinstance(value, bool)
    }


class _Writer(Protocol):
    def log(self, step: int, values: dict[str, float | int]) -> None: ...

    def close(self, failed: bool) -> None: ...


class _TensorBoard:
    """Scalars into ``RUN/tensorboard/`` through ``torch.utils.tensorboard``."""

    def __init__(self, run: Run, resumed_at: int | None) -> None:
        writer = _package("tensorboard")
        # events past the checkpoint's step are hidden, as metrics.jsonl drops their records
        purge = None if resumed_at is None else resumed_at + 1
        self.writer = writer(log_dir=str(run.tensorboard_dir), purge_step=purge)

    def log(self, step: int, values: dict[str, float | int]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self, failed: bool) -> None:
        self.writer.close()


class _WandB:
    """A Weights & Biases run in ``RUN/wandb/`` (``WANDB_MODE`` decides online or offline)."""

    def __init__(self, run: Run, config: TrainConfig) -> None:
        wandb = _package("wandb")
        self.run = wandb.init(
            project="brainencoder",
            dir=str(run.path),
            config=config.to_dict(),
            name=run.path.name,
        )

    def log(self, step: int, values: dict[str, float | int]) -> None:
        self.run.log(values, step=step)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class Tracker:
    """Sends each training record to the enabled trackers; use :meth:`open`.

    A context manager: leaving it closes every tracker (a W&B run that
    raised is marked failed).
    """

    def __init__(self, writers: list[_Writer]) -> None:
        self.writers = writers

    @classmethod
    def open(cls, config: TrainConfig, run: Run, resumed_at: int | None = None) -> Tracker | None:
        """The trackers ``config`` enables for ``run`` (rank 0), or None when it enables none.

        Parameters
        ----------
        config : TrainConfig
        run : Run
        resumed_at : int, optional
            The step of the checkpoint a resumed run starts from.
        """
        writers: list[_Writer] = []
        try:
            if config.tensorboard:
                writers.append(_TensorBoard(run, resumed_at))
            if config.wandb:
                writers.append(_WandB(run, config))
        except BaseException:
            cls(writers).close(failed=True)
            raise
        return cls(writers) if writers else None

    def log(self, record: dict[str, Any]) -> None:
        """Log the :func:`scalars` of one ``metrics.jsonl`` record at its ``step``."""
        values = scalars(record)
        for writer in self.writers:
            writer.log(int(record["step"]), values)

    def close(self, failed: bool = False) -> None:
        """Flush and close every tracker."""
        for writer in self.writers:
            writer.close(failed)
        self.writers = []

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(failed=exc_type is not None)
