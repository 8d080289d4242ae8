"""Few-shot semantic segmentation suite: benchmark readers, episodes, K-shot pooling, the CLI."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.modeling import build_model
from detectron2.structures.masks import polygons_to_bitmask
from PIL import Image

from inference_fss import eval as fss_eval
from inference_fss.benchmarks import (
    coco20i_class_ids,
    dataset_name,
    pascal5i_class_ids,
    register_fss_benchmark,
)
from sine import add_sine_config
from sine.data.fss_episodes import FSSEpisodeMapper, class_target
from sine.modeling.transformer_decoder.reference_pooling import get_reference_pooling
from tests.tiny_model import TINY_MODEL_OPTS

TINY = list(TINY_MODEL_OPTS)
H, W = 20, 30  # benchmark images are non-square; episodes resize them to S x S
S = 16


@pytest.fixture(autouse=True)
def one_thread():
    # The tiny model is much faster on one thread on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def registered():
    """Names registered by a test; unregistered afterwards."""
    names = []
    yield names
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _register(registered, tmp_path, benchmark, fold, shots, **kwargs):
    name = register_fss_benchmark(benchmark, fold, shots, root=str(tmp_path),
                                  name=f"test_{benchmark}_{fold}_{shots}_{tmp_path.name}", **kwargs)
    registered.append(name)
    return name


def _image(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _label_map(seed, values):
    """(H, W) label map holding a random box of each value in ``values`` (0 elsewhere)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((H, W), np.uint8)
    for v in values:
        y, x = rng.integers(0, H - 8), rng.integers(0, W - 8)
        labels[y:y + 8, x:x + 8] = v
    return labels


def _official_target(labels, value, size=S):
    """Official mask handling: (labels == value) resized with torch nearest."""
    t = torch.from_numpy((labels == value).astype(np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="nearest")[0, 0].numpy().astype(np.uint8)


# ----------------------------------------------------------------------------- benchmark trees
def _make_coco(root):
    """COCO2014 with fold-0 classes 0 and 4 (4 images each) and class 8 in one image."""
    base = os.path.join(root, "COCO2014")
    classwise = {0: [], 4: [], 8: []}
    for i in range(6):
        name = f"val2014/COCO_val2014_{i:012d}.jpg"
        classes = [c for c in (0, 4) if (i + c) % 3 != 0] + ([8] if i == 0 else [])
        for c in classes:
            classwise[c].append(name)
        _image(os.path.join(base, name), i)
        _png(os.path.join(base, "annotations", name.replace(".jpg", ".png")),
             _label_map(i, [c + 1 for c in classes]))
    os.makedirs(os.path.join(base, "splits", "val"))
    with open(os.path.join(base, "splits", "val", "fold0.pkl"), "wb") as f:
        pickle.dump(classwise, f)
    return classwise


def _make_pascal(root):
    """VOC2012 fold 1 (classes 5..9): 3 images of class 5, 2 of class 7; 255 boundaries."""
    base = os.path.join(root, "VOC2012")
    lines = []
    for i, cls in enumerate([5, 5, 7, 5, 7]):
        image = f"2007_{i:06d}"
        labels = _label_map(i, [cls + 1])
        labels[0, :] = 255  # a boundary band
        _image(os.path.join(base, "JPEGImages", image + ".jpg"), i)
        _png(os.path.join(base, "SegmentationClassAug", image + ".png"), labels)
        lines.append(f"{image}__{cls + 1}")
    os.makedirs(os.path.join(base, "splits", "val"))
    with open(os.path.join(base, "splits", "val", "fold1.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def _square(x, y, size=6):
    return [[x, y, x + size, y, x + size, y + size, x, y + size]]


def _make_lvis(root):
    """lvis_val.pkl: 21 classes with 2 images, one (id 999) with 1 image, COCO 2017 images."""
    base = os.path.join(root, "LVIS")
    names = [f"val2017/{i:012d}.jpg" for i in range(3)]
    for i, n in enumerate(names):
        _image(os.path.join(base, "coco", n), i)
    annotations = {999: {names[0]: {"annotations": [{"segmentation": _square(1, 1)}]}}}
    for c in range(21):
        cat = 300 - c  # pickle order, not sorted order, defines the folds
        annotations[cat] = {
            names[c % 3]: {"annotations": [{"segmentation": _square(1, 1)},
                                           {"segmentation": _square(12, 8)}]},
            names[(c + 1) % 3]: {"annotations": [{"segmentation": _square(3, 2, 9)}]},
        }
    with open(os.path.join(base, "lvis_val.pkl"), "wb") as f:
        pickle.dump(annotations, f)
    return annotations


def _make_fss1000(root):
    base = os.path.join(root, "FSS-1000")
    for j, cat in enumerate(["bbb", "aaa"]):
        for k in range(1, 11):
            _image(os.path.join(base, "data", cat, f"{k}.jpg"), 10 * j + k)
            mask = np.repeat((_label_map(k, [1]) * 200)[..., None], 3, axis=2)  # RGB, 0/200
            _png(os.path.join(base, "data", cat, f"{k}.png"), mask)
    os.makedirs(os.path.join(base, "splits"))
    with open(os.path.join(base, "splits", "test.txt"), "w") as f:
        f.write("bbb\naaa\n")


# ----------------------------------------------------------------------------- readers
def test_coco20i_episodes_masks_and_metadata(tmp_path, registered):
    classwise = _make_coco(tmp_path)
    name = _register(registered, tmp_path, "coco", 0, 2, num_episodes=12, seed=3,
                     sampler="balanced")
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "fss" and meta.ignore_label == 255
    assert meta.fss_class_ids == coco20i_class_ids(0) == list(range(0, 80, 4))
    episodes = DatasetCatalog.get(name)
    assert [e["episode_id"] for e in episodes] == list(range(12))
    # Class 8 is in one image only: it can never have a support different from the query.
    assert {e["class_id"] for e in episodes} == {0, 4}
    mapper = FSSEpisodeMapper(image_size=S)
    for e in episodes:
        c, query = e["class_id"], e["query"]["image_id"]
        supports = [s["image_id"] for s in e["supports"]]
        assert len(supports) == 2 and query not in supports
        assert {query, *supports} <= set(classwise[c])
    e = episodes[0]
    x = mapper(e)
    labels = np.asarray(Image.open(e["query"]["sem_seg_file_name"]))
    np.testing.assert_array_equal(x["sem_seg_gt"], _official_target(labels, e["class_id"] + 1))
    assert x["image"].shape == (3, S, S) and x["image"].dtype == torch.uint8
    assert len(x["references"]) == 2
    for k, ref in enumerate(x["references"]):
        assert ref["instances"].gt_classes.tolist() == [e["class_id"]]
        assert ref["instances"].ins_ids.tolist() == [k] and ref["instances"].gt_masks.any()


def test_same_seed_same_episodes_other_seed_other_episodes(tmp_path, registered):
    _make_coco(tmp_path)
    a = _register(registered, tmp_path, "coco", 0, 1, num_episodes=30, seed=5, sampler="balanced")

    def summary(name):
        return [(e["class_id"], e["query"]["image_id"], [s["image_id"] for s in e["supports"]])
                for e in DatasetCatalog.get(name)]

    first = summary(a)
    assert summary(a) == first  # every load (every process) draws the same episodes
    b = register_fss_benchmark("coco", 0, 1, root=str(tmp_path), num_episodes=30, seed=5,
                               name=a + "_again", sampler="balanced")
    registered.append(b)
    assert summary(b) == first
    c = register_fss_benchmark("coco", 0, 1, root=str(tmp_path), num_episodes=30, seed=6,
                               name=a + "_seed6", sampler="balanced")
    registered.append(c)
    assert summary(c) != first


def test_episodes_do_not_depend_on_num_workers(tmp_path, registered):
    _make_coco(tmp_path)
    name = _register(registered, tmp_path, "coco", 0, 1, num_episodes=6, seed=0,
                     sampler="balanced")
    mapper = FSSEpisodeMapper(image_size=S)

    def run(workers):
        loader = build_detection_test_loader(DatasetCatalog.get(name), mapper=mapper,
                                             num_workers=workers)
        return [(x["episode_id"], x["class_id"], x["file_name"], x["sem_seg_gt"].tobytes(),
                 x["references"][0]["image"].numpy().tobytes()) for [x] in loader]

    serial = run(0)
    assert [r[0] for r in serial] == list(range(6))
    assert run(2) == serial


def test_pascal5i_queries_in_list_order_with_ignored_boundaries(tmp_path, registered):
    lines = _make_pascal(tmp_path)
    name = _register(registered, tmp_path, "pascal", 1, 1, num_episodes=7)
    assert MetadataCatalog.get(name).fss_class_ids == pascal5i_class_ids(1) == [5, 6, 7, 8, 9]
    episodes = DatasetCatalog.get(name)
    for e in episodes:
        image, cls = lines[e["episode_id"] % len(lines)].split("__")
        assert (e["query"]["image_id"], e["class_id"]) == (image, int(cls) - 1)
        support = e["supports"][0]["image_id"]
        assert support != image and f"{support}__{cls}" in lines
    x = FSSEpisodeMapper(image_size=S)(episodes[0])
    labels = np.asarray(Image.open(episodes[0]["query"]["sem_seg_file_name"]))
    expected = _official_target(labels, episodes[0]["class_id"] + 1)
    expected[_official_target(labels, 255) == 1] = 255
    np.testing.assert_array_equal(x["sem_seg_gt"], expected)
    assert (x["sem_seg_gt"] == 255).any() and (x["sem_seg_gt"] == 1).any()
    assert not x["references"][0]["instances"].gt_masks[0, 0].any()  # boundary is not foreground


def test_lvis92i_folds_round_robin_and_union_of_instances(tmp_path, registered):
    annotations = _make_lvis(tmp_path)
    eligible = [c for c in annotations if len(annotations[c]) > 1]  # pickle order, > K images
    name = _register(registered, tmp_path, "lvis", 1, 1, num_episodes=10)
    episodes = DatasetCatalog.get(name)
    fold_classes = [eligible[1], eligible[11]]  # val_cat_ids[fold + 10 v], 21 // 10 = 2 per fold
    assert MetadataCatalog.get(name).fss_class_ids == fold_classes
    assert [e["class_id"] for e in episodes] == [fold_classes[e % 2] for e in range(10)]
    assert 999 not in eligible and 999 in annotations  # one image: in no 1-shot fold
    e = next(e for e in episodes if len(e["query"]["segmentations"]) == 2)
    assert e["supports"][0]["file_name"] != e["query"]["file_name"]
    first, second = (polygons_to_bitmask([np.asarray(p, float) for p in segm], H, W)
                     for segm in e["query"]["segmentations"])
    gt = class_target(e["query"], e["class_id"], (H, W))
    np.testing.assert_array_equal(gt, (first | second).astype(np.uint8))
    assert gt.sum() > max(first.sum(), second.sum())


def test_fss1000_one_episode_per_test_image_in_official_order(tmp_path, registered):
    _make_fss1000(tmp_path)
    name = _register(registered, tmp_path, "fss1000", 0, 5)
    assert name.startswith("test_fss1000") and dataset_name("fss1000", 0, 5) == "fss_fss1000_5shot"
    episodes = DatasetCatalog.get(name)
    assert len(episodes) == 20
    assert MetadataCatalog.get(name).fss_class_ids == [760, 761]  # sorted: aaa, bbb
    order = [os.path.basename(e["query"]["file_name"]) for e in episodes[:10]]
    assert order == ["1.jpg", "10.jpg"] + [f"{k}.jpg" for k in range(2, 10)]
    assert {e["class_id"] for e in episodes[:10]} == {760}
    for e in episodes:
        folder = os.path.dirname(e["query"]["file_name"])
        assert all(os.path.dirname(s["file_name"]) == folder for s in e["supports"])
        assert e["query"]["file_name"] not in [s["file_name"] for s in e["supports"]]
    x = FSSEpisodeMapper(image_size=S)(episodes[0])
    gray = np.asarray(Image.open(episodes[0]["query"]["sem_seg_file_name"]).convert("L"))
    np.testing.assert_array_equal(x["sem_seg_gt"], _official_target(gray >= 128, True))


def test_missing_files_name_the_path_and_the_readme_section(tmp_path, registered):
    name = _register(registered, tmp_path, "coco", 0, 1, sampler="balanced")
    with pytest.raises(FileNotFoundError, match=r"COCO2014/splits/val/fold0\.pkl.*#coco-20i"):
        DatasetCatalog.get(name)
    _make_coco(tmp_path)
    os.remove(tmp_path / "COCO2014/val2014/COCO_val2014_000000000001.jpg")
    with pytest.raises(FileNotFoundError, match=r"COCO_val2014_000000000001\.jpg.*#coco-20i"):
        DatasetCatalog.get(name)
    name = _register(registered, tmp_path, "lvis", 0, 1)
    with pytest.raises(FileNotFoundError, match=r"LVIS/lvis_val\.pkl.*#lvis-92i"):
        DatasetCatalog.get(name)


# ----------------------------------------------------------------------------- official episodes
# Expected sequences are written from spec §7.1 with the official calls themselves: the legacy
# global generator seeded by ``np.random.seed(0)`` and ``np.random.choice(pop, 1,
# replace=False)[0]`` per draw; supports redrawn while equal to the query.
def _choice(pop):
    return np.random.choice(pop, 1, replace=False)[0]


def _official_supports(pop, query, shots):
    supports = []
    while len(supports) < shots:
        s = _choice(pop)
        if s != query:
            supports.append(s)
    return supports


def _episodes(name):
    return [(e["class_id"], e["query"]["image_id"], [s["image_id"] for s in e["supports"]])
            for e in DatasetCatalog.get(name)]


def _touch_images(base, names, masks=True):
    for i, n in enumerate(names):
        _image(os.path.join(base, n), i)
        if masks:
            _png(os.path.join(base, "annotations", os.path.splitext(n)[0] + ".png"),
                 np.zeros((H, W)))


def _make_official_coco(root):
    """HSNet fold-0 pickle: all 20 fold classes, 2 to 5 images each (list order != sorted)."""
    base = os.path.join(root, "COCO2014")
    names = [f"val2014/COCO_val2014_{i:012d}.jpg" for i in range(7)]
    _touch_images(base, names)
    classwise = {c: [names[(3 * c + j) % 7] for j in range(2 + c % 4)][::-1]
                 for c in coco20i_class_ids(0)}
    os.makedirs(os.path.join(base, "splits", "val"))
    with open(os.path.join(base, "splits", "val", "fold0.pkl"), "wb") as f:
        pickle.dump(classwise, f)
    return classwise


@pytest.mark.parametrize("shots", [1, 5])
def test_coco20i_official_episode_sequence(tmp_path, registered, shots):
    pkl = _make_official_coco(tmp_path)
    name = _register(registered, tmp_path, "coco", 0, shots, num_episodes=25)
    np.random.seed(0)
    expected = []
    for _ in range(25):  # the episode index is not used
        c = _choice([0 + 4 * v for v in range(20)])
        q = _choice(pkl[c])
        expected.append((c, q, _official_supports(pkl[c], q, shots)))
    assert _episodes(name) == expected
    assert MetadataCatalog.get(name).sampler == "official"


def test_official_sampler_names_classes_it_cannot_sample(tmp_path, registered):
    _make_coco(tmp_path)  # only classes 0, 4 and 8 listed; 8 in a single image
    name = _register(registered, tmp_path, "coco", 0, 1)
    with pytest.raises(ValueError, match=r"classes \[8, 12, .*fewer than 2 images.*balanced"):
        DatasetCatalog.get(name)


@pytest.mark.parametrize("shots", [1, 5])
def test_pascal5i_official_episode_sequence_without_trailing_newline(tmp_path, registered,
                                                                      shots):
    base = os.path.join(tmp_path, "VOC2012")
    classes = [5, 7, 5, 9, 7, 5, 9, 7, 8]  # the last line (the only class-8 image) is dropped
    lines = [f"2008_{i:06d}__{c + 1}" for i, c in enumerate(classes)]
    for i, line in enumerate(lines):
        image = line.split("__")[0]
        _image(os.path.join(base, "JPEGImages", image + ".jpg"), i)
        _png(os.path.join(base, "SegmentationClassAug", image + ".png"), np.zeros((H, W)))
    os.makedirs(os.path.join(base, "splits", "val"))
    with open(os.path.join(base, "splits", "val", "fold1.txt"), "w") as f:
        f.write("\n".join(lines))  # no trailing newline
    name = _register(registered, tmp_path, "pascal", 1, shots, num_episodes=20)
    meta = [line.split("__") for line in lines[:-1]]
    np.random.seed(0)
    expected = []
    for idx in range(20):
        q, c = meta[idx % len(meta)][0], int(meta[idx % len(meta)][1]) - 1
        pop = [n for n, k in meta if int(k) - 1 == c]
        expected.append((c, q, _official_supports(pop, q, shots)))
    assert _episodes(name) == expected
    assert "2008_000008" not in {e[1] for e in _episodes(name)}


def _make_official_lvis(root):
    """lvis_val.pkl: 26 categories in a non-sorted order, 1 to 7 images each (inner order
    non-sorted too), so the 1-shot and 5-shot folds differ."""
    base = os.path.join(root, "LVIS")
    names = [f"val2017/{i:012d}.jpg" for i in range(8)]
    _touch_images(os.path.join(base, "coco"), names, masks=False)
    pkl = {}
    for j in range(26):
        cat = (37 * j) % 101 + 1
        count = [1, 6, 7, 2, 7, 6, 3][j % 7]
        pkl[cat] = {names[(j + 3 * k) % 8]: {"annotations": [{"segmentation": _square(1, 1)}]}
                    for k in range(count)}
    assert list(pkl) != sorted(pkl)
    with open(os.path.join(base, "lvis_val.pkl"), "wb") as f:
        pickle.dump(pkl, f)
    return pkl


@pytest.mark.parametrize("shots", [1, 5])
def test_lvis92i_official_episode_sequence(tmp_path, registered, shots):
    pkl = _make_official_lvis(tmp_path)
    name = _register(registered, tmp_path, "lvis", 1, shots, num_episodes=12)
    val_cat_ids = [c for c in pkl if len(pkl[c]) > shots]  # pickle order
    fold_cats = [val_cat_ids[1 + 10 * v] for v in range(len(val_cat_ids) // 10)]
    np.random.seed(0)
    expected = []
    for idx in range(12):
        c = fold_cats[idx % len(fold_cats)]
        images = list(pkl[c].keys())
        q = _choice(images)
        expected.append((c, q, _official_supports(images, q, shots)))
    assert _episodes(name) == expected
    assert MetadataCatalog.get(name).fss_class_ids == fold_cats
    assert len(fold_cats) == (2 if shots == 1 else 1)  # the eligible classes depend on K


@pytest.mark.parametrize("shots", [1, 5])
def test_fss1000_official_episode_sequence(tmp_path, registered, shots):
    base = os.path.join(tmp_path, "FSS-1000")
    for j, cat in enumerate(["bbb", "aaa", "ccc"]):
        for k in range(1, 11):
            _image(os.path.join(base, "data", cat, f"{k}.jpg"), 10 * j + k)
            _png(os.path.join(base, "data", cat, f"{k}.png"), np.zeros((H, W)))
    os.makedirs(os.path.join(base, "splits"))
    with open(os.path.join(base, "splits", "test.txt"), "w") as f:
        f.write("bbb\naaa\nccc")  # no trailing newline: "ccc" is not read
    name = _register(registered, tmp_path, "fss1000", 0, shots)
    import glob

    categories = sorted("bbb\naaa\nccc".split("\n")[:-1])
    meta = [p for cat in categories for p in sorted(glob.glob(os.path.join(base, "data", cat, "*")))
            if p.endswith(".jpg")]
    np.random.seed(0)
    expected = []
    for q in meta:
        supports = []
        while len(supports) < shots:
            s = os.path.join(os.path.dirname(q), str(_choice(range(1, 11)))) + ".jpg"
            if s != q:
                supports.append(s)
        cls = 760 + categories.index(os.path.basename(os.path.dirname(q)))
        expected.append((cls, q, supports))
    assert len(expected) == 20
    assert _episodes(name) == expected


def test_cli_dumps_the_official_episodes(tmp_path, registered, monkeypatch):
    pkl = _make_official_coco(tmp_path)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    dump = tmp_path / "episodes.json"
    fss_eval.main(["--config-file", "configs/fss/coco20i_1shot.yaml", "--benchmark", "coco",
                   "--num-episodes", "5", "--output", str(tmp_path / "out"),
                   "--dump-episodes", str(dump)])
    registered.append("fss_coco20i_fold0_1shot")
    with open(dump) as f:
        episodes = json.load(f)["fss_coco20i_fold0_1shot"]
    np.random.seed(0)
    for e in episodes:
        c = _choice(list(range(0, 80, 4)))
        q = _choice(pkl[c])
        [s] = _official_supports(pkl[c], q, 1)
        base = os.path.join(str(tmp_path), "COCO2014")
        assert e["class_id"] == c and e["query"] == os.path.join(base, q)
        assert e["supports"] == [os.path.join(base, s)]
    assert len(episodes) == 5 and not os.path.exists(tmp_path / "out" / "fss_coco20i_fold0_1shot")


# ----------------------------------------------------------------------------- K-shot pooling
def test_k_shots_give_one_prototype_pooled_jointly(tmp_path, registered):
    _make_coco(tmp_path)
    name = _register(registered, tmp_path, "coco", 0, 3, num_episodes=1, sampler="balanced")
    x = FSSEpisodeMapper(image_size=56)(DatasetCatalog.get(name)[0])
    torch.manual_seed(0)
    cfg = get_cfg()
    add_sine_config(cfg)
    cfg.merge_from_list(TINY + ["MODEL.SINE.TEST.INSTANCE_ON", "False",
                                "MODEL.SINE.TEST.IDENTITY_ON", "False"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        inputs = model.prepare_inputs([x], with_targets=False)
        feats = model.encode(inputs.ref_images)["neck"]
        size = (4 * feats.shape[-2], 4 * feats.shape[-1])
        decoder = model.transformer_decoder
        _, sem_tokens, id_labels, sem_labels = get_reference_pooling("instance")(
            feats, inputs.ref_masks, inputs.ref_labels, size, decoder.mask_pooling)
        # Official FSS fork: the K (feature, mask) pairs side by side, pooled as one image.
        wide_feats = torch.cat(list(F.interpolate(feats, size=size, mode="bilinear",
                                                            align_corners=False)), dim=-1)
        wide_masks = torch.cat([F.interpolate(m[None].float(), size=size, mode="bilinear",
                                              align_corners=False)[0]
                                for m in inputs.ref_masks], dim=-1)
        expected = decoder.mask_pooling(wide_feats[None], wide_masks[None])
        out = model([x])[0]
    assert sem_labels.tolist() == [x["class_id"]] and id_labels.tolist() == [x["class_id"]] * 3
    assert sem_tokens.shape == (1, 1, 32)
    torch.testing.assert_close(sem_tokens, expected)
    assert out["sem_seg"].shape == (1, 56, 56)
    assert out["sem_seg_classes"].tolist() == [x["class_id"]]


# ----------------------------------------------------------------------------- CLI
@pytest.fixture
def synthetic_root(tmp_path, monkeypatch):
    from sine.data.datasets.register_synthetic import register_synthetic
    from sine.data.synthetic import generate_synthetic

    default_root = os.getenv("DETECTRON2_DATASETS", "datasets")
    generate_synthetic(str(tmp_path), seed=0, num_train=1, num_val=16, num_videos=0, shots=(1,),
                       fewshot_seeds=1)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    names = register_synthetic(str(tmp_path))
    assert "synthetic_fss_novel_1shot" in names and "synthetic_fss_novel_5shot" in names
    yield tmp_path
    # The CLI re-registers the synthetic splits and its own episode counts under tmp_path.
    for name in set(names) | {n for n in DatasetCatalog.list() if n.startswith("synthetic_")}:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    if os.path.isfile(os.path.join(default_root, "synthetic", "meta.json")):
        register_synthetic(default_root)


def _cli(output, *extra, on_episode=None):
    argv = ["--config-file", "configs/demo/sine_synthetic_tiny.yaml", "--benchmark", "synthetic",
            "--shot", "2", "--num-episodes", "8", "--checkpoint-period", "2", "--output",
            str(output), *extra, *TINY, "TEST.FSS.IMAGE_SIZE", "56", "DATALOADER.NUM_WORKERS", "0"]
    torch.manual_seed(0)  # the same random tiny model in every run
    return fss_eval.main(argv, on_episode=on_episode)


def test_synthetic_novel_episodes_are_registered(synthetic_root):
    from sine.data.synthetic import get_synthetic_metadata

    meta = MetadataCatalog.get("synthetic_fss_novel_1shot")
    assert meta.evaluator_type == "fss" and meta.shots == 1
    assert meta.fss_class_ids == get_synthetic_metadata()["novel_contiguous_ids"]
    episodes = DatasetCatalog.get("synthetic_fss_novel_5shot")
    assert len(episodes) == 200 and all(len(e["supports"]) == 5 for e in episodes)
    assert {e["class_id"] for e in episodes} <= set(meta.fss_class_ids)


def test_cli_writes_table_and_json(synthetic_root, tmp_path, capsys):
    summary = _cli(tmp_path / "out")
    table = capsys.readouterr().out
    assert "FSS synthetic 2-shot" in table and "mean" in table and "mIoU" in table
    assert "episodes/s (8 episodes in" in table  # throughput of the run, at the end
    with open(tmp_path / "out" / "fss_synthetic_2shot.json") as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(summary))
    fold = saved["folds"]["0"]
    assert fold["dataset"] == "synthetic_fss_novel_2shot" and fold["episodes"] == 8
    assert 0 <= fold["mIoU"] <= 100 and saved["mean"]["mIoU"] == fold["mIoU"]
    assert saved["throughput"]["episodes"] == 8 and saved["throughput"]["episodes_per_s"] > 0


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(synthetic_root, tmp_path):
    reference = _cli(tmp_path / "full")

    seen = []

    def stop_after_three(name, episode_id):
        seen.append(episode_id)
        if len(seen) == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        _cli(tmp_path / "resumed", on_episode=stop_after_three)
    with open(tmp_path / "resumed" / "synthetic_fss_novel_2shot" / "episodes.json") as f:
        assert sorted(int(e) for e in json.load(f)["episodes"]) == sorted(seen)
    computed = []
    resumed = _cli(tmp_path / "resumed", on_episode=lambda name, e: computed.append(e))
    assert sorted(seen + computed) == list(range(8)) and not set(seen) & set(computed)
    assert resumed["folds"] == reference["folds"] and resumed["mean"] == reference["mean"]
    assert resumed["throughput"]["episodes"] == len(computed)  # finished episodes not counted

    again = []
    _cli(tmp_path / "resumed", on_episode=lambda name, e: again.append(e))
    assert again == []  # finished folds are skipped
    with pytest.raises(ValueError, match="other settings"):
        _cli(tmp_path / "resumed", "--seed", "1")


def test_cli_segments_through_the_model_surface_asking_only_the_semantic_map(
        synthetic_root, tmp_path, monkeypatch):
    from sine.modeling.meta_arch.sine_model import SINE

    asked = []
    segment = SINE.segment

    def spy(self, features, tokens, geometry, outputs):
        asked.append(frozenset(outputs))
        return segment(self, features, tokens, geometry, outputs)

    monkeypatch.setattr(SINE, "segment", spy)
    _cli(tmp_path / "out", "--num-episodes", "3")
    assert asked == [frozenset({"sem_seg"})] * 3


def test_every_process_reads_the_progress_files_before_any_writes_its_own(
        synthetic_root, tmp_path, monkeypatch):
    """Multi-process resume: a process that finished its shard before a slower one had read
    the progress files made the slower one shard a different remainder (episodes lost). A
    barrier between reading the progress files and the first write prevents it."""
    from detectron2.utils import comm

    from sine.evaluation.resume import RunRecords

    events = []
    load, save = RunRecords.load, RunRecords.save
    monkeypatch.setattr(comm, "synchronize", lambda: events.append("barrier"))

    def spy_load(self, path):
        events.append(("load", os.path.basename(path)))
        return load(self, path)

    def spy_save(self, path, *args, **kwargs):
        events.append(("save", os.path.basename(path)))
        return save(self, path, *args, **kwargs)

    monkeypatch.setattr(RunRecords, "load", spy_load)
    monkeypatch.setattr(RunRecords, "save", spy_save)
    interrupted = _cli(tmp_path / "out", "--num-episodes", "4")  # a first run writes progress
    assert interrupted["mean"]
    events.clear()
    (tmp_path / "out" / "synthetic_fss_novel_2shot" / "results.json").unlink()  # rerun: resume
    _cli(tmp_path / "out", "--num-episodes", "4")
    first_save = next(i for i, e in enumerate(events) if e[0] == "save")
    assert "barrier" in events[:first_save]
    barrier = events.index("barrier")
    assert any(e == ("load", "episodes.json") for e in events[:barrier])
    assert not any(e[0] == "load" and e[1].startswith("episodes") for e in events[barrier:])


def test_two_processes_give_the_metrics_of_one_and_resume_per_shard(synthetic_root, tmp_path):
    torch.manual_seed(0)
    cfg = get_cfg()
    add_sine_config(cfg)
    cfg.merge_from_list(TINY)
    weights = str(tmp_path / "tiny.pth")  # spawned processes must build the same model
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    one = _cli(tmp_path / "one", "MODEL.WEIGHTS", weights)
    two = _cli(tmp_path / "two", "--num-gpus", "2", "MODEL.WEIGHTS", weights)  # gloo on CPU
    assert two["folds"] == one["folds"] and two["mean"] == one["mean"]
    fold_dir = tmp_path / "two" / "synthetic_fss_novel_2shot"
    shards = [json.load(open(fold_dir / f))["episodes"]
              for f in ("episodes.json", "episodes.rank1.json")]
    assert sorted(int(e) for s in shards for e in s) == list(range(8))  # one shard each
    assert all(shards) and not set(shards[0]) & set(shards[1])
    # Resume: lose the results and one shard's progress; one process redoes only that shard.
    os.remove(fold_dir / "results.json")
    os.remove(fold_dir / "episodes.rank1.json")
    computed = []
    again = _cli(tmp_path / "two", "MODEL.WEIGHTS", weights,
                 on_episode=lambda name, e: computed.append(e))
    assert sorted(computed) == sorted(int(e) for e in shards[1])
    assert again["folds"] == one["folds"]


def test_train_net_eval_only_reaches_the_suites(synthetic_root, tmp_path):
    """``train_net.py --eval-only --suite fss`` is the FSS CLI: the same metrics as calling it."""
    import train_net

    direct = _cli(tmp_path / "direct")
    argv = ["--config-file", "configs/demo/sine_synthetic_tiny.yaml", "--eval-only",
            "--suite", "fss", "--suite-args",
            f"--benchmark synthetic --shot 2 --num-episodes 8 --output {tmp_path / 'via'}",
            *TINY, "TEST.FSS.IMAGE_SIZE", "56", "DATALOADER.NUM_WORKERS", "0"]
    torch.manual_seed(0)  # the same random tiny model as _cli
    via = train_net.invoke_main(argv)
    assert via["folds"] == direct["folds"] and via["mean"] == direct["mean"]
    assert {"fss", "fsod", "vos"} == set(train_net.SUITES)
    for suite in train_net.SUITES.values():  # every suite's entry point exists
        import importlib

        assert callable(getattr(importlib.import_module(suite[0]), suite[1]))
    with pytest.raises(SystemExit, match="go with --eval-only"):
        train_net.invoke_main(["--config-file", "x.yaml", "--suite", "vos"])
