"""M-Former: In-Context Fusion + dual-path (ID / instance+semantic) decoder (spec §2-§3).

Parameter names equal the official ``transformer_decoder.*`` keys, so official weights load without
renaming. The decoder works on one target at a time (batch size 1, like the official code),
because the number of reference tokens differs from target to target.
"""
import math
from collections.abc import Sequence
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers.batch_norm import LayerNorm
from detectron2.utils.registry import Registry
from torch import nn

from .in_context_fusion import InContextFusion, MaskPooling
from .layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
    shared_head_mask,
    xavier_init_,
)
from .position_encoding import PositionEmbeddingSine
from .reference_pooling import get_reference_pooling

TRANSFORMER_DECODER_REGISTRY = Registry("SINE_TRANSFORMER_DECODER")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry for the SINE transformer decoder (reference/target fusion + query decoder).
The registered object is called with ``cfg`` and must implement
``forward(ref_feats, ref_masks, ref_labels, tar_feat) -> dict`` (see MFormerDecoder).
"""

PRED_KEYS = ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks")
# Outputs of the instance / semantic path, absent from an ``id_only`` decode.
INSTANCE_KEYS = ("pred_ins_logits", "pred_ins_masks", "ins_hidden_states")


def build_transformer_decoder(cfg) -> nn.Module:
    """Build the decoder named by ``cfg.MODEL.SINE.TRANSFORMER_DECODER_NAME``."""
    name = cfg.MODEL.SINE.TRANSFORMER_DECODER_NAME
    decoder = TRANSFORMER_DECODER_REGISTRY.get(name)(cfg)
    if not callable(getattr(decoder, "forward", None)):
        raise TypeError(f"Transformer decoder {name} has no forward method.")
    return decoder


class MFormerLayer(nn.Module):
    """One decoder block (spec §3.2).

    Self-attention over [ID; instance; semantic] queries with a block mask, masked
    cross-attention to the fused target features for ID and instance queries only, then
    ``transformer_ffn_layer1`` for ID and instance queries and ``transformer_ffn_layer2`` for the
    semantic ones.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, pre_norm: bool):
        super().__init__()
        self.transformer_self_attention_layer = SelfAttentionLayer(d_model, nhead, pre_norm)
        self.transformer_cross_attention_layer = CrossAttentionLayer(d_model, nhead, pre_norm)
        self.transformer_ffn_layer1 = FFNLayer(d_model, dim_feedforward, pre_norm)
        self.transformer_ffn_layer2 = FFNLayer(d_model, dim_feedforward, pre_norm)

    def forward(
        self,
        output: List[torch.Tensor],
        query_embed: List[torch.Tensor],
        image_feat: torch.Tensor,
        image_pe: torch.Tensor,
        sa_attn_mask: torch.Tensor,
        ca_attn_mask: torch.Tensor,
    ) -> List[torch.Tensor]:
        """
        Args:
            output: [id (nm, 1, C), ins (nq, 1, C), sem (ns, 1, C)] query contents.
            query_embed: positional embeddings, same shapes as ``output``.
            image_feat: (hw, 1, C) fused target features.
            image_pe: (hw, 1, C) their positional encoding.
            sa_attn_mask: (heads, L, L) bool, L = nm + nq + ns, True = blocked.
            ca_attn_mask: (heads, nm + nq, hw) bool, True = blocked.
        Returns:
            [id, ins, sem] updated, same shapes.
        """
        sizes = [len(x) for x in output]
        x = self.transformer_self_attention_layer(
            torch.cat(output), attn_mask=sa_attn_mask, query_pos=torch.cat(query_embed)
        )
        id_q, ins_q, sem_q = x.split(sizes)
        x = self.transformer_cross_attention_layer(
            torch.cat([id_q, ins_q]),
            image_feat,
            attn_mask=ca_attn_mask,
            pos=image_pe,
            query_pos=torch.cat(query_embed[:2]),
        )
        id_q, ins_q = x.split(sizes[:2])
        return [
            self.transformer_ffn_layer1(id_q),
            self.transformer_ffn_layer1(ins_q),
            self.transformer_ffn_layer2(sem_q),
        ]


class LazyAuxOutputs(Sequence):
    """``aux_outputs`` of an inference decode, each computed on first access.

    Inference only reads the last prediction, so the fast path keeps the query states of the
    earlier blocks and runs their prediction heads only if someone indexes this sequence. The
    numbers are those of the eager computation (same function, same inputs).
    """

    def __init__(self, decoder: "MFormerDecoder", items: list, mask_features, grid,
                 keys=PRED_KEYS):
        """items: per level, a computed prediction dict or the query states [id, ins, sem];
        keys: the prediction keys each level holds."""
        self._decoder = decoder
        self._items = items
        self._keys = keys
        self._mask_features = mask_features
        self._grid = grid
        self._grad_enabled = torch.is_grad_enabled()

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        item = self._items[index]
        if not isinstance(item, dict):
            with torch.set_grad_enabled(self._grad_enabled):
                pred, _ = self._decoder.forward_prediction_heads(
                    item, self._mask_features, self._grid, with_attn_mask=False
                )
            item = self._items[index] = {k: pred[k] for k in self._keys}
        return item

    def __repr__(self) -> str:
        return f"LazyAuxOutputs(len={len(self)})"


def unblock_fully_masked_queries(mask: torch.Tensor) -> torch.Tensor:
    """Clear the cross-attention mask of queries that it blocks everywhere (they would get NaNs).

    Args:
        mask: (B * heads, Q, hw) bool, True = blocked; the official repeated mask (cleared in
            place, as the official code) or the fast path's heads-shared view (cleared out of
            place on the one shared mask, 1/heads of the work).
    Returns:
        the mask, fully blocked rows set to False.
    """
    shared = shared_head_mask(mask)
    if shared is not None:  # no data-dependent branch: the ONNX export traces this
        return (shared & ~shared.all(-1, keepdim=True)).expand_as(mask)
    mask[mask.sum(-1) == mask.shape[-1]] = False
    return mask


@TRANSFORMER_DECODER_REGISTRY.register()
class MFormerDecoder(nn.Module):
    """The official SINE M-Former (training-model variant, generalised to K references).

    Outputs 1 + ``dec_layers`` predictions: one from the initial queries and one after each block.
    """

    # True: in eval mode the auxiliary predictions are computed lazily (LazyAuxOutputs) and the
    # cross-attention mask only where it is used. False: everything eagerly (official).
    fast_inference: bool = True

    @configurable
    def __init__(
        self,
        *,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        fusion_layers: int,
        pre_norm: bool,
        mask_dim: int,
        temp_init: float = 30.0,
        gaussian_sigma: float = 10.0,
        refresh_cross_attn_mask: bool = False,
        reference_pooling: str = "instance",
        geometric_prior: bool = False,
    ):
        """
        Args:
            hidden_dim: width C of features and queries (= neck channels).
            num_queries: learnable instance queries nq.
            nheads: attention heads.
            dim_feedforward: FFN hidden size (fusion and decoder).
            dec_layers: decoder blocks.
            fusion_layers: In-Context Fusion layers.
            pre_norm: pre-norm decoder blocks (fusion is always post-norm).
            mask_dim: mask-embedding channels.
            temp_init: initial softmax temperature of the ID positional prior.
            gaussian_sigma: std (grid cells) of the Gaussian around the best-matching location.
            refresh_cross_attn_mask: recompute the cross-attention mask after every block
                (Mask2Former). Off = official: the mask of the initial prediction is reused.
            reference_pooling: default name in ``REFERENCE_POOLING``.
            geometric_prior: add SegIC's geometric instructions to the ID positional prior
                (:meth:`geometric_instructions`; off = official SINE).
        """
        super().__init__()
        self.num_heads = nheads
        self.gaussian_sigma = gaussian_sigma
        self.refresh_cross_attn_mask = refresh_cross_attn_mask
        self.reference_pooling = reference_pooling
        self.geometric_prior = geometric_prior
        # Official parameter order (state_dict order matches the released checkpoints).
        self.temp = nn.Parameter(torch.tensor(float(temp_init)))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.fusion_layers = InContextFusion(fusion_layers, hidden_dim, nheads, dim_feedforward)
        self.transformer_layers = nn.ModuleList(
            MFormerLayer(hidden_dim, nheads, dim_feedforward, pre_norm) for _ in range(dec_layers)
        )
        xavier_init_(self.fusion_layers)
        xavier_init_(self.transformer_layers)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.mask_feat_layer = nn.Sequential(
            nn.ConvTranspose2d(hidden_dim, hidden_dim // 2, kernel_size=2, stride=2),
            LayerNorm(hidden_dim // 2, eps=1e-6),
            nn.GELU(),
            nn.ConvTranspose2d(hidden_dim // 2, mask_dim, kernel_size=2, stride=2),
        )
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        # Type embedding added to the query content: 0 = ID, 1 = instance, 2 = semantic.
        self.query_grained_embed = nn.Embedding(3, hidden_dim)
        self.id_class_embed = nn.Linear(hidden_dim, 2)
        # Learned "no object" prototype appended to the semantic queries.
        self.neg_class_embed = nn.Embedding(1, hidden_dim)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.mask_pooling = MaskPooling()

    @classmethod
    def from_config(cls, cfg):
        s = cfg.MODEL.SINE
        return {
            "hidden_dim": s.FEAT_CHANS,
            "num_queries": s.NUM_QUERIES,
            "nheads": s.NHEADS,
            "dim_feedforward": s.DIM_FEEDFORWARD,
            "dec_layers": s.DEC_LAYERS,
            "fusion_layers": s.FUSION_LAYERS,
            "pre_norm": s.PRE_NORM,
            "mask_dim": s.MASK_DIM,
            "temp_init": s.TEMP_INIT,
            "gaussian_sigma": s.GAUSSIAN_SIGMA,
            "refresh_cross_attn_mask": s.REFRESH_CROSS_ATTN_MASK,
            "reference_pooling": s.REFERENCE_POOLING,
            "geometric_prior": s.GEOMETRIC_PRIOR,
        }

    def forward(
        self,
        ref_feats: torch.Tensor,
        ref_masks: List[torch.Tensor],
        ref_labels: List[torch.Tensor],
        tar_feat: torch.Tensor,
        pooling: Optional[str] = None,
        lazy_aux: Optional[bool] = None,
        id_only: bool = False,
    ) -> Dict:
        """Decode one target given its K references.

        Args:
            ref_feats: (K, C, h, w) neck features of the references.
            ref_masks: K tensors (n_k, H, W) reference masks at the padded image size.
            ref_labels: K int64 tensors (n_k,) class id of every reference mask.
            tar_feat: (1, C, h, w) neck features of the target (same grid as the references).
            pooling: name in ``REFERENCE_POOLING`` (spec §2.4 protocol variants); None = the
                configured ``MODEL.SINE.REFERENCE_POOLING``.
            lazy_aux: compute ``aux_outputs`` only when accessed; None = on the fast path in
                eval mode. Values are the same either way.
            id_only: decode the ID queries alone (for ID results, e.g. VOS). They attend only
                to each other and to the image, so their outputs are those of the full decode;
                the ``pred_ins_*`` / ``ins_hidden_states`` keys are then absent.
        Returns:
            dict with (nm = sum n_k ID tokens, nc classes, nq queries, mh x mw = 4h x 4w):
            ``ref_id_labels`` (1, nm), ``ref_sem_labels`` (1, nc) sorted class ids,
            ``pred_id_logits`` (1, nm, 2) [object, no-object], ``pred_ins_logits``
            (1, nq, nc + 1) (last = no-object), ``pred_id_masks`` (1, nm, mh, mw),
            ``pred_ins_masks`` (1, nq, mh, mw) mask logits, ``id_hidden_states`` (1, nm, D) and
            ``ins_hidden_states`` (1, nq, D) final mask embeddings, and ``aux_outputs``: one dict
            with the four ``pred_*`` keys per earlier prediction (initial queries first; a
            :class:`LazyAuxOutputs` sequence when ``lazy_aux``).
        """
        if ref_feats.shape[-2:] != tar_feat.shape[-2:]:
            raise ValueError(
                f"Reference and target feature grids differ: {tuple(ref_feats.shape[-2:])} vs "
                f"{tuple(tar_feat.shape[-2:])}; pad all images of a pair to the same size."
            )
        mask_features = self.mask_feat_layer(tar_feat)  # from the pre-fusion target feature
        tokens = self.pool_references(ref_feats, ref_masks, ref_labels, pooling)
        return self.forward_tokens(*tokens, tar_feat, mask_features, lazy_aux=lazy_aux,
                                   id_only=id_only)

    def pool_references(
        self,
        ref_feats: torch.Tensor,
        ref_masks: List[torch.Tensor],
        ref_labels: List[torch.Tensor],
        pooling: Optional[str] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reference tokens (spec §2.3-§2.4), pooled in float32 on the mask-feature grid.

        Args: see :meth:`forward`.
        Returns:
            id_tokens (1, nm, C), sem_tokens (1, nc, C), id_labels (nm,), sem_labels (nc,).
        """
        pool = get_reference_pooling(pooling or self.reference_pooling)
        return pool(ref_feats, ref_masks, ref_labels, self.mask_grid(ref_feats.shape[-2:]),
                    self.mask_pooling)

    @staticmethod
    def mask_grid(grid) -> Tuple[int, int]:
        """(mh, mw) of the mask features of an (h, w) feature grid: ``mask_feat_layer``
        upsamples 4x (two stride-2 transposed convolutions)."""
        return 4 * int(grid[0]), 4 * int(grid[1])

    def forward_tokens(
        self,
        id_tokens: torch.Tensor,
        sem_tokens: torch.Tensor,
        id_labels: torch.Tensor,
        sem_labels: torch.Tensor,
        tar_feat: torch.Tensor,
        mask_features: Optional[torch.Tensor] = None,
        lazy_aux: Optional[bool] = None,
        id_only: bool = False,
    ) -> Dict:
        """Decode one target from already pooled reference tokens (e.g. cached prototypes).

        Args:
            id_tokens: (1, nm, C) ID tokens (nm may be 0); id_labels: (nm,) their classes.
            sem_tokens: (1, nc, C) semantic prototypes; sem_labels: (nc,) their classes.
            tar_feat: (1, C, h, w) target neck features.
            mask_features: (1, D, 4h, 4w), computed from ``tar_feat`` when not given.
            lazy_aux, id_only: see :meth:`forward`.
        Returns:
            the dict described in :meth:`forward`.
        """
        if mask_features is None:
            mask_features = self.mask_feat_layer(tar_feat)
        grid = tuple(tar_feat.shape[-2:])
        nm = id_tokens.shape[1]
        ref_tokens = torch.cat([id_tokens, sem_tokens], dim=1).transpose(0, 1)
        image_tokens = tar_feat.flatten(2).permute(2, 0, 1)
        ref_tokens, image_feat = self.fusion_layers(ref_tokens, image_tokens)
        image_pe = self.pe_layer(tar_feat).flatten(2).permute(2, 0, 1)
        geometry = self.geometric_instructions(id_tokens, tar_feat) if self.geometric_prior \
            and nm else None
        id_pos = self.id_positional_prior(ref_tokens[:nm], image_feat, image_pe, grid, geometry)
        output, query_embed = self.initial_queries(ref_tokens, nm, id_pos)
        if id_only:
            # The self-attention mask keeps ID queries apart from the others, which therefore
            # cannot change them: decode with zero instance and semantic queries.
            output = [output[0], output[1][:0], output[2][:0]]
            query_embed = [query_embed[0], query_embed[1][:0], query_embed[2][:0]]
        if lazy_aux is None:
            lazy_aux = self.fast_inference and not self.training
        predictions = self.decode_queries(output, query_embed, image_feat, image_pe,
                                          mask_features, grid, lazy_aux)
        keys = tuple(k for k in PRED_KEYS if k not in INSTANCE_KEYS) if id_only else PRED_KEYS
        result = {"ref_id_labels": id_labels[None], "ref_sem_labels": sem_labels[None]}
        result.update({k: v for k, v in predictions[-1].items()
                       if not (id_only and k in INSTANCE_KEYS)})
        aux = [{k: p[k] for k in keys} if isinstance(p, dict) else p for p in predictions[:-1]]
        result["aux_outputs"] = LazyAuxOutputs(self, aux, mask_features, grid, keys) \
            if lazy_aux else aux
        return result

    def geometric_instructions(self, id_tokens: torch.Tensor, tar_feat: torch.Tensor):
        """SegIC's geometric instructions of every ID token (MODEL.SINE.GEOMETRIC_PRIOR), with
        SegIC's own functions (SegIC spec §1.3): the cosine similarity of the target features,
        bilinearly up-sampled 4x, to the token's mask-pooled prototype (the pre-fusion ID
        token), i.e. the correspondence-propagated coarse mask, and its top-1 point.

        Args:
            id_tokens: (1, nm, C) pre-fusion ID tokens; tar_feat: (1, C, h, w) neck features.
        Returns:
            (coarse (1, nm, h*w) averaged back to the grid, top-1 points (nm, 2) as (row, col)
            grid cells).
        """
        from ..segic.instructions import coarse_masks, similarity_maps, top1_points

        h, w = tar_feat.shape[-2:]
        size = 4 * max(h, w)  # a square canvas, as SegIC's S/4 map (SINE pads to a square)
        feats = F.pad(tar_feat[0].float(), (0, max(h, w) - w, 0, max(h, w) - h))
        similarity = similarity_maps(feats, id_tokens[0].float()[:, None], size, 1e-8)
        coarse = coarse_masks(similarity, size)  # (nm, 1, size, size), tau = 1
        points, _ = top1_points(coarse)  # (nm, 1, 2) pixel (x, y) on the 4x canvas
        grid_coarse = F.adaptive_avg_pool2d(coarse, (max(h, w),) * 2)[:, 0, :h, :w]
        cells = torch.stack([points[:, 0, 1], points[:, 0, 0]], -1) / 4  # (row, col)
        return grid_coarse.flatten(1)[None], cells.floor().clamp(max=max(h, w) - 1)

    def id_positional_prior(self, id_tokens, image_feat, image_pe, grid, geometry=None):
        """Positional embedding of the ID queries (spec §2.6).

        Softmax(temp * Gaussian-weighted cosine similarity) over the target grid, used to
        average the grid's sine encoding.

        Args:
            id_tokens: (nm, 1, C) fused ID tokens.
            image_feat: (hw, 1, C) fused target features.
            image_pe: (hw, 1, C) sine encoding of the target grid.
            grid: (h, w).
            geometry: SegIC's (coarse mask, top-1 point) from :meth:`geometric_instructions`
                or None (official). Given, the coarse mask is added to the similarity and the
                Gaussian is centred on the top-1 point instead of the similarity's arg-max.
        Returns:
            (nm, 1, C)
        """
        q = F.normalize(id_tokens.transpose(0, 1), dim=-1)
        k = F.normalize(image_feat.transpose(0, 1), dim=-1)
        corr = q @ k.transpose(1, 2)
        if geometry is None:
            corr = self.apply_gaussian_kernel(corr, grid)
        else:
            coarse, cells = geometry
            corr = self.apply_gaussian_kernel(corr + coarse.to(corr.dtype), grid,
                                              cells.to(corr.device)[None])
        id_dist = (corr * self.temp).softmax(dim=-1)
        return (id_dist @ image_pe.transpose(0, 1)).transpose(0, 1)

    def apply_gaussian_kernel(self, corr: torch.Tensor, grid: Tuple[int, int],
                              cells: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Multiply (1, nm, h*w) correlations by a Gaussian centred on each row's argmax (or on
        ``cells`` (1, nm, 2), (row, col) per row).

        The official code assumes a square grid; rows/columns are taken from (h, w) here, which is
        the same for square grids and also correct otherwise.
        """
        h, w = grid
        if cells is None:
            center = corr.argmax(dim=-1)
            cy = torch.div(center, w, rounding_mode="floor").to(corr.dtype)[..., None, None]
            cx = (center % w).to(corr.dtype)[..., None, None]
        else:
            cy = cells[..., 0].to(corr.dtype)[..., None, None]
            cx = cells[..., 1].to(corr.dtype)[..., None, None]
        ys = torch.arange(h, device=corr.device, dtype=corr.dtype)[:, None]
        xs = torch.arange(w, device=corr.device, dtype=corr.dtype)[None, :]
        dist2 = (ys - cy) ** 2 + (xs - cx) ** 2
        gaussian = torch.exp(-dist2 / (2 * self.gaussian_sigma**2))
        return corr * gaussian.flatten(-2)

    def initial_queries(self, ref_tokens, nm, id_pos):
        """Contents and positional embeddings of the [ID, instance, semantic] queries (§3.1).

        Args:
            ref_tokens: (nm + nc, 1, C) fused ID tokens and prototypes.
            nm: number of ID tokens.
            id_pos: (nm, 1, C) ID positional prior.
        Returns:
            (output, query_embed): lists [id (nm,1,C), ins (nq,1,C), sem (nc+1,1,C)].
        """
        type_embed = self.query_grained_embed.weight
        id_q = ref_tokens[:nm] + type_embed[0]
        ins_q = (self.query_feat.weight + type_embed[1])[:, None]
        sem_q = torch.cat([ref_tokens[nm:], self.neg_class_embed.weight[:, None]]) + type_embed[2]
        query_embed = [id_pos, self.query_embed.weight[:, None], torch.zeros_like(sem_q)]
        return [id_q, ins_q, sem_q], query_embed

    def self_attention_mask(self, nm: int, num_others: int, device) -> torch.Tensor:
        """(heads, L, L) bool: ID queries see only ID queries; the others see only the others."""
        L = nm + num_others
        mask = torch.ones(L, L, dtype=torch.bool, device=device)
        mask[:nm, :nm] = False
        mask[nm:, nm:] = False
        return mask[None].repeat(self.num_heads, 1, 1)

    def decode_queries(self, output, query_embed, image_feat, image_pe, mask_features, grid,
                       lazy: bool = False):
        """Run the blocks; returns 1 + depth predictions (initial queries first).

        With ``lazy`` the heads of intermediate blocks are not run unless their mask drives
        the next cross-attention; those entries are the query states [id, ins, sem] instead
        of prediction dicts.
        """
        nm = len(output[0])
        sa_attn_mask = self.self_attention_mask(nm, len(output[1]) + len(output[2]),
                                                image_feat.device)
        prediction, ca_attn_mask = self.forward_prediction_heads(output, mask_features, grid)
        predictions = [prediction]
        # The official decoder computes a mask after every block but only uses the first.
        eager_masks = self.refresh_cross_attn_mask or not self.fast_inference
        for i, layer in enumerate(self.transformer_layers):
            ca_attn_mask = unblock_fully_masked_queries(ca_attn_mask)
            output = layer(output, query_embed, image_feat, image_pe, sa_attn_mask, ca_attn_mask)
            last = i == len(self.transformer_layers) - 1
            if lazy and not last and not self.refresh_cross_attn_mask:
                predictions.append(output)
                continue
            prediction, new_mask = self.forward_prediction_heads(
                output, mask_features, grid, with_attn_mask=eager_masks
            )
            if self.refresh_cross_attn_mask:
                ca_attn_mask = new_mask
            predictions.append(prediction)
        return predictions

    def forward_prediction_heads(self, output, mask_features, grid, with_attn_mask=True):
        """Class logits, mask logits and the cross-attention mask from the current queries.

        Args:
            output: [id (nm,1,C), ins (nq,1,C), sem (nc+1,1,C)].
            mask_features: (1, D, mh, mw).
            grid: (h, w) cross-attention grid.
            with_attn_mask: False skips the mask (returned as None).
        Returns:
            (prediction dict with the ``pred_*`` keys and ``id_hidden_states``/
            ``ins_hidden_states``, cross-attention mask (heads, nm + nq, h*w) bool)
        """
        id_out, ins_out, sem_out = (self.decoder_norm(x).transpose(0, 1) for x in output)
        id_embed = self.mask_embed(id_out)
        ins_embed = self.mask_embed(ins_out)
        id_masks = torch.einsum("bqc,bchw->bqhw", id_embed, mask_features)
        ins_masks = torch.einsum("bqc,bchw->bqhw", ins_embed, mask_features)
        attn_mask = self.cross_attention_mask(id_masks, ins_masks, grid) if with_attn_mask \
            else None
        prediction = {
            "pred_id_logits": self.id_class_embed(id_out),
            "pred_ins_logits": self.classification_logits(ins_out, sem_out),
            "pred_id_masks": id_masks,
            "pred_ins_masks": ins_masks,
            "id_hidden_states": id_embed,
            "ins_hidden_states": ins_embed,
        }
        return prediction, attn_mask

    def cross_attention_mask(self, id_masks, ins_masks, grid) -> torch.Tensor:
        """(heads, nm + nq, h*w) bool, True = blocked: mask probability < 0.5 at the grid.

        Every head gets the same mask: on the fast path the heads share one (a stride-0
        ``expand``), so the attention and :func:`unblock_fully_masked_queries` touch 1/heads
        of the official (repeated) mask.
        """
        attn_mask = F.interpolate(torch.cat([id_masks, ins_masks], dim=1), size=grid,
                                  mode="bilinear", align_corners=False)
        blocked = (attn_mask.sigmoid().flatten(2) < 0.5).detach()[:, None]  # (B, 1, Q, hw)
        per_head = (-1, self.num_heads, -1, -1)
        if self.fast_inference and blocked.shape[0] == 1:
            return blocked.expand(*per_head).flatten(0, 1)  # a view: stride 0 over heads
        return blocked.repeat(1, self.num_heads, 1, 1).flatten(0, 1)

    def classification_logits(self, ins_out: torch.Tensor, sem_out: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarity (1, nq, C) x (1, nc + 1, C) -> (1, nq, nc + 1)."""
        ins_out = F.normalize(ins_out, dim=-1)
        sem_out = F.normalize(sem_out, dim=-1)
        logit_scale = torch.clamp(self.logit_scale.exp(), max=100)
        return logit_scale * ins_out @ sem_out.transpose(1, 2)
