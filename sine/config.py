"""Config keys of sine. Every hyper-parameter of SINE and SegIC lives here exactly once.

Defaults reproduce the released model: DINOv2 ViT-L/14, 200 instance queries, 896 input.
"""
from detectron2.config import CfgNode as CN


def _register_sine() -> None:
    # Whoever builds a sine config builds a model or a dataset next: register them first
    # (``import sine`` itself stays light).
    from . import register_all

    register_all()


def add_sine_config(cfg):
    """Add the keys of sine to a detectron2 config (in place); registers sine with detectron2
    (:func:`sine.register_all`)."""
    _register_sine()
    cfg.MODEL.META_ARCHITECTURE = "SINE"
    cfg.MODEL.BACKBONE.NAME = "DINOv2Encoder"
    # detectron2 convention (0-255 scale). Equivalent to the official ToTensor + ImageNet
    # Normalize in [0, 1] space; the model normalises internally.
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

    # ---------------------------------------------------------------- frozen DINOv2 encoder
    cfg.MODEL.DINOV2 = CN()
    # Which ViT (sine/modeling/backbone/vit_builder.py; the group keeps its historical name):
    # "dinov2" hand-written DINOv2 (default); "timm_dinov2" the same DINOv2 on timm's modules
    # (same weights and features; with registers when NUM_REGISTER_TOKENS is 4); "timm_dinov3"
    # DINOv3 (PATCH_SIZE 16, RoPE, 4 storage tokens); "timm_clip" an OpenAI CLIP image tower.
    # WEIGHTS is read in that family's official checkpoint layout.
    cfg.MODEL.DINOV2.VIT = "dinov2"
    # vit_small | vit_base | vit_large | vit_giant2; EMBED_DIM/DEPTH/NUM_HEADS > 0 override it
    # (used for tiny test models).
    cfg.MODEL.DINOV2.ARCH = "vit_large"
    cfg.MODEL.DINOV2.EMBED_DIM = 0
    cfg.MODEL.DINOV2.DEPTH = 0
    cfg.MODEL.DINOV2.NUM_HEADS = 0
    cfg.MODEL.DINOV2.MLP_RATIO = 4.0
    cfg.MODEL.DINOV2.PATCH_SIZE = 14
    # Pretraining resolution: the stored pos-embed grid is IMG_SIZE / PATCH_SIZE (= 37).
    cfg.MODEL.DINOV2.IMG_SIZE = 518
    cfg.MODEL.DINOV2.INIT_VALUES = 1e-5  # LayerScale init
    cfg.MODEL.DINOV2.FFN_LAYER = "mlp"  # "swiglufused" for the official ViT-g weights
    # Path of an official DINOv2 checkpoint (e.g. dinov2_vitl14_pretrain.pth); "" = random init.
    cfg.MODEL.DINOV2.WEIGHTS = ""
    # Offset of the official bicubic pos-embed interpolation (scale_factor=(g + 0.1) / 37).
    cfg.MODEL.DINOV2.INTERPOLATE_OFFSET = 0.1
    cfg.MODEL.DINOV2.INTERPOLATE_ANTIALIAS = False  # antialias of that interpolation (both: off)
    # Features after the final LayerNorm (SegIC's x_norm_patchtokens) instead of before it
    # (SINE's x_prenorm).
    cfg.MODEL.DINOV2.OUTPUT_NORM = False
    # Register (DINOv3: storage) tokens; -1 = the family's default (DINOv2 and CLIP 0, DINOv3 4).
    # The official DINOv2 *_reg4 models use 4 with INTERPOLATE_OFFSET 0, INTERPOLATE_ANTIALIAS True.
    cfg.MODEL.DINOV2.NUM_REGISTER_TOKENS = -1
    # SINE keeps DINOv2 frozen (excluded from the optimizer, always in eval mode). False trains
    # it: only for the CPU demo, whose small ViT starts from random weights.
    cfg.MODEL.DINOV2.FROZEN = True

    # ---------------------------------------------------------------- SINE neck/fusion/decoder
    cfg.MODEL.SINE = CN()
    cfg.MODEL.SINE.FEAT_CHANS = 256  # neck and decoder width
    cfg.MODEL.SINE.NECK_USE_FC = False  # official --image_enc_use_fc: a 1x1 conv only
    # Registered name in sine.modeling.transformer_decoder.TRANSFORMER_DECODER_REGISTRY.
    cfg.MODEL.SINE.TRANSFORMER_DECODER_NAME = "MFormerDecoder"
    cfg.MODEL.SINE.NUM_QUERIES = 200  # learnable instance queries (released model)
    cfg.MODEL.SINE.DEC_LAYERS = 6  # M-Former blocks
    cfg.MODEL.SINE.NHEADS = 8
    cfg.MODEL.SINE.DIM_FEEDFORWARD = 2048  # FFN hidden size (fusion and decoder)
    cfg.MODEL.SINE.MASK_DIM = 256  # mask-embedding MLP output; must equal FEAT_CHANS
    cfg.MODEL.SINE.FUSION_LAYERS = 1  # In-Context Fusion depth
    cfg.MODEL.SINE.PRE_NORM = True  # decoder blocks (fusion is always post-norm)
    cfg.MODEL.SINE.TEMP_INIT = 30.0  # learnable softmax temperature of the ID positional prior
    cfg.MODEL.SINE.GAUSSIAN_SIGMA = 10.0  # grid cells, ID positional prior
    # SegIC's correspondence prior in SINE's ID positional prior (off = official SINE): the
    # coarse mask (cosine of the 4x up-sampled target features to each ID token's prototype) is
    # added to the ID-token/target similarity and its top-1 point centres the Gaussian.
    cfg.MODEL.SINE.GEOMETRIC_PRIOR = False
    # Official: the cross-attention mask comes from the initial prediction and is reused by every
    # block. True refreshes it per block (Mask2Former behaviour); breaks official parity.
    cfg.MODEL.SINE.REFRESH_CROSS_ATTN_MASK = False
    # How reference masks become ID tokens / prototypes (spec §2.4): "instance" (training and
    # FSS), "vos", "fsod"; see sine/modeling/transformer_decoder/reference_pooling.py.
    cfg.MODEL.SINE.REFERENCE_POOLING = "instance"
    # Optimised inference (fused SDPA attention, cached pos-embed, lazily computed auxiliary
    # predictions, post-processing of only the returned masks); False runs the official
    # computation (unfused attention, no caching) with equal outputs, e.g. as a benchmark baseline.
    cfg.MODEL.SINE.FAST_INFERENCE = True
    cfg.MODEL.SINE.AUTOCAST_BF16 = False  # bf16 autocast of encoder and decoder; CUDA only
    cfg.MODEL.SINE.COMPILE = False  # torch.compile the DINOv2 ViT (first call compiles)

    # Loss / matching
    cfg.MODEL.SINE.DEEP_SUPERVISION = True
    cfg.MODEL.SINE.CLASS_WEIGHT = 2.0
    cfg.MODEL.SINE.MASK_WEIGHT = 5.0
    cfg.MODEL.SINE.DICE_WEIGHT = 5.0
    cfg.MODEL.SINE.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.SINE.TRAIN_NUM_POINTS = 12544
    cfg.MODEL.SINE.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.SINE.IMPORTANCE_SAMPLE_RATIO = 0.75

    # Every image (reference and target) is zero-padded (in normalised space) bottom/right to
    # this square size, as the official pipelines do (896 train/FSS/FSOD, 1036 VOS). Images
    # larger than it are padded to the next multiple of the patch size instead.
    cfg.MODEL.SINE.PAD_SIZE = 896

    cfg.MODEL.SINE.TEST = CN()
    cfg.MODEL.SINE.TEST.SEMANTIC_ON = True
    cfg.MODEL.SINE.TEST.INSTANCE_ON = True
    cfg.MODEL.SINE.TEST.IDENTITY_ON = True
    cfg.MODEL.SINE.TEST.TOPK_PER_IMAGE = 100
    cfg.MODEL.SINE.TEST.INSTANCE_SCORE_THRESH = 0.0  # FSOD protocol (Base-SINE.yaml)
    cfg.MODEL.SINE.TEST.ID_SCORE_THRESH = -1e9  # VOS protocol keeps every ID query
    cfg.MODEL.SINE.TEST.SEM_SEG_THRESH = 0.7  # FSS binarisation of the semantic map

    # ---------------------------------------------------------------- VOS memory (spec §7.3)
    cfg.MODEL.SINE.VOS = CN()
    cfg.MODEL.SINE.VOS.MEMORY_LEN = 6  # frames per object, pinned ones included (D16: 2)
    cfg.MODEL.SINE.VOS.FIX_FIRST_FRAME = True  # keep the object's ground-truth frame forever
    cfg.MODEL.SINE.VOS.FIX_LAST_FRAME = False  # also pin the most recent frame
    cfg.MODEL.SINE.VOS.DECAY_TYPE = "linear"  # linear | exp | cos | ellipse | constant
    cfg.MODEL.SINE.VOS.DECAY_RATIO = 20.0  # frame distance where linear decay reaches 0
    # Official --img-size / --pad-size (1036 / 1036, configs/vos): each frame's longer side is
    # resized to IMAGE_SIZE, then zero-padded to a PAD_SIZE square (a patch multiple >=
    # IMAGE_SIZE). 0: PAD_SIZE = MODEL.SINE.PAD_SIZE, IMAGE_SIZE = PAD_SIZE.
    cfg.MODEL.SINE.VOS.IMAGE_SIZE = 0
    cfg.MODEL.SINE.VOS.PAD_SIZE = 0
    cfg.MODEL.SINE.VOS.SHORT_SIDE = 518  # frames read at this shorter side; masks predicted there
    # Antialias the shorter-side resize of frames when shrinking (e.g. 720p YouTube-VOS). False
    # is official: the pinned torchvision 0.15 does not antialias tensors (>= 0.17 does).
    cfg.MODEL.SINE.VOS.ANTIALIAS = False
    # Memory frames keep their cached neck features (each frame is encoded once). False
    # re-encodes every memory frame from its stored image at every step (official, slower).
    cfg.MODEL.SINE.VOS.CACHE_FEATURES = True
    cfg.MODEL.SINE.VOS.AMP = True  # fp16 autocast on CUDA, as the official eval; never on CPU
    cfg.MODEL.SINE.VOS.ENCODE_CHUNK = 4  # memory frames per encoder batch when re-encoding
    # Video predictor policies (sine/engine/vos_policies.py), model-independent:
    # memory "ranked" (SINE: the keys above) | "first_latest" (SegIC: first-frame ground truth +
    # latest prediction); merge "highest_id" (SINE) | "max_sigmoid" (SegIC's logit merge).
    cfg.MODEL.SINE.VOS.MEMORY_POLICY = "ranked"
    cfg.MODEL.SINE.VOS.MERGE = "highest_id"
    # Flip test-time augmentation: every frame is also segmented mirrored (same memory); per
    # object the higher-scoring of the two predictions (mirrored one flipped back) is kept.
    # Not used by the official scripts.
    cfg.MODEL.SINE.VOS.FLIP_TTA = False

    # ---------------------------------------------------------------- VOS benchmark reading
    cfg.TEST.VOS = CN()
    # YouTube-VOS: segment every frame (all_frames/<split>_all_frames), results still written for
    # the annotated (every 5th) frames only. Officially off: only annotated frames are processed.
    cfg.TEST.VOS.ALL_FRAMES = False

    # ---------------------------------------------------------------- LoRA transfer (§C.1)
    # META_ARCHITECTURE "SINETransfer": a trained in-context model (BASE_ARCHITECTURE, weights
    # BASE_WEIGHTS) adapted to a fixed class set with LoRA on the frozen ViT and one learned
    # prototype per class that replaces the reference-derived semantic tokens. Only the LoRA
    # weights and the prototypes are trained; they are saved together as the adapter file.
    cfg.MODEL.TRANSFER = CN()
    cfg.MODEL.TRANSFER.BASE_ARCHITECTURE = "SINE"
    cfg.MODEL.TRANSFER.BASE_WEIGHTS = ""  # in-context checkpoint, loaded before LoRA is added
    cfg.MODEL.TRANSFER.ADAPTER_WEIGHTS = ""  # adapter file (LoRA + prototypes) to load on top
    cfg.MODEL.TRANSFER.NUM_CLASSES = 0  # the dataset's classes (contiguous ids 0..N-1)
    # Contiguous ids of the thing classes (panoptic output); empty = read from the metadata of
    # the first dataset of DATASETS.TEST / TRAIN that has thing_dataset_id_to_contiguous_id.
    cfg.MODEL.TRANSFER.THING_CLASSES = []
    # "reference": each prototype starts as the mask-pooled features of the class in up to
    # PROTOTYPE_INIT_IMAGES training images (what the in-context model would use); "random".
    cfg.MODEL.TRANSFER.PROTOTYPE_INIT = "reference"
    cfg.MODEL.TRANSFER.PROTOTYPE_INIT_IMAGES = 16
    # Outputs the model returns in evaluation: "sem_seg" and/or "panoptic_seg".
    cfg.MODEL.TRANSFER.OUTPUTS = ["sem_seg", "panoptic_seg"]
    # Fold LoRA into the ViT weights in eval mode (no extra cost at inference).
    cfg.MODEL.TRANSFER.MERGE_FOR_INFERENCE = True
    cfg.MODEL.TRANSFER.LORA = CN()
    cfg.MODEL.TRANSFER.LORA.RANK = 32  # paper
    cfg.MODEL.TRANSFER.LORA.ALPHA = 32.0
    cfg.MODEL.TRANSFER.LORA.DROPOUT = 0.0
    cfg.MODEL.TRANSFER.LORA.TARGET_MODULES = ["qkv"]  # DINOv2 attention; add "proj" for all
    # Panoptic combination of instances (things) and sem_seg (stuff), see
    # sine/modeling/panoptic_inference.py.
    cfg.MODEL.TRANSFER.PANOPTIC = CN()
    cfg.MODEL.TRANSFER.PANOPTIC.INSTANCE_SCORE_THRESH = 0.5
    cfg.MODEL.TRANSFER.PANOPTIC.OVERLAP_THRESH = 0.8
    cfg.MODEL.TRANSFER.PANOPTIC.STUFF_AREA_THRESH = 0

    # ---------------------------------------------------------------- data
    cfg.INPUT.IMAGE_SIZE = 896  # LSJ target size
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.INPUT.FORMAT = "RGB"
    # "in_context_pair" (reference/target pairs) | "transfer" (target alone, LoRA transfer)
    cfg.INPUT.DATASET_MAPPER_NAME = "in_context_pair"
    # P(reference and target are two augmented views of the same image) -> ID supervision.
    cfg.INPUT.CROP_RATIO = 0.5
    # On an unreadable training image: False raises (naming the file), True logs and redraws.
    cfg.INPUT.SKIP_BAD_IMAGES = False
    # Relative sampling weight of each entry of DATASETS.TRAIN (empty = uniform).
    cfg.DATASETS.TRAIN_SAMPLING_WEIGHTS = []
    # How the pair mapper draws pairs: "sine" (ID / cross-image pairs, all instances) or
    # "segic" (per-dataset sample kinds below; sine/data/dataset_mappers/in_context_pair_mapper).
    cfg.INPUT.PAIR_POLICY = "sine"
    # "segic" policy: the kind of each DATASETS.TRAIN entry, "semantic" (one class, a different
    # reference image), "instance" (two views of one image) or "box" (instance pairs on box
    # masks, projection loss); empty = all "semantic".
    cfg.DATASETS.TRAIN_SAMPLE_KINDS = []

    # ---------------------------------------------------------------- few-shot semantic eval
    cfg.TEST.FSS = CN()
    # Every query/support image is resized to IMAGE_SIZE x IMAGE_SIZE (official: 518, then
    # padded to MODEL.SINE.PAD_SIZE); the metric is computed at that size.
    cfg.TEST.FSS.IMAGE_SIZE = 518
    cfg.TEST.FSS.SHOTS = 1
    cfg.TEST.FSS.SEED = 0
    # Episode draws (sine/data/fss_episodes.py): "official" reproduces the official episode
    # sequences (spec §7.1; legacy numpy generator, seed 0 = the paper's episodes); "balanced"
    # draws by the same rules from np.random.default_rng and skips classes with one image.
    cfg.TEST.FSS.SAMPLER = "official"
    # Give every support mask its class name ("class_names" of the reference): SegIC's text
    # prompt "a photo of a {name}" (official one-shot evaluation); SINE does not read it.
    cfg.TEST.FSS.CLASS_NAMES = True

    # ---------------------------------------------------------------- few-shot instance eval
    cfg.TEST.FSOD = CN()
    cfg.TEST.FSOD.BENCHMARK = "coco"  # coco (COCO-NOVEL) | voc (COCO2VOC) | synthetic
    cfg.TEST.FSOD.SHOTS = 1  # K reference annotations per novel class (TFA seed files)
    cfg.TEST.FSOD.SEEDS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # TFA reference draws; mean reported
    cfg.TEST.FSOD.REF_BATCH_SIZE = 4  # reference images per encoder batch (official preprocess)

    # ---------------------------------------------------------------- solver (spec §6.3)
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.BETAS = (0.9, 0.999)
    cfg.SOLVER.EPS = 1e-8
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupLinearDecayLR"
    cfg.SOLVER.WARMUP_ITERS = 100
    cfg.SOLVER.WARMUP_FACTOR = 0.0
    cfg.SOLVER.WARMUP_METHOD = "linear"
    cfg.SOLVER.MAX_ITER = 50000
    cfg.SOLVER.IMS_PER_BATCH = 64
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0


def add_segic_config(cfg):
    """Add the keys of the SegIC model (``MODEL.SEGIC.*``) to a detectron2 config (in place).

    Defaults are the released recipe (SegIC spec §1.14): DINOv2-L/14 at 896 px (64 x 64 grid),
    SAM-style decoder of width 256 with 2 two-way blocks, 8 heads, MLP 2048, CLIP-L text on.
    The DINOv2 keys are shared with SINE (MODEL.DINOV2); SegIC reads the final-norm tokens
    (MODEL.DINOV2.OUTPUT_NORM True, set by configs/segic/Base-SegIC.yaml). Registers sine with
    detectron2 (:func:`sine.register_all`).
    """
    _register_sine()
    cfg.MODEL.SEGIC = CN()
    cfg.MODEL.SEGIC.IMAGE_SIZE = 896  # S: every image is resized (long side) and padded to S x S
    cfg.MODEL.SEGIC.WIDTH = 256  # D: neck, prompt and decoder width
    cfg.MODEL.SEGIC.DEC_LAYERS = 2  # two-way blocks
    cfg.MODEL.SEGIC.NHEADS = 8
    cfg.MODEL.SEGIC.MLP_DIM = 2048
    cfg.MODEL.SEGIC.NUM_MULTIMASK_OUTPUTS = 3  # SAM's extra mask tokens (SegIC reads token 0)
    cfg.MODEL.SEGIC.MASK_IN_CHANS = 16  # hidden channels of the dense-prompt stack
    # Conv strides of the dense-prompt stack, S -> g (product = patch size: 7 x 2 for /14).
    cfg.MODEL.SEGIC.MASK_DOWN_STRIDES = [7, 2]
    cfg.MODEL.SEGIC.TAU = 1.0  # temperature dividing the coarse mask (official tau_simm)
    cfg.MODEL.SEGIC.SIMILARITY_EPS = 1e-8  # norm clamp of the cosine similarity (one-shot/train)
    # Every entity's query also sees the other entities' visual tokens as negatives (inference).
    cfg.MODEL.SEGIC.CROSS_ENTITY_PROMPT = True

    # Meta instructions: the frozen CLIP ViT-L/14 text tower.
    cfg.MODEL.SEGIC.USE_TEXT = True
    cfg.MODEL.SEGIC.TEXT_ENCODER = CN()
    # Local Hugging Face directory of the CLIP text weights (openai/clip-vit-large-patch14).
    cfg.MODEL.SEGIC.TEXT_ENCODER.WEIGHTS = ""
    # "" = the CLIP BPE file shipped in open-clip-torch; or a .txt.gz BPE file / HF directory.
    cfg.MODEL.SEGIC.TEXT_ENCODER.TOKENIZER = ""
    cfg.MODEL.SEGIC.TEXT_ENCODER.HIDDEN_SIZE = 768  # T_d, input of prompt_proj
    # With USE_TEXT False: a file holding the (T_d,) pooled CLIP embedding of the empty prompt
    # "" (tools/convert_official_checkpoint.py --clip-text-dir writes it). The text slot is then
    # filled exactly as the official --no_text_eval; "" drops the slot instead.
    cfg.MODEL.SEGIC.TEXT_ENCODER.EMPTY_PROMPT_EMBEDDING = ""
    cfg.MODEL.SEGIC.CLASS_PROMPT = "a photo of a {}"  # entities with a class name
    cfg.MODEL.SEGIC.INSTANCE_PROMPT = "please segment the instances"  # entities without one
    # Class id -> name, for callers that pass class ids but no names (predictor, suites); an
    # entity whose id is not listed gets the instance prompt.
    cfg.MODEL.SEGIC.CLASS_NAMES = []

    # Training (spec §1.7-§1.10).
    cfg.MODEL.SEGIC.TRAIN = CN()
    cfg.MODEL.SEGIC.TRAIN.TEXT_KEEP_RATIO = 0.75  # P(class-name prompt) per semantic image
    cfg.MODEL.SEGIC.TRAIN.BOX_PROMPT_PROB = 0.5  # P(target GT box as a box prompt) per image/pass
    cfg.MODEL.SEGIC.TRAIN.CROSS_ENTITY_PROB = 0.5  # P(cross-entity visual tokens) per image/pass
    cfg.MODEL.SEGIC.TRAIN.REVERSE_CONTEXT = True  # second pass with the images swapped
    cfg.MODEL.SEGIC.TRAIN.NUM_POINTS = 12544
    cfg.MODEL.SEGIC.TRAIN.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.SEGIC.TRAIN.IMPORTANCE_SAMPLE_RATIO = 0.75

    # Instance-pair views of the "segic" pair policy (spec §1.10, §1.14); semantic pairs use the
    # LSJ keys above (INPUT.MIN_SCALE / MAX_SCALE / RANDOM_FLIP).
    cfg.INPUT.SEGIC = CN()
    cfg.INPUT.SEGIC.CROP_SCALE = (0.3, 1.0)  # RandomResizedCrop area range (bicubic)
    cfg.INPUT.SEGIC.COLOR_JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    cfg.INPUT.SEGIC.COLOR_JITTER_PROB = 0.2
    cfg.INPUT.SEGIC.FLIP_PROB = 0.1  # horizontal
    cfg.INPUT.SEGIC.MIN_INSTANCE_AREA = 100  # pixels an instance needs in both views
    cfg.INPUT.SEGIC.MAX_INSTANCES = 19  # instances per pair ~ randint(0, 19), 0 -> 1

    # VOS (spec §1.11): memory entries used per frame and cross-object negative points.
    cfg.MODEL.SEGIC.VOS = CN()
    cfg.MODEL.SEGIC.VOS.MEMORY_PICKS = 2  # linspace(0, len - 1, 2): first GT + latest prediction
    cfg.MODEL.SEGIC.VOS.NEGATIVE_POINTS = True
    cfg.MODEL.SEGIC.VOS.SIMILARITY_EPS = 1e-4


def get_default_cfg():
    """detectron2's defaults plus the keys of both models (SINE and SegIC), nothing merged."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_sine_config(cfg)
    add_segic_config(cfg)
    return cfg


def get_sine_cfg(config_file=None, opts=()):
    """A detectron2 config with the keys of both models (SINE and SegIC), ``config_file`` and
    ``KEY VALUE`` ``opts`` merged.

    Not frozen, so scripts can still adjust it.
    """
    cfg = get_default_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg
