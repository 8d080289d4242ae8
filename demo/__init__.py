"""Demos of sine: command line (demo.py), web app (app.py) and their drawing (visualize.py)."""
import importlib.util
import os
import sys


def light_cli():
    """``sine.utils.cli`` (standard library only) without importing the ``sine`` package,
    which loads torch and detectron2 to register the model: ``--help`` answers at once."""
    name = "sine.utils.cli"
    if name not in sys.modules:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "sine", "utils", "cli.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # a later `import sine.utils.cli` finds this module
        spec.loader.exec_module(module)
    return sys.modules[name]
