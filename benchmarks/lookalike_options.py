#!/usr/bin/env python
"""Effect of the SegIC-derived options on synthetic look-alike pairs (issue 11, 4a/4b).

A pair: a reference scene with an object A and a look-alike B (same colour, another shape, from
the built-in synthetic categories) and a target scene with one A and one B. The reference mask
is A's; "negatives" also marks B as "not this" (``set_reference(..., negatives=...)``);
"geometric prior" is ``MODEL.SINE.GEOMETRIC_PRIOR``. Reported per model and option, over the
pairs: mean IoU of the ID mask of A with the target's A, and the leak, the mean fraction of the
target's B that the ID mask covers (lower is better); the same for the semantic region of A's
class (``sem_seg`` > MODEL.SINE.TEST.SEM_SEG_THRESH).

    python benchmarks/lookalike_options.py --pairs 40 --output benchmarks/results/lookalike.json \\
        [--sine-weights SINE.pth] [--segic-weights SEGIC.pth]

Models: SINE ``configs/demo/sine_synthetic_tiny.yaml`` and SegIC ``configs/segic/Base-SegIC.yaml``
at the same tiny size (:data:`SEGIC_TINY`), random weights (seed 0) and, when given, trained ones.
"""
import argparse
import itertools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from sine.config import get_sine_cfg  # noqa: E402
from sine.data.synthetic import THING_CATEGORIES  # noqa: E402
from sine.data.synthetic.scenes import render_scene  # noqa: E402
from sine.engine.predictor import InContextPredictor  # noqa: E402
from sine.utils.io import atomic_write_json  # noqa: E402

SINE_CONFIG = os.path.join(ROOT, "configs/demo/sine_synthetic_tiny.yaml")
SEGIC_CONFIG = os.path.join(ROOT, "configs/segic/Base-SegIC.yaml")
#: SegIC at the size of the SINE demo (as the SegIC synthetic training recipe).
#: SINE keeps the ID result of A whatever its score (as its VOS protocol), so the mask is measured.
SINE_OPTS = ["MODEL.SINE.TEST.ID_SCORE_THRESH", "-1e9"]
SEGIC_TINY = ["MODEL.DEVICE", "cpu", "MODEL.DINOV2.ARCH", "vit_small", "MODEL.DINOV2.EMBED_DIM",
              "96", "MODEL.DINOV2.DEPTH", "4", "MODEL.DINOV2.NUM_HEADS", "3",
              "MODEL.DINOV2.WEIGHTS", "", "MODEL.SEGIC.IMAGE_SIZE", "224", "MODEL.SEGIC.WIDTH",
              "64", "MODEL.SEGIC.NHEADS", "4", "MODEL.SEGIC.MLP_DIM", "256",
              "MODEL.SEGIC.USE_TEXT", "False"]


def look_alike_pairs(num_pairs, seed):
    """[(ref image, A mask, B mask, target image, A mask, B mask)] of same-colour shape pairs."""
    rng = np.random.default_rng(seed)
    groups = {}
    for c in THING_CATEGORIES:
        groups.setdefault(c["appearance"], []).append(c["id"])
    groups = [ids for ids in groups.values() if len(ids) >= 2]
    pairs = []
    while len(pairs) < num_pairs:
        ids = groups[rng.integers(len(groups))]
        a, b = rng.choice(ids, 2, replace=False).tolist()
        views = []
        for _ in range(2):
            scene = render_scene(rng, [(a, 1), (b, 1)])
            masks = {c: m for c, m in scene.things}
            if a not in masks or b not in masks or not masks[a].any() or not masks[b].any():
                break
            views.append((scene.image, masks[a], masks[b]))
        if len(views) == 2:
            pairs.append((*views[0], *views[1]))
    return pairs


def build(config, opts, weights, geometric_prior):
    torch.manual_seed(0)  # the same random weights for every untrained variant
    extra = ["MODEL.WEIGHTS", weights or ""]
    if geometric_prior:
        extra += ["MODEL.SINE.GEOMETRIC_PRIOR", "True"]
    return InContextPredictor(get_sine_cfg(config, [*opts, *extra]))


def evaluate(predictor, pairs, negatives, desc):
    """Mean IoU with A and leak into B (percent) of the ID mask and of the semantic region."""
    sem_thresh = predictor.cfg.MODEL.SINE.TEST.SEM_SEG_THRESH
    scores = {k: [] for k in ("IoU", "leak", "sem IoU", "sem leak")}
    for ref, ref_a, ref_b, tar, tar_a, tar_b in tqdm(pairs, desc=desc, leave=False):
        predictor.set_reference(ref, [ref_a], negatives=[ref_b] if negatives else None)
        result = predictor.predict(tar, outputs={"id", "sem_seg"})
        ids = result["id"]
        pred_id = ids.pred_masks[ids.pred_ids == 0].any(0).cpu().numpy()
        pred_sem = (result["sem_seg"][result["sem_seg_classes"] == 0] > sem_thresh).any(0)
        for prefix, pred in (("", pred_id), ("sem ", pred_sem.cpu().numpy())):
            scores[prefix + "IoU"].append((pred & tar_a).sum() / max(1, (pred | tar_a).sum()))
            scores[prefix + "leak"].append((pred & tar_b).sum() / max(1, tar_b.sum()))
    return {k: 100 * float(np.mean(v)) for k, v in scores.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sine-weights", default=None, help="trained SINE (sine_synthetic_tiny)")
    parser.add_argument("--segic-weights", default=None, help="trained SegIC (SEGIC_TINY size)")
    parser.add_argument("--output", default=None, help="JSON of the table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pairs = look_alike_pairs(args.pairs, args.seed)
    models = [("SINE", SINE_CONFIG, SINE_OPTS, None, True),
              ("SegIC", SEGIC_CONFIG, SEGIC_TINY, None, False)]
    if args.sine_weights:
        models.append(("SINE", SINE_CONFIG, SINE_OPTS, args.sine_weights, True))
    if args.segic_weights:
        models.append(("SegIC", SEGIC_CONFIG, SEGIC_TINY, args.segic_weights, False))
    rows = []
    for name, config, opts, weights, has_prior in models:
        for prior, negatives in itertools.product([False, True] if has_prior else [False],
                                                  [False, True]):
            predictor = build(config, opts, weights, prior)
            row = {"model": name, "weights": "trained" if weights else "untrained",
                   "geometric_prior": prior, "negatives": negatives}
            row.update(evaluate(predictor, pairs, negatives, f"{name} {row['weights']}"))
            rows.append(row)
            print(f"{name:6} {row['weights']:9} prior={prior!s:5} negatives={negatives!s:5} "
                  f"ID IoU {row['IoU']:5.1f} leak {row['leak']:5.1f} | semantic IoU "
                  f"{row['sem IoU']:5.1f} leak {row['sem leak']:5.1f}", flush=True)
    result = {"pairs": args.pairs, "seed": args.seed, "sine_weights": args.sine_weights,
              "segic_weights": args.segic_weights, "rows": rows}
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        atomic_write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
