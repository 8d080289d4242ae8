"""Checks of the model files and settings a user chooses: config, overrides, weights, device.

Each turns a deep library error (yacs ``KeyError``, detectron2 ``AssertionError``, a torch
unpickling ``IndexError``, a CUDA ``RuntimeError``) into a :class:`UserInputError` naming the
file or key and the fix. Used by the predictors, so the API, the CLIs and the app agree.
"""
import difflib
import os
from typing import Sequence

from ..data.user_inputs import UserInputError

__all__ = ["check_device", "check_weights_file", "load_user_config", "load_weights"]


def _flat_keys(cfg, prefix=""):
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if hasattr(v, "items"):
            yield from _flat_keys(v, name + ".")
        else:
            yield name


def _unknown_key_error(cfg, error: Exception, source: str) -> UserInputError:
    text = str(error.args[0]) if error.args else str(error)
    key = text.split(":")[-1].strip().strip("'\"") if ":" in text else text
    close = difflib.get_close_matches(key, list(_flat_keys(cfg)), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else \
        " (see sine/config.py for every key)"
    return UserInputError(f"unknown config key {key!r} in {source}{hint}")


def load_user_config(config_file=None, opts: Sequence[str] = ()):
    """``get_sine_cfg`` with user errors: missing file, odd overrides, unknown or mistyped keys."""
    from ..config import get_default_cfg

    opts = list(opts or ())
    cfg = get_default_cfg()
    if config_file:
        from ..evaluation.suite_setup import resolve_config_file

        config_file = os.fspath(config_file)
        try:  # the documented configs/... paths work from any working directory
            config_file = resolve_config_file(config_file)
        except FileNotFoundError:
            pass
        if not os.path.isfile(config_file):
            raise UserInputError(
                f"config file {config_file!r} does not exist (the CPU demo model is "
                "configs/demo/sine_synthetic_tiny.yaml)"
            )
        try:
            cfg.merge_from_file(config_file)
        except KeyError as e:
            raise _unknown_key_error(cfg, e, f"config file {config_file!r}") from e
        except Exception as e:  # yaml syntax, type mismatch, missing _BASE_
            raise UserInputError(f"cannot read config file {config_file!r}: {e}") from e
    if len(opts) % 2:
        raise UserInputError(
            f"config overrides must be KEY VALUE pairs; got an odd number ({len(opts)}): {opts}"
        )
    try:
        cfg.merge_from_list(opts)
    except KeyError as e:
        raise _unknown_key_error(cfg, e, "the overrides") from e
    except AssertionError as e:
        if "Non-existent key" in str(e):
            raise _unknown_key_error(cfg, e, "the overrides") from e
        raise UserInputError(f"bad config override: {e}") from e
    except (ValueError, TypeError) as e:
        raise UserInputError(f"bad config override: {e}") from e
    return cfg


def check_device(device) -> None:
    """Refuse a CUDA device on a machine without one (instead of a deep RuntimeError)."""
    if device is None:
        return
    import torch

    name = str(device)
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserInputError(
                f"device {name!r} was asked for (MODEL.DEVICE / --device) but CUDA is not "
                "available here: use MODEL.DEVICE cpu (or --device cpu)"
            )
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise UserInputError(f"unknown device {name!r}: use cpu, cuda or cuda:N")
    elif name not in ("cpu", "mps", "meta"):
        raise UserInputError(f"unknown device {name!r}: use cpu or cuda[:N]")


def check_weights_file(path) -> None:
    """The checkpoint must exist and be a file (before building a model for nothing)."""
    if not path:
        return
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserInputError(
            f"checkpoint {path!r} (MODEL.WEIGHTS / --weights) does not exist: train one (see the "
            "README) or fix the path"
        )
    if not os.path.isfile(path):
        raise UserInputError(f"checkpoint {path!r} (MODEL.WEIGHTS) is a folder, not a file")


def load_weights(checkpointer, path) -> None:
    """``checkpointer.load(path)`` with corrupt / foreign files reported as user errors."""
    check_weights_file(path)
    try:
        checkpointer.load(os.fspath(path))
    except UserInputError:
        raise
    except Exception as e:
        raise UserInputError(
            f"cannot load checkpoint {os.fspath(path)!r} ({type(e).__name__}: {e}): the file is "
            "corrupt, truncated or not a SINE checkpoint; re-download or re-train it"
        ) from e
