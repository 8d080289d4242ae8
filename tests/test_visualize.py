"""Drawing: labels never overlap, fonts follow the image size, big targets are drawn capped,
the reference comes first, names replace class ids."""
import numpy as np
import torch
from detectron2.structures import Instances

from sine.utils.visualize import (
    draw_reference,
    draw_result,
    fit_size,
    font_scale,
    place_labels,
)


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_labels_at_the_same_place_do_not_overlap_and_stay_inside():
    boxes = place_labels(300, 400, [(f"#{i} cat 0.9{i}", (200, 150)) for i in range(6)])
    assert all(not _overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300 for x0, y0, x1, y1 in boxes)


def test_font_follows_the_image_size():
    assert font_scale(100, 100) < font_scale(700, 700) < font_scale(1600, 1600)


def test_drawing_size_is_capped_and_tiny_images_are_enlarged():
    assert fit_size(9000, 6000, 1600) == (1600, 1067)
    assert fit_size(40, 60, 1600) == (213, 320)
    assert fit_size(500, 400, 1600) == (500, 400)


def _result(h, w):
    ids = Instances((h, w))
    ids.pred_masks = torch.zeros(2, h, w, dtype=torch.bool)
    ids.pred_masks[0, : h // 2, : w // 2] = True
    ids.pred_masks[1, h // 2:, w // 2:] = True
    ids.pred_ids, ids.scores = torch.tensor([0, 1]), torch.tensor([0.9, 0.8])
    ids.pred_classes = torch.tensor([5, 7])
    return {"id": ids, "instances": ids, "sem_seg": torch.rand(2, h, w),
            "sem_seg_classes": torch.tensor([5, 7])}


def test_large_target_is_drawn_capped_with_the_reference_first():
    ref = np.full((60, 80, 3), 100, np.uint8)
    masks = np.zeros((2, 60, 80), bool)
    masks[0, :30, :40], masks[1, 30:, 40:] = True, True
    names = {5: "cat", 7: "dog"}
    panel = draw_reference(ref, masks, [5, 7], names)
    assert "Reference: 2 object(s)" in panel.caption
    target = np.full((3000, 2000, 3), 50, np.uint8)
    canvas = draw_result(target, _result(3000, 2000), 0.7, 0.5, names, panel, max_side=800)
    assert canvas.shape[0] < 800 + 400  # drawing height + captions, never the full 3000
    ref_w = round(80 * 800 / 60)  # the reference panel is scaled to the target panels' height
    assert canvas.shape[1] >= ref_w + 3 * 533  # reference + three 800x533 panels
    # the reference panel comes first: its left column is the reference image's grey
    assert (canvas[-5, 5] != 50).any()


def test_captions_use_category_names_and_reference_numbers():
    from sine.utils.visualize import draw_panels

    panels = draw_panels(np.zeros((40, 60, 3), np.uint8), _result(40, 60), 0.0, 0.5,
                         {5: "cat", 7: "dog"})
    assert panels["id"].caption == "Same object as reference #0, #1"
    assert panels["semantic"].caption.endswith("cat, dog")
