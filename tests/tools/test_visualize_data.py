"""tools/visualize_data.py: raw annotations and augmented training samples of a tiny registered dataset."""

import importlib.util
import os
import textwrap

import numpy as np
import pytest
from PIL import Image

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data.datasets import register_coco_instances
from libdet.data.datasets.shapes import SHAPES_CLASSES, generate_shapes_dataset
from libdet.structures import polygons_to_bitmask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATASET = "_visualize_data_test_shapes"


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "_tool_visualize_data", os.path.join(ROOT, "tools", "visualize_data.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vd = _load_tool()

CONFIG = textwrap.dedent(f"""
    import libdet.data.transforms as T
    from libdet.config import LazyCall as L
    from libdet.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts

    dataloader = dict(train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="{DATASET}"),
        mapper=L(DatasetMapper)(
            is_train=True,
            augmentations=[
                L(T.ResizeShortestEdge)(short_edge_length=[128], max_size=256, sample_style="choice"),
                L(T.RandomFlip)(horizontal=True),
            ],
            image_format="BGR",
            use_instance_mask=True,
        ),
        total_batch_size=2,
        num_workers=0,
        seed=0,
    ))
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("visualize_data")
    paths = generate_shapes_dataset(
        str(root / "data"),
        "train",
        num_images=3,
        seed=0,
        image_sizes=((64, 64), (64, 96)),
        max_objects=2,
        image_format="png",
    )
    register_coco_instances(DATASET, {"thing_classes": list(SHAPES_CLASSES)}, paths["json_file"], paths["image_root"])
    cfg_file = root / "cfg.py"
    cfg_file.write_text(CONFIG)
    yield {"cfg": str(cfg_file), "dicts": {d["image_id"]: d for d in DatasetCatalog.get(DATASET)}}
    DatasetCatalog.remove(DATASET)
    MetadataCatalog.remove(DATASET)


def _run(setup, *argv, cfg=None):
    return vd.main(vd.get_parser().parse_args(["--config-file", cfg or setup["cfg"], *argv]))


def _read(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int32)


def test_annotations_drawn_on_original_images(setup, tmp_path):
    written = _run(setup, "--source", "annotation", "--output-dir", str(tmp_path))
    assert sorted(written) == sorted(str(tmp_path / f"{i}.png") for i in setup["dicts"])
    for image_id, d in setup["dicts"].items():
        drawn, original = _read(tmp_path / f"{image_id}.png"), _read(d["file_name"])
        assert drawn.shape == original.shape == (d["height"], d["width"], 3)
        diff = np.abs(drawn - original).max(axis=2)
        for anno in d["annotations"]:
            mask = polygons_to_bitmask([np.asarray(p) for p in anno["segmentation"]], d["height"], d["width"])
            assert diff[mask].mean() > 10  # the mask is filled
    assert len(_run(setup, "--source", "annotation", "--output-dir", str(tmp_path / "two"), "--num-images", "2")) == 2


def test_dataloader_draws_augmented_samples(setup, tmp_path):
    written = _run(setup, "--source", "dataloader", "--output-dir", str(tmp_path), "--num-images", "4")
    assert len(written) == 4 and all(os.path.isfile(p) for p in written)
    names = [os.path.basename(p) for p in written]
    assert len(set(names)) == 4  # an image drawn twice gets a suffix instead of being overwritten
    for path in written:
        image_id = int(os.path.basename(path).split(".")[0].split("_")[0])
        d = setup["dicts"][image_id]
        drawn = _read(path)
        assert drawn.shape == (128, 128 * d["width"] // d["height"], 3)  # after the train-time resize
        resized = np.asarray(Image.open(d["file_name"]).convert("RGB").resize(drawn.shape[1::-1], Image.BILINEAR))
        changed = min((np.abs(drawn - r.astype(np.int32)).max(axis=2) > 40).mean() for r in (resized, resized[:, ::-1]))
        assert changed > 0.02  # boxes and masks are drawn on it


def test_default_num_images_is_the_dataset_size(setup, tmp_path):
    assert len(_run(setup, "--source", "dataloader", "--output-dir", str(tmp_path))) == 3


def test_errors(setup, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        _run(setup, "--source", "annotation", "--output-dir", str(tmp_path), cfg=str(tmp_path / "nope.py"))
    with pytest.raises(ValueError, match="not registered"):
        _run(
            setup,
            "--source",
            "annotation",
            "--output-dir",
            str(tmp_path),
            "dataloader.train.dataset.names=_no_such_dataset",
        )
    with pytest.raises(ValueError, match="--num-images"):
        _run(setup, "--source", "annotation", "--output-dir", str(tmp_path), "--num-images", "0")
    empty_cfg = tmp_path / "empty.py"
    empty_cfg.write_text("model = dict()\n")
    with pytest.raises(ValueError, match="dataloader.train"):
        _run(setup, "--source", "annotation", "--output-dir", str(tmp_path), cfg=str(empty_cfg))
