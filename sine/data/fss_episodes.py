"""Few-shot semantic segmentation episodes: sampling, registration and the episode mapper.

An episode is one query image and K support images of one class (spec §7.1)::

    {"episode_id": int, "class_id": int, "query": record, "supports": [record, ...]}

Episodes are drawn once, up front, from a seed, so they do not depend on the number of workers or
processes, by one of two samplers (``TEST.FSS.SAMPLER``):

* ``"official"`` (default, the paper's episodes): the official draw order of spec §7.1 with numpy's
  legacy global generator (:class:`LegacyDraws`); the benchmark readers reproduce every official
  episode for seed 0;
* ``"balanced"``: the same sampling rules drawn from ``np.random.default_rng(seed)``, skipping
  classes that cannot form an episode (e.g. the synthetic dataset's rare classes).
 A record names its image (``file_name``, optional ``height``/``width``) and where the
class mask comes from, one of:

* ``annotations``: detectron2 instance annotations; the mask is the union of the non-crowd
  instances of the episode's class (e.g. the synthetic dataset);
* ``sem_seg_file_name`` + ``sem_seg_encoding``: a PNG label map. Encoding ``"class+1"`` (HSNet's
  COCO-20i and PASCAL-5i masks): foreground = pixels whose value is ``class_id + 1``;
  ``"binary"`` (FSS-1000): foreground = grayscale value >= 128. With
  ``sem_seg_ignore_value`` (PASCAL-5i: 255, the object boundaries) those pixels are ignored;
* ``segmentations``: COCO segmentations (polygons or RLE) of the class's instances in this
  image (LVIS-92i); the mask is their union.

Optionally ``crop_box`` (x0, y0, x1, y1 pixels, exclusive end): image and mask are cropped to it
before anything else (PASCAL-Part: Matcher's crop to the object's bounding box).
"""
import copy
import logging

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import Instances
from detectron2.structures.masks import polygons_to_bitmask
from PIL import Image

from .pair_index import record_categories

logger = logging.getLogger(__name__)

__all__ = [
    "EPISODE_SAMPLERS",
    "LegacyDraws",
    "official_class_episodes",
    "check_sampler",
    "episode_summary",
    "dump_episodes",
    "sample_fss_episodes",
    "draw_episodes",
    "name_episodes",
    "class_uniform_picker",
    "draw_supports",
    "make_episode",
    "register_fss_episodes",
    "register_episode_dataset",
    "set_fss_class_ids",
    "register_synthetic_fss_episodes",
    "class_mask",
    "class_target",
    "FSSEpisodeMapper",
]

SEM_SEG_ENCODINGS = ("class+1", "binary")
EPISODE_SAMPLERS = ("official", "balanced")
# Episodes per synthetic split registered at import (the CLI can re-register other counts).
SYNTHETIC_FSS_EPISODES = 200


def check_sampler(sampler):
    if sampler not in EPISODE_SAMPLERS:
        raise ValueError(f"unknown episode sampler {sampler!r}; choose one of {EPISODE_SAMPLERS} "
                         "(TEST.FSS.SAMPLER)")
    return sampler


class LegacyDraws:
    """The official episode draws (spec §7.1): numpy's legacy MT19937 seeded as the official
    ``fix_randseed(seed)`` seeds the global generator, consumed in the official call order.

    A separate ``RandomState`` gives the same numbers as the global one without touching it.
    """

    def __init__(self, seed):
        self._rng = np.random.RandomState(seed)

    def draw(self, population):
        """One element, as ``np.random.choice(population, 1, replace=False)[0]``: a full
        permutation of ``len(population)`` is consumed per draw."""
        if len(population) == 0:
            raise ValueError("cannot draw from an empty population")
        return population[self._rng.permutation(len(population))[0]]

    def supports(self, population, query, shots):
        """Official supports: repeat ``draw(population)`` (query included), keep draws that
        differ from ``query``, until ``shots`` are kept; supports may repeat each other."""
        if all(p == query for p in population):
            raise ValueError(
                f"no support candidate other than the query {query!r}: the official sampler "
                "would loop forever"
            )
        kept = []
        while len(kept) < shots:
            s = self.draw(population)
            if s != query:
                kept.append(s)
        return kept


def official_class_episodes(num_episodes, class_ids, images_of, shots, seed, record_of=None,
                            where="dataset"):
    """Episodes by the official COCO-20i rule (spec §7.1), from :class:`LegacyDraws`.

    Per episode: ``c = draw(class_ids)`` (every fold class), ``q = draw(images_of[c])``,
    ``supports(images_of[c], q)``. A class with fewer than two images would make the official
    sampler loop forever: it raises here instead, naming the classes.
    """
    record_of = record_of or (lambda item, class_id: item)
    few = {c: len(images_of.get(c, [])) for c in class_ids if len(images_of.get(c, [])) < 2}
    if few:
        raise ValueError(
            f"{where}: classes {sorted(few)} have fewer than 2 images ({few}); the official "
            "sampler needs 2 or more per fold class (TEST.FSS.SAMPLER balanced skips them)"
        )
    draws = LegacyDraws(seed)
    episodes = []
    for e in range(num_episodes):
        c = draws.draw(list(class_ids))
        q = draws.draw(images_of[c])
        supports = draws.supports(images_of[c], q, shots)
        episodes.append(make_episode(e, c, record_of(q, c), [record_of(s, c) for s in supports]))
    return episodes


def episode_summary(episode):
    """JSON-able ``{"episode_id", "class_id", "query", "supports"}`` with image file names."""
    return {"episode_id": episode["episode_id"], "class_id": episode["class_id"],
            "query": episode["query"]["file_name"],
            "supports": [s["file_name"] for s in episode["supports"]]}


def dump_episodes(datasets, path):
    """Write the episodes of registered FSS datasets to ``path`` (JSON, atomically):
    ``{dataset name: [{"episode_id", "class_id", "query", "supports"}, ...]}`` (file names)."""
    from sine.utils.io import atomic_write_json

    atomic_write_json(path, {name: [episode_summary(e) for e in DatasetCatalog.get(name)]
                             for name in datasets})


def draw_supports(rng, candidates, query, shots):
    """``shots`` supports drawn one at a time, uniformly among ``candidates`` other than ``query``.

    As in the official samplers only "support != query" is enforced, so supports may repeat.
    """
    others = [c for c in candidates if c != query]
    if not others:
        raise ValueError(f"no support candidate other than the query {query!r}")
    return [others[rng.integers(len(others))] for _ in range(shots)]


def make_episode(episode_id, class_id, query, supports):
    return {"episode_id": int(episode_id), "class_id": int(class_id), "query": query,
            "supports": list(supports)}


def draw_episodes(num_episodes, pick_query, candidates_of, shots, seed, record_of=None):
    """Draw all episodes up front from ``np.random.default_rng(seed)``.

    Args:
        pick_query: ``(episode_id, rng) -> (class_id, query item)``.
        candidates_of: class id -> support candidates (items); supports are drawn with
            :func:`draw_supports` (uniform, one at a time, != query).
        record_of: ``(item, class_id) -> record``; default: items are records.
    Returns:
        list[dict] episodes (see the module docstring).
    """
    record_of = record_of or (lambda item, class_id: item)
    rng = np.random.default_rng(seed)
    episodes = []
    for e in range(num_episodes):
        c, query = pick_query(e, rng)
        supports = draw_supports(rng, candidates_of[c], query, shots)
        episodes.append(make_episode(e, c, record_of(query, c),
                                     [record_of(s, c) for s in supports]))
    return episodes


def name_episodes(episodes, names):
    """Set every episode's "class_name" from ``names`` (class id -> name: a list or dict; None
    leaves the episodes unnamed). Returns ``episodes``."""
    if names is not None:
        for e in episodes:
            c = e["class_id"]
            known = c in names if isinstance(names, dict) else 0 <= c < len(names)
            if known:
                e["class_name"] = names[c]
    return episodes


def class_uniform_picker(images_of):
    """``pick_query`` drawing a class uniformly among those with >= 2 images, then its query
    uniformly among the class's images (COCO-20i, and the synthetic episodes)."""
    usable = [c for c in sorted(images_of) if len(images_of[c]) >= 2]
    if not usable:
        raise ValueError(
            f"no class of {sorted(images_of)} occurs in two or more images: cannot build episodes"
        )

    def pick(e, rng):
        c = usable[rng.integers(len(usable))]
        return c, images_of[c][rng.integers(len(images_of[c]))]

    return pick


def sample_fss_episodes(records, class_ids, num_episodes, shots, seed, sampler="balanced"):
    """Draw ``num_episodes`` episodes over ``class_ids`` from detectron2 instance records.

    ``"balanced"``: per episode, a class uniformly among the classes present in at least two
    images, a query uniformly among that class's images, then ``shots`` supports one at a time
    uniformly among the other images (supports may repeat each other).
    ``"official"``: the COCO-20i rule (:func:`official_class_episodes`) over every class.

    Returns:
        list[dict]: ``{"episode_id", "class_id", "query": record, "supports": [record, ...]}``.
    """
    class_ids = set(class_ids)
    images_of = {c: [] for c in sorted(class_ids)}
    for i, record in enumerate(records):
        for c in record_categories(record) & class_ids:
            images_of[c].append(i)
    if check_sampler(sampler) == "official":
        return official_class_episodes(num_episodes, sorted(class_ids), images_of, shots, seed,
                                       record_of=lambda i, c: records[i])
    return draw_episodes(num_episodes, class_uniform_picker(images_of), images_of, shots, seed,
                         record_of=lambda i, c: records[i])


def _unregister(name):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_episode_dataset(name, load_episodes, class_ids, shots, replace=False, **metadata):
    """Register ``load_episodes() -> list[episode]`` as the FSS dataset ``name``.

    Metadata: ``evaluator_type="fss"``, ``fss_class_ids`` (the fold's classes, all of which the
    mIoU averages over, as officially), ``shots``, ``ignore_label=255`` and ``metadata``.
    ``class_ids=None``: the classes are only known from the data; ``load_episodes`` must then
    call :func:`set_fss_class_ids`. ``replace`` drops an earlier registration of ``name``.
    """
    if replace:
        _unregister(name)
    DatasetCatalog.register(name, load_episodes)
    MetadataCatalog.get(name).set(evaluator_type="fss", shots=int(shots), ignore_label=255,
                                  **metadata)
    if class_ids is not None:
        set_fss_class_ids(name, class_ids)


def set_fss_class_ids(name, class_ids):
    """Record the fold's classes of dataset ``name`` (metadata ``fss_class_ids``)."""
    class_ids = [int(c) for c in class_ids]
    meta = MetadataCatalog.get(name)
    if meta.get("fss_class_ids", None) != class_ids:
        if hasattr(meta, "fss_class_ids"):
            del meta.fss_class_ids
        meta.fss_class_ids = class_ids


def register_fss_episodes(name, source, class_ids, num_episodes, shots, seed, replace=False,
                          sampler="balanced"):
    """Register episodes drawn from registered instance dataset ``source`` as ``name``.

    ``class_ids`` are the contiguous ids of ``source`` that form the fold; the metric averages over
    all of them (``fss_class_ids``), as the official protocol does.
    """
    class_ids = [int(c) for c in class_ids]

    def load():
        episodes = sample_fss_episodes(DatasetCatalog.get(source), class_ids, num_episodes, shots,
                                       seed, sampler)
        return name_episodes(episodes, MetadataCatalog.get(source).get("thing_classes", None))

    register_episode_dataset(name, load, class_ids, shots, replace=replace,
                             source_dataset=source, num_episodes=int(num_episodes), seed=int(seed),
                             sampler=check_sampler(sampler))


def register_synthetic_fss_episodes(num_episodes=SYNTHETIC_FSS_EPISODES, seed=0, shots=(1, 5),
                                    sampler="balanced"):
    """Register ``synthetic_fss_novel_{K}shot``: episodes of the NOVEL classes of ``synthetic_val``
    (``sampler`` "balanced" by default: a rare synthetic class may be in a single image).

    Returns the registered names (earlier registrations of them are replaced).
    """
    from .synthetic import get_synthetic_metadata

    novel = get_synthetic_metadata()["novel_contiguous_ids"]
    names = []
    for k in shots:
        name = f"synthetic_fss_novel_{k}shot"
        register_fss_episodes(name, "synthetic_val", novel, num_episodes, k, seed, replace=True,
                              sampler=sampler)
        MetadataCatalog.get(name).set(benchmark="synthetic", fold=0)
        names.append(name)
    return names


# ----------------------------------------------------------------------------- class masks
def _segmentation_to_mask(segm, hw):
    """One COCO segmentation (polygon list, RLE dict or array) -> bool (H, W)."""
    import pycocotools.mask as mask_util

    if isinstance(segm, list):
        return polygons_to_bitmask([np.asarray(p, dtype=np.float64) for p in segm], *hw)
    if isinstance(segm, dict):
        if isinstance(segm["counts"], list):  # uncompressed RLE
            segm = mask_util.frPyObjects(segm, *segm["size"])
        return mask_util.decode(segm).astype(bool)
    mask = np.asarray(segm)
    if mask.ndim != 2:
        raise ValueError(f"a mask segmentation must be 2-D, got shape {mask.shape}")
    return mask.astype(bool)


def _png_target(record, class_id, ignore_label):
    encoding = record.get("sem_seg_encoding")
    if encoding not in SEM_SEG_ENCODINGS:
        raise ValueError(
            f"{record['sem_seg_file_name']}: sem_seg_encoding must be one of {SEM_SEG_ENCODINGS}, "
            f"got {encoding!r}"
        )
    with Image.open(record["sem_seg_file_name"]) as png:
        if encoding == "binary":
            return (np.asarray(png.convert("L")) >= 128).astype(np.uint8)
        labels = np.asarray(png)  # raw values (palette indices for "P" images)
    if labels.ndim != 2:
        raise ValueError(f"{record['sem_seg_file_name']}: expected a 1-channel label PNG")
    target = (labels == class_id + 1).astype(np.uint8)
    ignore_value = record.get("sem_seg_ignore_value")
    if ignore_value is not None:
        target[labels == ignore_value] = ignore_label
    return target


def class_target(record, class_id, image_hw=None, ignore_label=255):
    """Ground truth of ``class_id`` in ``record``: uint8 (H, W), 1 = class, 0 = background,
    ``ignore_label`` = ignored (only for PNGs with ``sem_seg_ignore_value``).

    ``image_hw`` is the image size, needed by ``segmentations`` records without height/width.
    """
    target = _full_target(record, class_id, image_hw, ignore_label)
    return _crop(target, record.get("crop_box"))


def _crop(array, box):
    """``array[y0:y1, x0:x1]`` for a (x0, y0, x1, y1) box; the whole array for None."""
    if box is None:
        return array
    x0, y0, x1, y1 = (int(v) for v in box)
    return array[y0:y1, x0:x1]


def _full_target(record, class_id, image_hw, ignore_label):
    """:func:`class_target` before the ``crop_box`` crop."""
    if "sem_seg_file_name" in record:
        return _png_target(record, class_id, ignore_label)
    hw = (record["height"], record["width"]) if "height" in record else image_hw
    if hw is None:
        raise ValueError(f"{record.get('file_name')}: give height/width or image_hw")
    if "segmentations" in record:
        mask = np.zeros(hw, dtype=bool)
        for segm in record["segmentations"]:
            mask |= _segmentation_to_mask(segm, hw)
        return mask.astype(np.uint8)
    if "annotations" in record:
        return _annotations_mask(record, class_id, hw).astype(np.uint8)
    raise ValueError(
        f"{record.get('file_name')}: an FSS record needs 'annotations', 'segmentations' or "
        "'sem_seg_file_name' (see sine/data/fss_episodes.py)"
    )


def _annotations_mask(record, class_id, hw):
    mask = np.zeros(hw, dtype=bool)
    for a in record.get("annotations", []):
        if a["category_id"] == class_id and not a.get("iscrowd", 0):
            mask |= _segmentation_to_mask(a["segmentation"], hw)
    return mask


def class_mask(record, class_id, image_hw=None):
    """Foreground of ``class_id`` in ``record`` (union of its instances): bool (H, W)."""
    return class_target(record, class_id, image_hw) == 1


# ----------------------------------------------------------------------------- mapper
def _read_resized_image(record, size, image_format):
    """Read with PIL and resize to (size, size) bilinearly on the PIL image, as the official
    ``transforms.Resize`` does (PIL antialiases when shrinking; cv2 would not). EXIF orientation
    is not applied: the official loaders and the benchmark masks ignore it.

    Returns:
        (uint8 (3, size, size) tensor, (H, W) original size before any ``crop_box``)
    """
    with Image.open(record["file_name"]) as img:
        img = img.convert("RGB")
        hw = (img.height, img.width)
        if "height" in record and (record["height"], record["width"]) != hw:
            raise ValueError(
                f"{record['file_name']}: image is {hw[0]}x{hw[1]} but the record says "
                f"{record['height']}x{record['width']}"
            )
        if record.get("crop_box") is not None:
            img = img.crop(tuple(int(v) for v in record["crop_box"]))
        array = utils.convert_PIL_to_numpy(img.resize((size, size), Image.BILINEAR), image_format)
    return torch.as_tensor(np.ascontiguousarray(array.transpose(2, 0, 1))), hw


def _nearest_index(in_size, out_size):
    """Source index of every output pixel under torch ``nearest`` (float32 scale, floor)."""
    scale = np.float32(in_size) / np.float32(out_size)
    index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, in_size - 1)


def _resize_nearest(target, size):
    """uint8 (H, W) -> uint8 (size, size), as the official ``F.interpolate(mode="nearest")``
    (numpy indexing: the same pixels, without torch's per-op threading overhead)."""
    rows = _nearest_index(target.shape[0], size)
    cols = _nearest_index(target.shape[1], size)
    return np.ascontiguousarray(target[rows[:, None], cols[None, :]])


class FSSEpisodeMapper:
    """Episode -> model input, resizing every image to a square ``image_size`` (official FSS).

    Output: ``{"image", "height", "width", "references": [{"image", "instances"}],
    "sem_seg_gt": uint8 (S, S) 0/1 (255 = ignore), "class_id", "episode_id", "file_name"}``;
    predictions come back at ``(S, S)``, where the metric is computed, as officially.
    Every support is one reference with one mask labelled ``class_id`` (ids 0..K-1), so the
    "instance" reference pooling builds ONE prototype jointly over the K shots (spec §2.4).
    """

    @configurable
    def __init__(self, *, image_size, image_format="RGB", ignore_label=255, class_names=True):
        """``class_names``: give each support its episode's "class_name" (when the episode has
        one) as the reference's "class_names" (a text prompt for models that read it)."""
        self.image_size = image_size
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.class_names = class_names

    @classmethod
    def from_config(cls, cfg):
        return {"image_size": cfg.TEST.FSS.IMAGE_SIZE, "image_format": cfg.INPUT.FORMAT,
                "class_names": cfg.TEST.FSS.CLASS_NAMES}

    def _view(self, record, class_id):
        image, hw = _read_resized_image(record, self.image_size, self.image_format)
        target = class_target(record, class_id, hw, self.ignore_label)
        return image, target, _resize_nearest(target, self.image_size)

    def _support(self, record, class_id, episode_id):
        image, full, small = self._view(record, class_id)
        mask = small == 1
        if not mask.any():
            fg = torch.from_numpy((full == 1).astype(np.float32))[None, None]
            if not fg.any():
                raise ValueError(
                    f"episode {episode_id}: support {record['file_name']} has no pixel of class "
                    f"{class_id}; SINE needs a non-empty reference mask"
                )
            # A tiny object can vanish under nearest resizing; keep any touched pixel instead.
            size = (self.image_size, self.image_size)
            mask = (F.interpolate(fg, size=size, mode="bilinear", align_corners=False) > 0)[0, 0]
            mask = mask.numpy()
        return image, mask

    def __call__(self, episode):
        episode = copy.deepcopy(episode)
        c = episode["class_id"]
        image, _, gt = self._view(episode["query"], c)
        references = []
        for k, support in enumerate(episode["supports"]):
            ref_image, ref_mask = self._support(support, c, episode["episode_id"])
            inst = Instances(ref_mask.shape)
            inst.gt_masks = torch.from_numpy(ref_mask[None].astype(bool))
            inst.gt_classes = torch.tensor([c])
            inst.ins_ids = torch.tensor([k])
            references.append({"image": ref_image, "instances": inst})
            if self.class_names and episode.get("class_name"):
                references[-1]["class_names"] = [episode["class_name"]]
        return {
            "image": image,
            "height": self.image_size,
            "width": self.image_size,
            "references": references,
            "sem_seg_gt": gt,
            "class_id": c,
            "episode_id": episode["episode_id"],
            "file_name": episode["query"]["file_name"],
        }
