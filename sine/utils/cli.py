"""Running a command-line entry point: user errors as one line, tracebacks only with --debug.

Standard library only (the errors of sine are imported when one is raised): a CLI builds its
parser from these helpers and imports torch / detectron2 after parsing, so ``--help`` answers
at once.

    if __name__ == "__main__":
        sys.exit(run_cli(main))

A user error (bad input, missing file, unknown config key, ...) prints ``error: <message>``
and exits with status 2; any other exception prints its type and message and exits with 1,
and asks for ``--debug``, which re-raises so the traceback is shown.
"""
import os
import re
import sys
import warnings
from typing import Callable, List, Optional, Tuple

__all__ = ["ACCELERATION_FLAG_CHOICES", "DEBUG_FLAG", "DEMO_CONFIG", "add_acceleration_flag",
           "add_common_flags", "add_config_file_flag", "add_launch_args", "run_cli",
           "split_config_overrides"]

#: The CPU demo model that every user CLI defaults to (an absolute path: any working directory).
DEMO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "configs", "demo", "sine_synthetic_tiny.yaml")


def add_config_file_flag(parser, note: str = "") -> None:
    """``--config-file`` (default :data:`DEMO_CONFIG`); ``note`` is appended to its help."""
    parser.add_argument("--config-file", default=DEMO_CONFIG, metavar="FILE",
                        help="default: the CPU demo model configs/demo/sine_synthetic_tiny.yaml"
                        + (f" {note}" if note else ""))

# Top-level sections of the config (tests/test_cli_inputs.py checks this list against
# get_sine_cfg()): an override key starts with one of them, which tells it from an upper-case
# file name such as IMG_001.JPG.
CONFIG_ROOTS = ("CUDNN_BENCHMARK", "DATALOADER", "DATASETS", "GLOBAL", "INPUT", "MODEL",
                "OUTPUT_DIR", "SEED", "SOLVER", "TEST", "VERSION", "VIS_PERIOD")
_KEY_SHAPE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


class _ConfigKey:
    @staticmethod
    def match(token: str) -> bool:
        return bool(_KEY_SHAPE.match(token)) and token.split(".")[0] in CONFIG_ROOTS


_CONFIG_KEY = _ConfigKey()

DEBUG_FLAG = "--debug"


def _user_error_types():
    from ..data.user_inputs import UserInputError

    return (UserInputError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError)


def add_common_flags(parser):
    """Document ``--debug`` and the positional ``KEY VALUE`` overrides in ``parser``.

    :func:`split_config_overrides` takes the overrides out of ``argv`` before parsing, so they
    may follow options that take several values (``--input a.jpg b.jpg MODEL.WEIGHTS x.pth``).
    """
    import argparse

    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="show the full traceback of an error instead of one line")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides as in train_net.py and inference_*, e.g. "
                             "MODEL.WEIGHTS model.pth MODEL.DEVICE cpu (last on the line)")
    parser.add_argument("--opts", dest="opts_deprecated", nargs=argparse.REMAINDER,
                        default=[], help=argparse.SUPPRESS)
    return parser


def add_launch_args(parser, dist_url: str = "auto") -> None:
    """detectron2 ``launch`` options, as ``train_net.py``: one process per GPU (gloo on CPU)."""
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes on this machine (one per GPU; on CPU: gloo processes)")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0,
                        help="rank of this machine (unique per machine)")
    parser.add_argument("--dist-url", default=dist_url,
                        help="initialization URL of the process group (default: %(default)s)")


#: ``--acceleration`` values: the options of sine.engine.acceleration and "auto" (written out
#: so that ``--help`` needs no torch; tests/test_acceleration.py checks they are the same).
ACCELERATION_FLAG_CHOICES = ("fp32", "bf16", "int8", "onnx", "auto")


def add_acceleration_flag(parser):
    """``--acceleration``: the predictor's CPU speed option (see README, CPU speed options)."""
    parser.add_argument("--acceleration", choices=ACCELERATION_FLAG_CHOICES, default="fp32",
                        help="CPU speed option: fp32 (default), bf16 (CPUs with avx512_bf16 / "
                             "amx_bf16), int8 (dynamic quantisation of the ViT), onnx "
                             "(onnxruntime; the onnx extra), or auto: the fastest that agrees "
                             "with fp32, measured once per machine and cached")
    return parser


def _is_option(token: str) -> bool:
    if not token.startswith("--"):
        return False
    try:
        float(token)
        return False
    except ValueError:
        return True


def split_config_overrides(argv: List[str]) -> Tuple[List[str], List[str]]:
    """``argv`` -> (arguments, ``KEY VALUE`` overrides).

    Overrides start at the first config key (``MODEL.WEIGHTS``, ``OUTPUT_DIR``); a deprecated
    ``--opts`` before it is dropped. Options written after the overrides (``MODEL.X 1 --flag v``)
    are moved back to the arguments, up to the next key.
    """
    start = next((i for i, t in enumerate(argv) if _CONFIG_KEY.match(t)), len(argv))
    head, opts, in_option = list(argv[:start]), [], False
    for token in argv[start:]:
        if _is_option(token):
            in_option = True
        elif _CONFIG_KEY.match(token):
            in_option = False
        (head if in_option else opts).append(token)
    if "--opts" in head:
        warnings.warn("--opts is deprecated: give KEY VALUE overrides at the end of the command "
                      "line, without --opts", FutureWarning, stacklevel=2)
        head = [t for t in head if t != "--opts"]
    return head, opts


def run_cli(main: Callable[[Optional[List[str]]], object],
            argv: Optional[List[str]] = None) -> int:
    """Call ``main(argv)`` and turn exceptions into messages; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    if debug:
        argv.remove(DEBUG_FLAG)
    try:
        result = main(argv)
    except SystemExit:  # argparse (--help, usage errors) already said everything
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except _user_error_types() as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, or an error we do not know how to explain
        if debug:
            raise
        print(f"error: {type(e).__name__}: {e}\n(rerun with {DEBUG_FLAG} for the traceback)",
              file=sys.stderr)
        return 1
    # A batch may finish with skipped inputs: its result says so with a non-zero status.
    return int(getattr(result, "exit_status", 0))
