"""MODEL.SINE.GEOMETRIC_PRIOR: SegIC's coarse mask and top-1 point in SINE's ID positional prior."""
import torch

from sine.config import get_sine_cfg
from sine.engine.predictor import InContextPredictor
from tests.tiny_model import TINY_MODEL_OPTS


def decoder(prior):
    torch.manual_seed(0)
    cfg = get_sine_cfg(None, [*TINY_MODEL_OPTS, "MODEL.SINE.GEOMETRIC_PRIOR", str(prior)])
    return InContextPredictor(cfg).model.transformer_decoder


def test_top_point_is_where_the_target_matches_the_prototype():
    dec = decoder(True)
    C = dec.query_feat.weight.shape[1]
    tar = torch.randn(1, C, 8, 8) * 0.1
    proto = torch.randn(C)
    tar[0, :, 5, 2] = proto * 10  # the best match: row 5, column 2
    coarse, cells = dec.geometric_instructions(proto[None, None], tar)
    assert coarse.shape == (1, 1, 64)
    assert cells.tolist() == [[5.0, 2.0]]
    assert coarse[0, 0].argmax().item() == 5 * 8 + 2


def test_prior_changes_only_when_on():
    off, on = decoder(False), decoder(True)
    C = off.query_feat.weight.shape[1]
    torch.manual_seed(1)
    tokens, tar = torch.randn(1, 2, C), torch.randn(1, C, 8, 8)
    sem = torch.randn(1, 1, C)
    labels = torch.tensor([0, 0])
    with torch.no_grad():
        a = off.forward_tokens(tokens, sem, labels, torch.tensor([0]), tar)
        b = on.forward_tokens(tokens, sem, labels, torch.tensor([0]), tar)
        c = off.forward_tokens(tokens, sem, labels, torch.tensor([0]), tar)
    assert torch.equal(a["pred_id_masks"], c["pred_id_masks"])
    assert not torch.allclose(a["pred_id_masks"], b["pred_id_masks"])
