"""A model named on the Hugging Face hub (``hf:ORG/NAME``), found in the local cache only.

Every command that takes a run, and :func:`brainencoder.load`, also takes
``hf:ORG/NAME``: the folder ``brainencoder export`` wrote and someone uploaded
to the hub as it is. The name is looked up in the local Hugging Face cache
(``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``) through
``huggingface_hub.snapshot_download(..., local_files_only=True)``: nothing is
ever downloaded here, whatever ``HF_HUB_OFFLINE`` says. A name that is not
cached is one line saying where it looked and how to download it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..util.errors import ConfigError, DataError

__all__ = ["HOW_TO_DOWNLOAD", "HUB_PREFIX", "hub_name", "resolve_source"]

#: the prefix of a hub name among the paths a command takes
HUB_PREFIX = "hf:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
HOW_TO_DOWNLOAD = (
    "download it on a machine with network with 'hf download {name}' (older huggingface_hub: "
    "'huggingface-cli download {name}') and copy the cache here (or point HF_HUB_CACHE at it), "
    "or download it into a folder ('hf download {name} --local-dir DIR') and pass DIR"
)


def hub_name(source: str | os.PathLike) -> str | None:
    """``ORG/NAME`` of a source written ``hf:ORG/NAME``; None for a path.

    Raises
    ------
    ConfigError
        ``hf:`` followed by something that is not a hub repository id.
    """
    text = os.fspath(source)
    if not text.startswith(HUB_PREFIX):
        return None
    name = text[len(HUB_PREFIX) :]
    if not _REPO_ID.match(name) or ".." in name:
        raise ConfigError(
            f"{text}: a model on the Hugging Face hub is named hf:ORG/NAME (letters, digits, "
            "'.', '_' and '-'); pass a folder as a path"
        )
    return name


def resolve_source(source: str | os.PathLike) -> Path:
    """The local folder of ``hf:ORG/NAME`` (its cached snapshot), or ``source`` as a path.

    Parameters
    ----------
    source : path or str
        A run folder, model file or exported folder, or ``hf:ORG/NAME``.

    Returns
    -------
    Path

    Raises
    ------
    DataError
        A hub name that is not in the local cache (where it looked and how
        to download it), or huggingface_hub is not installed.
    """
    name = hub_name(source)
    if name is None:
        return Path(source)
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise DataError(
            f"hf:{name}: loading a model by its hub name needs huggingface_hub (pip install "
            "huggingface_hub); or download the folder and pass its path"
        ) from None
    try:
        folder = snapshot_download(name, local_files_only=True)
    except OSError:  # LocalEntryNotFoundError: not cached (or no snapshot of refs/main)
        raise DataError(
            f"hf:{name}: not in the local Hugging Face cache {constants.HF_HUB_CACHE} (models "
            f"load offline); {HOW_TO_DOWNLOAD.format(name=name)}"
        ) from None
    return Path(folder)
