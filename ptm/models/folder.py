"""Reading a model folder — its ``config.json`` and its weights — with one-line errors.

transformers and safetensors answer a truncated or corrupt file with a traceback from deep inside
(``SafetensorError: Error while deserializing header: incomplete metadata``, ``OSError: It looks
like the config file ... is not a valid JSON file``). A copy cut short by a full disk or an
interrupted download is the usual cause, and the fix is always the same: copy or export the folder
again. Every stage reads model folders through here, so each says that in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError
from transformers import AutoConfig, PretrainedConfig

from ptm.errors import InputError

# Weight files in the order transformers looks for them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_FIX = "copy the model folder again, or export it again (it may have been cut short)"


def read_config(folder: Path, hint: str = "point to a folder written by ptm or transformers"):
    """The folder's ``config.json`` as a transformers config."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise InputError(folder, "no config.json: not a model folder", hint)
    try:
        config: PretrainedConfig = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:  # invalid JSON, unknown model_type, unreadable file
        raise InputError(path, f"not a readable model config ({_first_line(e)})", _FIX) from e
    return config


@contextmanager
def reading_weights(path: Path) -> Iterator[None]:
    """Turn the errors of a truncated, corrupt or missing weight file under ``path`` (a file, or
    the model folder) into one `InputError` naming the file."""
    try:
        yield
    except (SafetensorError, OSError) as e:
        raise InputError(weights_file(path), f"unreadable weights ({_first_line(e)})", _FIX) from e


def weights_file(path: Path) -> Path:
    """The weight file a folder holds (the first transformers would read), else the path."""
    path = Path(path)
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
    return path


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
