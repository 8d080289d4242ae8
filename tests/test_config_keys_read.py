"""Every config key that sine's ``add_*_config`` functions define is read by some code.

A key nobody reads is a setting that silently does nothing. The source tree (package, suites,
demos, train_net.py) is parsed; a key counts as read when an attribute chain ending in its path
is loaded, directly (``cfg.MODEL.SINE.VOS.PAD_SIZE``) or through a variable bound to one of its
parent nodes (``vos = cfg.MODEL.SINE.VOS`` ... ``vos.PAD_SIZE``). Assignments do not count.
Keys that only detectron2 itself reads are listed, with the reason, in the function's allow-list.
Another model's ``add_*_config`` is covered by an entry in CONFIG_FUNCTIONS.
"""
import ast
import os
from typing import Dict, Iterator, Set

import pytest
from detectron2.config import CfgNode, get_cfg

from sine.config import add_segic_config, add_sine_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["sine", "inference_fss", "inference_fsod", "inference_vos", "demo", "train_net.py"]

# Keys add_sine_config sets whose only reader is detectron2 (why each is read there).
DETECTRON2_READS = {
    "MODEL.BACKBONE.NAME": "detectron2.modeling.build_backbone picks DINOv2Encoder",
}

CONFIG_FUNCTIONS = {
    "add_sine_config": (add_sine_config, DETECTRON2_READS),
    "add_segic_config": (add_segic_config, {}),
}


def _flatten(node: CfgNode, prefix: str = "") -> Dict[str, object]:
    out = {}
    for key, value in node.items():
        path = prefix + key
        if isinstance(value, CfgNode):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def keys_set_by(add_config) -> Set[str]:
    """Leaf keys that ``add_config`` adds to detectron2's defaults or gives another value."""
    base = _flatten(get_cfg())
    cfg = get_cfg()
    add_config(cfg)
    return {k for k, v in _flatten(cfg).items() if k not in base or base[k] != v}


def _python_files() -> Iterator[str]:
    for entry in SOURCES:
        path = os.path.join(ROOT, entry)
        if path.endswith(".py"):
            yield path
            continue
        for folder, _, files in os.walk(path):
            yield from (os.path.join(folder, f) for f in files if f.endswith(".py"))


def _chain(node: ast.AST):
    """``self.b.C`` -> ["self", "b", "C"]; None unless the chain starts from a plain name."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return [node.id, *attrs[::-1]] if isinstance(node, ast.Name) else None


def _config_path(attrs):
    """The trailing upper-case attributes of a chain: ``cfg.MODEL.SINE`` -> "MODEL.SINE"."""
    tail = []
    for a in reversed(attrs):
        if not a.isupper():
            break
        tail.append(a)
    return ".".join(reversed(tail))


def keys_read_in_sources() -> Set[str]:
    read = set()
    for path in _python_files():
        tree = ast.parse(open(path).read(), path)
        # variable or attribute ("vos", "self.fsod") -> config node paths assigned to it
        aliases: Dict[str, Set[str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute):
                chain = _chain(node.value)
                node_path = chain and _config_path(chain)
                for target in node.targets if node_path else ():
                    target_chain = _chain(target)
                    if target_chain:
                        aliases.setdefault(".".join(target_chain), set()).add(node_path)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)):
                continue
            chain = _chain(node)
            key = chain and _config_path(chain)
            if not key:
                continue
            read.add(key)
            holder = ".".join(chain[:len(chain) - len(key.split("."))])
            read.update(f"{parent}.{key}" for parent in aliases.get(holder, ()))
    return read


@pytest.fixture(scope="module")
def read_keys():
    return keys_read_in_sources()


@pytest.mark.parametrize("name", sorted(CONFIG_FUNCTIONS))
def test_every_key_is_read_by_some_code(name, read_keys):
    add_config, detectron2_reads = CONFIG_FUNCTIONS[name]
    keys = keys_set_by(add_config)
    assert keys, f"{name} sets no key"
    unread = sorted(k for k in keys if k not in read_keys and k not in detectron2_reads)
    assert not unread, f"keys set by {name} that no code reads: {unread}"
    stale = sorted(k for k in detectron2_reads if k not in keys or k in read_keys)
    assert not stale, f"allow-list entries not needed (read here, or not set): {stale}"


def test_the_scan_sees_aliased_and_direct_reads_but_not_writes(read_keys):
    # direct (train_net.py), through `vos = predictor.cfg.MODEL.SINE.VOS`, through `sine = ...`
    assert {"SOLVER.AMP.ENABLED", "MODEL.SINE.VOS.SHORT_SIDE",
            "MODEL.SINE.NO_OBJECT_WEIGHT"} <= read_keys
    assert "MODEL.SINE.VOS.NOT_A_KEY" not in read_keys
