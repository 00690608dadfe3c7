"""Training on your own files with no Python: dataset specs on tools/lazyconfig_train_net.py's command line."""

import importlib.util
import json
import os

import pytest

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data.datasets.shapes import generate_shapes_dataset
from libdet.engine import default_argument_parser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "lazyconfig_train_net.py")
CONFIG = os.path.join(ROOT, "configs", "shapes", "mask_rcnn_r18_cpu.py")
RESIZE = "libdet.data.transforms.ResizeShortestEdge"


def _load_tool():
    spec = importlib.util.spec_from_file_location("_tool_lazyconfig_train_net_specs", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(autouse=True)
def _clean_catalogs(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBDET_CACHE", str(tmp_path / "cache"))
    before = set(DatasetCatalog.keys())
    yield
    for name in set(DatasetCatalog.keys()) - before:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    """A user's COCO json + image folder (3 classes), and the same images as a YOLO folder."""
    root = tmp_path_factory.mktemp("user_data")
    paths = generate_shapes_dataset(
        str(root), "train", num_images=6, seed=0, image_sizes=((64, 64), (64, 96)), max_objects=3
    )
    with open(paths["json_file"]) as f:
        coco = json.load(f)
    yolo = root / "yolo"
    (yolo / "labels").mkdir(parents=True)
    os.symlink(paths["image_root"], yolo / "images")
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    (yolo / "classes.txt").write_text("".join(c["name"] + "\n" for c in categories))
    index = {c["id"]: i for i, c in enumerate(categories)}
    for image in coco["images"]:
        lines = []
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = ann["bbox"]
            cx, cy = (x + w / 2) / image["width"], (y + h / 2) / image["height"]
            lines.append(f"{index[ann['category_id']]} {cx} {cy} {w / image['width']} {h / image['height']}")
        stem = os.path.splitext(os.path.basename(image["file_name"]))[0]
        (yolo / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return {"coco": f"coco:{paths['json_file']}@{paths['image_root']}", "yolo": f"yolo:{yolo}", "classes": categories}


def _args(output_dir, train, test, *extra, masks=True):
    opts = [
        f"dataloader.train.dataset.names={train}",
        f"dataloader.test.dataset.names={test}",
        f"train.output_dir={output_dir}",
        "train.max_iter=20",
        "train.device=cpu",
        "train.eval_period=0",
        "train.checkpointer.period=100",
        "train.log_period=10",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "dataloader.train.total_batch_size=2",
        f"dataloader.train.mapper.augmentations=[{{_target_:{RESIZE},short_edge_length:[64,72],max_size:128}}]",
        f"dataloader.test.mapper.augmentations=[{{_target_:{RESIZE},short_edge_length:64,max_size:128}}]",
        "model.backbone.out_channels=16",
        "model.roi_heads.box_head.fc_dims=[32,32]",
        "model.roi_heads.batch_size_per_image=32",
        # 20 iterations leave every score near the prior: keep all detections so that every task is evaluated
        "model.roi_heads.box_predictor.test_score_thresh=0.0",
        *extra,
    ]
    if masks:
        opts.append("model.roi_heads.mask_head.conv_dims=[8]")
    else:  # YOLO boxes have no masks: a Faster R-CNN
        opts += [
            "model.roi_heads.mask_in_features=null",
            "model.roi_heads.mask_pooler=null",
            "model.roi_heads.mask_head=null",
            "dataloader.train.mapper.use_instance_mask=false",
            "+dataloader.evaluator.tasks=[bbox]",
        ]
    return default_argument_parser().parse_args(["--config-file", CONFIG, *opts])


@pytest.mark.slow
def test_train_and_evaluate_on_a_coco_json_and_image_folder(user_data, tmp_path):
    spec = user_data["coco"]
    results = tool.main(_args(str(tmp_path), spec + "%train:0.3", spec + "%val:0.3"))
    assert "bbox/AP" in results and "segm/AP" in results
    cfg = json.loads(json.dumps(__import__("yaml").safe_load(open(tmp_path / "config.yaml"))))
    assert cfg["model"]["roi_heads"]["num_classes"] == len(user_data["classes"])


@pytest.mark.slow
def test_train_and_evaluate_on_a_yolo_folder(user_data, tmp_path):
    spec = user_data["yolo"]
    results = tool.main(_args(str(tmp_path), spec, spec, masks=False))
    assert "bbox/AP" in results and "segm/AP" not in results
    assert os.path.isfile(tmp_path / "model_final.pth")


def test_a_num_classes_set_on_the_command_line_must_match_the_data(user_data, tmp_path):
    spec = user_data["coco"]
    with pytest.raises(ValueError) as info:
        tool.setup(_args(str(tmp_path), spec, spec, "model.roi_heads.num_classes=5"))
    message = str(info.value)
    assert "\n" not in message and "num_classes=5" in message and "has 3 classes" in message
