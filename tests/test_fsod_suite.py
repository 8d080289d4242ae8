"""FSOD suite (spec §7.2): "fsod" prototypes, decoding without ID queries, TFA-layout datasets,
novel-class COCO evaluation and the eval CLI (cache reuse, resume) on a tiny synthetic tree."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

import inference_fsod.eval as fsod_eval
from inference_fsod import prototype_cache
from inference_fsod.data import FSODTestMapper, read_reference_image
from inference_fsod.evaluation import NovelClassCOCOEvaluator, summarize_seeds
from inference_fsod.model import PrototypeInstanceSegmenter
from inference_fsod.register_fsod import (
    COCO_NOVEL_IDS,
    register_coco_fsod,
    register_synthetic_fsod,
    register_voc_fsod,
)
from sine import add_sine_config
from sine.data.synthetic import generate_synthetic
from sine.modeling.in_context import ImageGeometry, ReferenceTokens
from sine.modeling.meta_arch.sine_model import SINEReferenceTokens
from sine.modeling.transformer_decoder.in_context_fusion import MaskPooling
from sine.modeling.transformer_decoder.reference_pooling import (
    fsod_prototype_sums,
    get_reference_pooling,
)
from tests.tiny_model import TINY_MODEL_OPTS

TINY = list(TINY_MODEL_OPTS)
CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs/fsod/coco_1shot.yaml")


def _tiny_cfg():
    cfg = get_cfg()
    add_sine_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(TINY)
    return cfg


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(_tiny_cfg()).eval()


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """Tiny synthetic tree: 10 novel classes, 1 shot, 2 seeds, 2 test images."""
    root = str(tmp_path_factory.mktemp("datasets"))
    generate_synthetic(root, seed=0, num_train=1, num_val=10, num_videos=0, shots=(1,),
                       fewshot_seeds=2)
    register_synthetic_fsod(root)
    return root


# ------------------------------------------------------------------ "fsod" pooling
def test_fsod_prototype_counts_overlapping_pixels_once_per_instance():
    feats = torch.arange(2 * 16, dtype=torch.float32).reshape(1, 2, 4, 4) ** 1.5
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[0:2] = True
    b = torch.zeros(4, 4, dtype=torch.bool)
    b[1:3] = True  # overlaps a on row 1
    masks, labels = [torch.stack([a, b])], [torch.tensor([5, 5])]
    pool = get_reference_pooling("fsod")
    id_tokens, sem_tokens, id_labels, sem_labels = pool(feats, masks, labels, (4, 4), None)

    f = feats[0].flatten(1)  # (C, 16)
    expected = (f[:, a.flatten()].sum(1) + f[:, b.flatten()].sum(1)) / (8 + 8)
    union_mean = f[:, (a | b).flatten()].mean(1)
    assert id_tokens.shape == (1, 0, 2) and id_labels.numel() == 0
    assert sem_labels.tolist() == [5]
    torch.testing.assert_close(sem_tokens[0, 0], expected)
    assert not torch.allclose(sem_tokens[0, 0], union_mean)
    # The training/FSS variant takes the union: the two protocols really differ here.
    _, union_tokens, _, _ = get_reference_pooling("instance")(
        feats, masks, labels, (4, 4), MaskPooling())
    torch.testing.assert_close(union_tokens[0, 0], union_mean)


def test_fsod_prototypes_pool_each_class_over_all_references():
    torch.manual_seed(0)
    feats = torch.randn(2, 3, 4, 4)
    m0 = torch.zeros(2, 4, 4, dtype=torch.bool)
    m0[0, :2, :2] = True
    m0[1, 2:, :] = True
    m1 = torch.zeros(1, 4, 4, dtype=torch.bool)
    m1[0, 1:3, 1:4] = True
    labels = [torch.tensor([7, 2]), torch.tensor([7])]
    _, sem, _, sem_labels = get_reference_pooling("fsod")(feats, [m0, m1], labels, (4, 4), None)
    assert sem_labels.tolist() == [7, 2]  # order of first appearance (spec §2.4), not sorted
    cls7 = (feats[0][:, m0[0]].sum(1) + feats[1][:, m1[0]].sum(1)) / (4 + 6)
    torch.testing.assert_close(sem[0, 0], cls7)
    torch.testing.assert_close(sem[0, 1], feats[0][:, m0[1]].mean(1))


# ------------------------------------------------------------------ official FSOD input
def test_paper_configs_read_bgr_and_normalise_it_with_the_rgb_mean(tmp_path, tiny_model):
    """Official FSOD input (spec §7.2): detectron2's default BGR, RGB ImageNet mean/std applied
    to the BGR array as it is; RGB stays available."""
    assert _tiny_cfg().INPUT.FORMAT == "BGR"
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    path = str(tmp_path / "a.png")
    Image.fromarray(rgb).save(path)
    record = {"file_name": path, "height": 30, "width": 40, "image_id": 1,
              "annotations": [_ann(1, 1, 0) | {"bbox_mode": BoxMode.XYWH_ABS}]}
    as_rgb = FSODTestMapper(112, "RGB")(record)["image"]
    as_bgr = FSODTestMapper(112, "BGR")(record)["image"]
    assert as_bgr.shape == (3, 84, 112)
    torch.testing.assert_close(as_bgr, as_rgb.flip(0))
    torch.testing.assert_close(read_reference_image(record, 112, "BGR")[0], as_bgr)
    # The model applies the mean/std in R, G, B order to whatever array it gets.
    x = tiny_model.preprocess_image(as_bgr, 112)
    torch.testing.assert_close(x[0, :84, :112], (as_bgr[0].float() - 123.675) / 58.395)
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        FSODTestMapper(112, "YUV")(record)


def _reference_tree(tmp_path):
    """Two reference images; classes first appear in the order 3, 1, 2; class 2's only mask
    is a 0.05-pixel polygon that vanishes when rasterised."""
    def ann(cat, x, y, size=10.0):
        poly = [x, y, x + size, y, x + size, y + size, x, y + size]
        return {"category_id": cat, "iscrowd": 0, "bbox": [x, y, size, size],
                "bbox_mode": BoxMode.XYWH_ABS, "segmentation": [poly]}

    records = []
    for i, anns in enumerate([[ann(3, 2, 2), ann(1, 20, 10)],
                              [ann(2, 5, 5, 0.05), ann(1, 8, 12, 14)]]):
        path = str(tmp_path / f"ref{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (30, 40, 3), np.uint8)).save(path)
        records.append({"file_name": path, "height": 30, "width": 40, "image_id": i,
                        "annotations": anns})
    return records


def test_prototypes_in_order_of_first_appearance_with_a_zero_prototype(tmp_path, tiny_model):
    records = _reference_tree(tmp_path)
    _, masks, labels = read_reference_image(records[1], 112, "BGR")
    assert labels.tolist() == [2, 1] and not masks[0].any() and masks[1].any()  # kept, empty
    tokens = prototype_cache.compute_prototypes(tiny_model, records, batch_size=1,
                                                image_format="BGR")
    assert tokens.id_tokens.shape[1] == 0  # no ID queries (official use_id_query False)
    assert tokens.sem_labels.tolist() == [3, 1, 2]
    prototypes = tokens.sem_tokens[0]
    assert prototypes.shape == (3, 32)
    assert (prototypes[2] == 0).all() and (prototypes[:2].abs().sum(1) > 0).all()
    # The empty instance adds nothing: class 1 pools the same without it.
    without_empty = [records[0], dict(records[1], annotations=records[1]["annotations"][1:])]
    other = prototype_cache.compute_prototypes(tiny_model, without_empty, image_format="BGR")
    assert other.sem_labels.tolist() == [3, 1]
    torch.testing.assert_close(other.sem_tokens[0], prototypes[:2])
    # The channel order matters: RGB input gives other prototypes (and another cache key).
    rgb = prototype_cache.compute_prototypes(tiny_model, records, image_format="RGB")
    assert not torch.allclose(rgb.sem_tokens[0, :2], prototypes[:2])
    # A zero prototype still competes: decoding yields candidates of all three classes.
    out = PrototypeInstanceSegmenter(tiny_model, tokens)(
        [{"image": torch.zeros(3, 84, 112, dtype=torch.uint8), "height": 30, "width": 40}])
    assert set(out[0]["instances"].pred_classes.tolist()) <= {1, 2, 3}


def test_prototype_order_follows_the_records_not_the_images(tmp_path, tiny_model):
    """An image shared by two reference records is encoded once, but the classes keep the
    order of the records (one reference per annotation, as officially)."""
    a, b = _reference_tree(tmp_path)
    records = [dict(a, annotations=a["annotations"][:1]),  # image 0: class 3
               dict(b, annotations=b["annotations"][1:]),  # image 1: class 1
               dict(a, annotations=[dict(a["annotations"][0], category_id=4)])]  # image 0 again
    calls = []
    hook = tiny_model.image_encoder.encoder.register_forward_hook(
        lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    try:
        tokens = prototype_cache.compute_prototypes(tiny_model, records, image_format="BGR")
    finally:
        hook.remove()
    assert sum(calls) == 2  # two distinct images
    assert tokens.sem_labels.tolist() == [3, 1, 4]
    torch.testing.assert_close(tokens.sem_tokens[0, 2], tokens.sem_tokens[0, 0])  # same mask


# ------------------------------------------------------------------ decoder with nm = 0
def test_decoder_without_id_queries_and_batched_prototypes_match_joint_pooling(tiny_model):
    """Prototypes accumulated over reference batches decode like reference_tokens(pooling=
    "fsod") over all references, and the FSOD segmenter decodes through ``segment``."""
    torch.manual_seed(1)
    images = [torch.randint(0, 255, (3, 112, 90), dtype=torch.uint8) for _ in range(3)]
    masks = [torch.zeros(n, 112, 112, dtype=torch.bool) for n in (2, 1, 1)]
    masks[0][0, 10:50, 10:40] = masks[0][1, 30:80, 20:70] = True
    masks[1][0, 50:100, 5:60] = masks[2][0, 0:60, 40:90] = True
    labels = [torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([0])]
    model = tiny_model
    with torch.no_grad():
        feats = model.encode(torch.stack([model.preprocess_image(im, 112) for im in images]))
        tar = model.encode(model.preprocess_image(images[1], 112)[None])
        joint = model.reference_tokens(feats, masks, labels, pooling="fsod")
        grid = tuple(4 * s for s in feats["neck"].shape[-2:])
        parts = [fsod_prototype_sums(feats["neck"][i:j], masks[i:j], labels[i:j], grid)
                 for i, j in ((0, 1), (1, 3))]
        sums, counts = torch.zeros(2, 32), torch.zeros(2)
        for part_labels, part_sums, part_counts in parts:  # each in its own class order
            sums[part_labels] += part_sums
            counts[part_labels] += part_counts
        protos = sums / (counts[:, None] + 1e-8)
        cached = SINEReferenceTokens.from_prototypes(torch.tensor([0, 1]), protos)
        raw_joint = model.decode_tokens(tar, joint, lazy_aux=False)
        raw_cached = model.decode_tokens(tar, cached, lazy_aux=False)
    # With no ID query the official self-attention mask blocks nothing.
    assert not tiny_model.transformer_decoder.self_attention_mask(0, 5 + 3, "cpu").any()
    assert joint.id_tokens.shape == (1, 0, 32) and joint.sem_labels.tolist() == [0, 1]
    assert raw_joint["pred_id_logits"].shape == (1, 0, 2)
    assert raw_joint["pred_id_masks"].shape[1] == 0
    assert raw_joint["pred_ins_logits"].shape == (1, 5, 3)
    assert torch.isfinite(raw_joint["pred_ins_logits"]).all()
    assert torch.isfinite(raw_joint["pred_ins_masks"]).all()
    torch.testing.assert_close(cached.sem_tokens, joint.sem_tokens, rtol=1e-4, atol=1e-5)
    for key in ("pred_ins_logits", "pred_ins_masks"):
        torch.testing.assert_close(raw_cached[key], raw_joint[key], rtol=1e-4, atol=1e-5)
    segmenter = PrototypeInstanceSegmenter(tiny_model, cached)
    out = segmenter([{"image": images[1], "height": 60, "width": 48}])[0]["instances"]
    assert out.image_size == (60, 48) and out.pred_masks.shape[1:] == (60, 48)
    assert set(out.pred_classes.tolist()) <= {0, 1} and (out.scores > 0).all()
    expected = model.segment(tar, cached, ImageGeometry((112, 112), (112, 90), (60, 48)),
                             outputs={"instances"})["instances"]
    assert torch.equal(out.pred_masks, expected.pred_masks)
    torch.testing.assert_close(out.scores, expected.scores)


def test_cached_tokens_round_trip_through_the_cache_format(tiny_model):
    protos = torch.randn(3, 32)
    tokens = SINEReferenceTokens.from_prototypes(torch.tensor([1, 4, 6]), protos)
    loaded = ReferenceTokens.from_dict(tokens.to_dict())
    assert type(loaded) is SINEReferenceTokens
    for name in ("labels", "ids", "id_tokens", "sem_tokens", "sem_labels"):
        assert torch.equal(getattr(loaded, name), getattr(tokens, name)), name
    with pytest.raises(ValueError, match="not a ReferenceTokens"):
        ReferenceTokens.from_dict({"type": "torch:Tensor", "fields": {}})


# ------------------------------------------------------------------ TFA-layout registration
def _write_json(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(content, f)


def _coco_names():
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return {c["id"]: c["name"] for c in COCO_CATEGORIES}


def _ann(ann_id, image_id, category_id, x=2):
    poly = [x, 2, x + 10, 2, x + 10, 12, x, 12]
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "bbox": [x, 2, 10, 10], "area": 100, "segmentation": [poly]}


def _tiny_tfa_tree(root):
    names = _coco_names()
    cats = [{"id": i, "name": names[i]} for i in sorted(names)]
    for d in ("coco/trainval2014", "coco/val2014"):
        os.makedirs(os.path.join(root, d))
    Image.new("RGB", (40, 30)).save(os.path.join(root, "coco/val2014/v1.jpg"))
    for seed_dir, seed in (("cocosplit", 0), ("cocosplit/seed1", 1)):
        for k, cid in enumerate(COCO_NOVEL_IDS):
            img = {"id": 1000 * seed + k, "file_name": f"r{seed}_{k}.jpg", "height": 30,
                   "width": 40}
            anns = [_ann(10 * img["id"], img["id"], cid)]
            if cid == 1 and seed == 0:  # two annotations of "person" for 1 shot -> one kept
                anns.append(_ann(10 * img["id"] + 1, img["id"], cid, x=20))
            _write_json(os.path.join(root, seed_dir, f"full_box_1shot_{names[cid]}_trainval.json"),
                        {"images": [img], "annotations": anns, "categories": cats})
    test_images = [{"id": i, "file_name": f"v{i}.jpg", "height": 30, "width": 40}
                   for i in (1, 2)]
    _write_json(os.path.join(root, "cocosplit/datasplit/5k.json"), {
        "images": test_images,
        # 72 (tv) is novel, 73 (laptop) is a base class; image 2 has no novel object.
        "annotations": [_ann(1, 1, 72), _ann(2, 1, 73), _ann(3, 2, 73)],
        "categories": cats,
    })


def test_tfa_layout_registers_novel_only_datasets(tmp_path):
    root = str(tmp_path)
    _tiny_tfa_tree(root)
    register_coco_fsod(root)
    names = _coco_names()
    refs = DatasetCatalog.get("coco_trainval_novel_1shot_seed0")
    assert len(refs) == 20 and all(len(r["annotations"]) == 1 for r in refs)
    assert [r["annotations"][0]["category_id"] for r in refs] == list(range(20))
    assert refs[0]["file_name"] == os.path.join(root, "coco/trainval2014/r0_0.jpg")
    meta = MetadataCatalog.get("coco_trainval_novel_1shot_seed0")
    assert meta.thing_classes == [names[i] for i in COCO_NOVEL_IDS]
    assert meta.thing_classes[18] == "dining table" and meta.evaluator_type == "coco"
    seed1 = DatasetCatalog.get("coco_trainval_novel_1shot_seed1")
    assert {r["image_id"] for r in seed1} == set(range(1000, 1020))  # read from seed1/

    test = DatasetCatalog.get("coco_test_novel")
    assert [r["image_id"] for r in test] == [1, 2]  # images without novel objects are kept
    assert [[a["category_id"] for a in r["annotations"]] for r in test] == [[19], []]
    test_meta = MetadataCatalog.get("coco_test_novel")
    assert test_meta.thing_dataset_id_to_contiguous_id[72] == 19
    assert test_meta.json_file == os.path.join(root, "cocosplit/datasplit/5k.json")

    with pytest.raises(FileNotFoundError, match=r"seed2.*README.md#coco-novel"):
        DatasetCatalog.get("coco_trainval_novel_1shot_seed2")


def test_coco2voc_classes_are_matched_to_coco_novel_ids(tmp_path):
    root = str(tmp_path)
    voc_names = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
                 "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
                 "sheep", "sofa", "train", "tvmonitor"]
    os.makedirs(os.path.join(root, "VOCOutput/JPEGImages"))
    Image.new("RGB", (40, 30)).save(os.path.join(root, "VOCOutput/JPEGImages/a.jpg"))
    _write_json(os.path.join(root, "VOCOutput/annotations/val_converted.json"), {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 30, "width": 40}],
        "annotations": [_ann(1, 1, 1), _ann(2, 1, 15)],  # an aeroplane and a person
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(voc_names)],
    })
    register_voc_fsod(root)
    records = DatasetCatalog.get("voc_segm_val_novel")
    novel = MetadataCatalog.get("voc_segm_val_novel").thing_classes
    got = [novel[a["category_id"]] for a in records[0]["annotations"]]
    assert got == ["airplane", "person"]


# ------------------------------------------------------------------ evaluation
def test_evaluator_scores_only_novel_classes(synthetic_root):
    """Perfect novel predictions give AP 100 although the json also annotates base classes."""
    name = "synthetic_fsod_test_novel"
    records = DatasetCatalog.get(name)
    with open(MetadataCatalog.get(name).json_file) as f:
        gt = json.load(f)
    novel_ids = set(MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id)
    assert any(a["category_id"] not in novel_ids for a in gt["annotations"])
    assert sum(len(r["annotations"]) for r in records) > 0
    evaluator = NovelClassCOCOEvaluator(name)
    evaluator.reset()
    for r in records:
        inst = Instances((r["height"], r["width"]))
        anns = r["annotations"]
        inst.pred_masks = torch.as_tensor(np.stack(
            [mask_util.decode(a["segmentation"]) for a in anns]).astype(bool)) if anns else \
            torch.zeros(0, r["height"], r["width"], dtype=torch.bool)
        boxes = [BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in anns]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.long)
        evaluator.process([{"image_id": r["image_id"]}], [{"instances": inst}])
    results = evaluator.evaluate()
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(100.0)


def test_summary_is_mean_and_sample_std_over_seeds():
    per_seed = {s: {t: {m: v for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
                    for t in ("bbox", "segm")} for s, v in ((0, 10.0), (1, 14.0), (2, 12.0))}
    summary = summarize_seeds(per_seed)
    assert summary["segm"]["AP"]["mean"] == pytest.approx(12.0)
    assert summary["segm"]["AP"]["std"] == pytest.approx(2.0)


# ------------------------------------------------------------------ CLI end to end
def _cli(output, weights, seeds):
    return fsod_eval.get_parser().parse_args(
        ["--config-file", CONFIG, "--benchmark", "synthetic", "--shots", "1", "--seeds", seeds,
         "--output", output] + TINY + ["MODEL.WEIGHTS", weights, "DATALOADER.NUM_WORKERS", "0"])


def test_cli_end_to_end_with_cache_reuse_and_resume(synthetic_root, tiny_model, tmp_path,
                                                     monkeypatch, capsys):
    weights = str(tmp_path / "tiny.pth")
    torch.save({"model": tiny_model.state_dict()}, weights)
    monkeypatch.setenv("DETECTRON2_DATASETS", synthetic_root)
    out = str(tmp_path / "out")
    summary = fsod_eval.main(_cli(out, weights, "0-1"))

    printed = capsys.readouterr().out
    assert "synthetic, 1-shot" in printed and "mean ± std over seeds [0, 1]" in printed
    n_test = len(DatasetCatalog.get("synthetic_fsod_test_novel"))
    assert f"images/s ({2 * n_test} images in" in printed  # both seeds' test images
    run_dir = os.path.join(out, "synthetic_1shot")
    metrics = {}
    for seed in (0, 1):
        with open(os.path.join(run_dir, f"seed{seed}", "metrics.json")) as f:
            metrics[seed] = json.load(f)["results"]
        with open(os.path.join(run_dir, f"seed{seed}", "coco_instances_results.json")) as f:
            preds = json.load(f)
        # COCOEvaluator mapped contiguous novel ids back to the dataset's novel category ids.
        novel_ids = set(MetadataCatalog.get("synthetic_fsod_test_novel")
                        .thing_dataset_id_to_contiguous_id)
        assert preds and {p["category_id"] for p in preds} <= novel_ids
        assert {"segmentation", "bbox", "score"} <= set(preds[0])
    for task in ("bbox", "segm"):
        values = [metrics[s][task]["AP"] for s in (0, 1)]
        assert summary[task]["AP"]["mean"] == pytest.approx(np.mean(values))
        assert summary[task]["AP"]["std"] == pytest.approx(np.std(values, ddof=1))
    cache_files = sorted(os.listdir(os.path.join(out, "prototypes")))
    assert len(cache_files) == 2

    # Rerun after losing seed 1's result: seed 0 is skipped, seed 1 reuses its cached prototypes.
    os.remove(os.path.join(run_dir, "seed1", "metrics.json"))

    def no_encoding(*args, **kwargs):
        raise AssertionError("references were encoded again instead of using the cache")

    evaluated = []
    original = fsod_eval.FSODRun.evaluate_seed
    monkeypatch.setattr(prototype_cache, "compute_prototypes", no_encoding)
    monkeypatch.setattr(fsod_eval.FSODRun, "evaluate_seed",
                        lambda self, seed: evaluated.append(seed) or original(self, seed))
    fsod_eval.main(_cli(out, weights, "0-1"))
    assert evaluated == [1]
    with open(os.path.join(run_dir, "seed1", "metrics.json")) as f:
        # Same numbers as the first run (compared as JSON: APl may be NaN).
        assert json.dumps(json.load(f)["results"]) == json.dumps(metrics[1])
    assert sorted(os.listdir(os.path.join(out, "prototypes"))) == cache_files
