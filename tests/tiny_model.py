"""Config overrides for tiny random-weight models (SINE, SegIC) that run in milliseconds on one
CPU thread."""

TINY_MODEL_OPTS = [
    "MODEL.DEVICE", "cpu", "MODEL.DINOV2.WEIGHTS", "", "MODEL.DINOV2.EMBED_DIM", "48",
    "MODEL.DINOV2.DEPTH", "2", "MODEL.DINOV2.NUM_HEADS", "2", "MODEL.SINE.FEAT_CHANS", "32",
    "MODEL.SINE.MASK_DIM", "32", "MODEL.SINE.NHEADS", "2", "MODEL.SINE.DIM_FEEDFORWARD", "64",
    "MODEL.SINE.DEC_LAYERS", "2", "MODEL.SINE.NUM_QUERIES", "5", "MODEL.SINE.PAD_SIZE", "112",
]

#: A tiny random-weight SegIC (configs/segic/Base-SegIC.yaml + these), without text.
TINY_SEGIC_OPTS = [
    "MODEL.DEVICE", "cpu", "MODEL.DINOV2.WEIGHTS", "", "MODEL.DINOV2.EMBED_DIM", "48",
    "MODEL.DINOV2.DEPTH", "2", "MODEL.DINOV2.NUM_HEADS", "2", "MODEL.SEGIC.IMAGE_SIZE", "112",
    "MODEL.SEGIC.WIDTH", "32", "MODEL.SEGIC.NHEADS", "2", "MODEL.SEGIC.MLP_DIM", "64",
    "MODEL.SEGIC.USE_TEXT", "False",
]
