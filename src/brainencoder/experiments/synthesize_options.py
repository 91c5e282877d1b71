"""The settings of ``synthesize``'s gradient ascent (no torch: the command line reads them)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AscentOptions"]


@dataclass(frozen=True)
class AscentOptions:
    """How images are optimised (``synthesize``'s settings).

    Attributes
    ----------
    steps : int
        Gradient steps (Adam).
    lr : float
        Adam's learning rate on the spectrum.
    jitter : int
        Each step translates the images by up to this many pixels (of the
        images made); 0: none.
    blur : float
        Gaussian blur (sigma, in pixels of the images made) applied to what
        the models see each step; 0: none.
    tv : float
        Weight of the total-variation penalty (mean absolute difference of
        neighbouring pixels) subtracted from the objective.
    decay : float
        Exponent of the ``1 / frequency`` scaling of the spectrum.
    seed : int
        Seeds the starting spectra and the jitter.
    """

    steps: int = 128
    lr: float = 0.1
    jitter: int = 8
    blur: float = 0.0
    tv: float = 0.05
    decay: float = 1.5
    seed: int = 0

    def validate(self) -> None:
        """A ConfigError naming the first setting out of range."""
        from ..util.errors import ConfigError
        from ..util.typecheck import check_seed

        check_seed("seed", self.seed)
        if self.steps < 1 or self.lr <= 0:
            raise ConfigError(f"'steps' must be >= 1 and 'lr' > 0; got {self.steps}, {self.lr}")
        for key in ("jitter", "blur", "tv", "decay"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"'{key}' must be >= 0; got {getattr(self, key)!r}")
