"""The YMIR executor (tools/ymir): the whole /in -> /out contract on CPU, in a temporary tree."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "ymir"))

import start  # noqa: E402
import ymir_protocol as protocol  # noqa: E402
from ymir_dataset import load_ymir_detections  # noqa: E402
from ymir_mining import cald_scores, entropy_scores, js_divergence  # noqa: E402

CLASS_NAMES = ["blue", "green", "red"]
TOY_MODEL = "tests.tools.ymir_toy_detector.ToyBrightnessDetector"


def _square(color_bgr: tuple[int, int, int], size: int = 96) -> np.ndarray:
    image = np.zeros((size, size + 16, 3), np.uint8)
    image[24:72, 30:80] = color_bgr
    return image


def _noise(size: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size + 16, 3), np.uint8)
    sparse = rng.random((size, size + 16)) < 0.01
    image[sparse] = rng.integers(140, 230, size=(int(sparse.sum()), 3))
    return image


def _save_bgr(path: str, image: np.ndarray) -> str:
    Image.fromarray(image[:, :, ::-1]).save(path)
    return path


class Tree:
    """A YMIR /in and /out tree under ``tmp_path``."""

    def __init__(self, tmp_path, *, protocol_version: str | None = "1.0.0", **flags: bool) -> None:
        self.root = tmp_path
        self.inp, self.out = tmp_path / "in", tmp_path / "out"
        for d in ("assets", "annotations", "models"):
            (self.inp / d).mkdir(parents=True, exist_ok=True)
        self.out.mkdir(exist_ok=True)
        env = {
            "task_id": "t0001",
            "run_training": flags.get("run_training", False),
            "run_mining": flags.get("run_mining", False),
            "run_infer": flags.get("run_infer", False),
            "input": {
                "root_dir": str(self.inp),
                "assets_dir": "assets",
                "annotations_dir": "annotations",
                "models_dir": "models",
                "training_index_file": "train-index.tsv",
                "val_index_file": "val-index.tsv",
                "candidate_index_file": "candidate-index.tsv",
                "config_file": "config.yaml",
            },
            "output": {
                "root_dir": str(self.out),
                "models_dir": "models",
                "tensorboard_dir": "tensorboard",
                "training_result_file": "models/result.yaml",
                "mining_result_file": "result.tsv",
                "infer_result_file": "infer-result.json",
                "monitor_file": "monitor.txt",
            },
        }
        if protocol_version is not None:
            env["protocol_version"] = protocol_version
        self.env_file = str(self.inp / "env.yaml")
        with open(self.env_file, "w") as f:
            yaml.safe_dump(env, f)

    def config(self, **values) -> None:
        with open(self.inp / "config.yaml", "w") as f:
            yaml.safe_dump({"class_names": CLASS_NAMES, "gpu_id": "", "task_id": "t0001", **values}, f)

    def asset(self, name: str, image: np.ndarray, boxes: list[str] | None = None) -> tuple[str, str]:
        image_path = _save_bgr(str(self.inp / "assets" / f"{name}.png"), image)
        if boxes is None:
            return image_path, ""
        ann = self.inp / "annotations" / f"{name}.txt"
        ann.write_text("".join(line + "\n" for line in boxes))
        return image_path, str(ann)

    def index(self, name: str, entries: list[tuple[str, str]]) -> None:
        lines = [f"{image}\t{ann}" if ann else image for image, ann in entries]
        (self.inp / name).write_text("\n".join(lines) + "\n")

    def toy_model(self) -> None:
        """A 'trained' model in /in/models: the toy detector's weights and its resolved config."""
        cfg = {
            "model": {"_target_": TOY_MODEL, "threshold": 150.0},
            "dataloader": {
                "test": {
                    "mapper": {
                        "augmentations": [
                            {
                                "_target_": "libdet.data.transforms.ResizeShortestEdge",
                                "short_edge_length": 96,
                                "max_size": 200,
                            }
                        ],
                        "image_format": "BGR",
                    }
                }
            },
            "ymir": {"class_names": CLASS_NAMES},
        }
        with open(self.inp / "models" / "config.yaml", "w") as f:
            yaml.safe_dump(cfg, f)
        torch.save({"model": {"threshold": torch.tensor(150.0)}}, self.inp / "models" / "last.pth")

    def run(self) -> int:
        return start.main(self.env_file)

    def monitor(self) -> list[str]:
        return (self.out / "monitor.txt").read_text().rstrip("\n").split("\t")


def test_env_file_from_environment_variable_and_relative_paths(tmp_path, monkeypatch):
    tree = Tree(tmp_path)
    monkeypatch.setenv("DEFAULT_ENV_FILE_PATH", tree.env_file)
    env = protocol.load_env()
    assert env.task_id == "t0001" and env.protocol_version == "1.0.0"
    assert env.input.training_index_file == str(tree.inp / "train-index.tsv")
    assert env.output.training_result_file == str(tree.out / "models" / "result.yaml")


def test_env_file_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("task_id: x\ninput: {root_dir: /in, assets: a}\n")
    with pytest.raises(protocol.YmirError, match=r"env.yaml.*'assets'") as info:
        protocol.load_env(str(path))
    assert info.value.return_code == protocol.ReturnCode.CONFIG
    with pytest.raises(protocol.YmirError, match="Cannot read the YMIR env file"):
        protocol.load_env(str(tmp_path / "missing.yaml"))


def test_monitor_line_and_mining_infer_halves(tmp_path):
    tree = Tree(tmp_path, run_mining=True, run_infer=True)
    monitor = protocol.Monitor(protocol.load_env(tree.env_file))
    assert monitor.progress("mining", 1.0) == 0.5
    task_id, stamp, percent, state, code = tree.monitor()
    assert (task_id, percent, state, code) == ("t0001", "0.50", "2", "0")
    assert abs(float(stamp) - __import__("time").time()) < 60
    assert monitor.progress("infer", 0.5) == 0.75
    monitor.error(protocol.ReturnCode.IMAGE, 0.75)
    assert tree.monitor()[2:] == ["0.75", "4", "300003"]


@pytest.mark.parametrize(
    "protocol_version, ymir_version, stage_format",
    [(None, None, False), (None, "1.2.0", True), ("0.9.0", None, False), ("1.0.0", None, True)],
)
def test_result_yaml_format(tmp_path, monkeypatch, protocol_version, ymir_version, stage_format):
    if ymir_version is None:
        monkeypatch.delenv("YMIR_VERSION", raising=False)
    else:
        monkeypatch.setenv("YMIR_VERSION", ymir_version)
    tree = Tree(tmp_path, protocol_version=protocol_version)
    env = protocol.load_env(tree.env_file)
    (tree.out / "models").mkdir()
    for name in ("a.pth", "b.pth", "config.yaml"):
        (tree.out / "models" / name).write_bytes(b"x")
    protocol.write_model_stage(env, "iter_100", ["a.pth", "config.yaml"], {"mAP": 0.4})
    protocol.write_model_stage(env, "last", ["b.pth", "config.yaml"], {"mAP": 0.3, "maskAP": 0.2})
    result = yaml.safe_load((tree.out / "models" / "result.yaml").read_text())
    if stage_format:
        assert result["best_stage_name"] == "iter_100" and result["map"] == pytest.approx(0.4)
        assert set(result["model_stages"]) == {"iter_100", "last"}
        last = result["model_stages"]["last"]
        assert last["files"] == ["b.pth", "config.yaml"] and last["maskAP"] == pytest.approx(0.2)
        assert isinstance(last["timestamp"], int)
    else:
        assert result == {"model": ["b.pth", "config.yaml"], "map": pytest.approx(0.3), "maskAP": pytest.approx(0.2)}


def test_at_most_eleven_stages_and_the_best_is_kept(tmp_path):
    tree = Tree(tmp_path)
    env = protocol.load_env(tree.env_file)
    (tree.out / "models").mkdir()
    (tree.out / "models" / "w.pth").write_bytes(b"x")
    for i in range(15):
        protocol.write_model_stage(env, f"iter_{i}", ["w.pth"], {"mAP": 0.9 if i == 1 else 0.1})
    stages = yaml.safe_load((tree.out / "models" / "result.yaml").read_text())["model_stages"]
    assert len(stages) == 11
    assert set(stages) == {"iter_1"} | {f"iter_{i}" for i in range(5, 15)}
    with pytest.raises(ValueError, match="identifiers"):
        protocol.write_model_stage(env, "1st", ["w.pth"], {"mAP": 0.1})


def test_dataset_errors_name_the_file_and_line(tmp_path):
    tree = Tree(tmp_path)
    good = tree.asset("good", _square((0, 0, 255)), ["2,30,24,80,72"])
    bad_class = tree.asset("bad_class", _square((0, 0, 255)), ["0,1,1,5,5", "3,30,24,80,72"])
    tree.index("train-index.tsv", [good])
    dicts = load_ymir_detections(str(tree.inp / "train-index.tsv"), CLASS_NAMES)
    assert dicts[0]["annotations"][0]["category_id"] == 2 and dicts[0]["height"] == 96
    tree.index("train-index.tsv", [good, bad_class])
    with pytest.raises(protocol.YmirError, match=r"bad_class.txt:2: class id 3 is outside the 3 class_names") as e:
        load_ymir_detections(str(tree.inp / "train-index.tsv"), CLASS_NAMES)
    assert e.value.return_code == protocol.ReturnCode.DATASET
    broken = tree.inp / "assets" / "broken.png"
    broken.write_bytes(b"not a png")
    tree.index("train-index.tsv", [(str(broken), good[1])])
    with pytest.raises(protocol.YmirError, match="broken.png") as e:
        load_ymir_detections(str(tree.inp / "train-index.tsv"), CLASS_NAMES)
    assert e.value.return_code == protocol.ReturnCode.IMAGE


def test_js_divergence_is_the_real_divergence_between_class_distributions():
    from scipy.spatial.distance import jensenshannon

    p = torch.tensor([[0.7, 0.0, 0.3], [0.2, 0.5, 0.3], [0.5, 0.0, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.5, 0.3], [0.0, 0.5, 0.5]], dtype=torch.float64)
    expected = [jensenshannon(a, b) ** 2 for a, b in zip(p.numpy(), q.numpy())]
    assert js_divergence(p, q).tolist() == pytest.approx(expected, abs=1e-12)
    assert float(js_divergence(p[:1], q[:1])) > 0.3  # distributions, not scalars: different classes differ
    assert float(js_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))) == pytest.approx(math.log(2))


def _toy_predictor(threshold: float = 150.0):
    from libdet.engine import BatchPredictor
    from tests.tools.ymir_toy_detector import ToyBrightnessDetector

    predictor = BatchPredictor(ToyBrightnessDetector(threshold=threshold), min_size_test=96, max_size_test=200)
    return lambda images: [out["instances"] for out in predictor(list(images))]


def test_cald_ranks_an_ambiguous_image_above_a_clean_one():
    clean, ambiguous = _square((0, 0, 255)), _noise()
    scores = cald_scores(_toy_predictor(), [clean, ambiguous], score_threshold=0.0)
    assert scores[0] < 0.1, scores  # a solid square is found again, with the same class, under every augmentation
    assert scores[1] > scores[0] + 0.2, scores
    entropy = entropy_scores(_toy_predictor(), [clean, ambiguous])
    assert entropy[1] > entropy[0]


def test_infer_writes_correct_class_names(tmp_path):
    tree = Tree(tmp_path, run_infer=True)
    tree.config(model_params_path=["last.pth", "config.yaml"], conf_threshold=0.5)
    red, green = tree.asset("red", _square((0, 0, 255))), tree.asset("green", _square((0, 255, 0)))
    tree.index("candidate-index.tsv", [red, green])
    tree.toy_model()
    assert tree.run() == 0
    detections = json.loads((tree.out / "infer-result.json").read_text())["detection"]
    # class ids are 0-based on both sides: red is class 2 -> "red" (an off-by-one would say "green")
    assert [b["class_name"] for b in detections["red.png"]["boxes"]] == ["red"]
    assert [b["class_name"] for b in detections["green.png"]["boxes"]] == ["green"]
    box = detections["red.png"]["boxes"][0]["box"]
    assert box == {"x": 30, "y": 24, "w": 50, "h": 48}
    assert tree.monitor()[2:] == ["1.00", "2", "0"]


def test_infer_result_key_before_protocol_1(tmp_path):
    tree = Tree(tmp_path, protocol_version=None, run_infer=True)
    tree.config(model_params_path=["last.pth", "config.yaml"])
    tree.index("candidate-index.tsv", [tree.asset("red", _square((0, 0, 255)))])
    tree.toy_model()
    assert tree.run() == 0
    assert "annotations" in json.loads((tree.out / "infer-result.json").read_text())["detection"]["red.png"]


def test_mining_then_infer_in_one_run(tmp_path):
    tree = Tree(tmp_path, run_mining=True, run_infer=True)
    tree.config(model_params_path=["last.pth", "config.yaml"], mining_algorithm="cald", conf_threshold=0.0)
    clean, ambiguous = tree.asset("clean", _square((0, 0, 255))), tree.asset("ambiguous", _noise())
    tree.index("candidate-index.tsv", [clean, ambiguous])
    tree.toy_model()
    seen = []
    original = protocol.Monitor._write
    protocol.Monitor._write = lambda self, p, s, c: (seen.append(p), original(self, p, s, c))[1]
    try:
        assert tree.run() == 0
    finally:
        protocol.Monitor._write = original
    ranked = [line.split("\t")[0] for line in (tree.out / "result.tsv").read_text().splitlines()]
    assert ranked == [ambiguous[0], clean[0]]
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert max(p for p in seen if p <= 0.5) == 0.5 and any(0.5 < p < 1.0 for p in seen)
    assert (tree.out / "infer-result.json").is_file()


@pytest.mark.parametrize("case", ["missing_index", "unreadable_image", "unknown_algorithm", "missing_model"])
def test_bad_inputs_end_in_the_error_state(tmp_path, case, caplog):
    tree = Tree(tmp_path, run_mining=True)
    config = {"model_params_path": ["last.pth", "config.yaml"], "mining_algorithm": "entropy"}
    red = tree.asset("red", _square((0, 0, 255)))
    tree.index("candidate-index.tsv", [red])
    tree.toy_model()
    if case == "missing_index":
        os.remove(tree.inp / "candidate-index.tsv")
        expected, culprit = protocol.ReturnCode.DATASET, "candidate-index.tsv"
    elif case == "unreadable_image":
        broken = tree.inp / "assets" / "broken.png"
        broken.write_bytes(b"\x89PNG garbage")
        tree.index("candidate-index.tsv", [red, (str(broken), "")])
        expected, culprit = protocol.ReturnCode.IMAGE, "broken.png"
    elif case == "unknown_algorithm":
        config["mining_algorithm"] = "magic"
        expected, culprit = protocol.ReturnCode.CONFIG, "magic"
    else:
        os.remove(tree.inp / "models" / "last.pth")
        expected, culprit = protocol.ReturnCode.MODEL, "last.pth"
    tree.config(**config)
    assert tree.run() == 1
    assert tree.monitor()[3:] == ["4", str(int(expected))]
    assert culprit in caplog.text


def _training_tree(tmp_path, *, protocol_version, class_id: int = 2, max_iter: int = 4):
    tree = Tree(tmp_path, protocol_version=protocol_version, run_training=True)
    colors = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}
    train = [tree.asset(f"t{i}", _square(colors[i % 3]), [f"{i % 3},30,24,80,72"]) for i in range(3)]
    train.append(tree.asset("bad", _square((0, 0, 255)), [f"{class_id},30,24,80,72"]))
    tree.index("train-index.tsv", train)
    tree.index("val-index.tsv", train[:2])
    small = [
        "model.backbone.out_channels=32",
        "model.roi_heads.mask_in_features=null",
        "model.roi_heads.mask_pooler=null",
        "model.roi_heads.mask_head=null",
        "dataloader.train.mapper.use_instance_mask=False",
        "+dataloader.evaluator.tasks=[bbox]",
        "train.checkpointer.period=1000",
        "train.amp.enabled=False",
        "train.init_checkpoint=''",
    ]
    tree.config(
        config_file="configs/shapes/mask_rcnn_r18_cpu.py",
        batch_size=2,
        max_iter=max_iter,
        learning_rate=0.001,
        num_workers=0,
        eval_period=2,
        args_options=" ".join(small),
    )
    return tree


@pytest.mark.slow
@pytest.mark.parametrize("protocol_version", [None, "1.0.0"])
def test_training_writes_weights_stages_and_a_full_monitor(tmp_path, monkeypatch, protocol_version):
    monkeypatch.delenv("YMIR_VERSION", raising=False)
    tree = _training_tree(tmp_path, protocol_version=protocol_version)
    assert tree.run() == 0, (tree.out / "monitor.txt").read_text()
    assert tree.monitor()[2:] == ["1.00", "2", "0"]
    result = yaml.safe_load((tree.out / "models" / "result.yaml").read_text())
    if protocol_version is None:
        assert result["model"] == ["last.pth", "config.yaml"] and 0.0 <= result["map"] <= 1.0
    else:
        assert set(result["model_stages"]) == {"iter_2", "last"}
        assert result["best_stage_name"] in result["model_stages"]
    assert (tree.out / "models" / "last.pth").is_file()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tree.out / "tensorboard"))
    saved = yaml.safe_load((tree.out / "models" / "config.yaml").read_text())
    assert saved["ymir"]["class_names"] == CLASS_NAMES and saved["model"]["roi_heads"]["num_classes"] == 3

    # the trained stage is all that infer needs
    infer = Tree(tmp_path / "infer", run_infer=True)
    for name in ("last.pth", "config.yaml"):
        (infer.inp / "models" / name).write_bytes((tree.out / "models" / name).read_bytes())
    infer.config(model_params_path=["last.pth", "config.yaml"], conf_threshold=0.0)
    infer.index("candidate-index.tsv", [infer.asset("red", _square((0, 0, 255)))])
    assert infer.run() == 0
    assert "red.png" in json.loads((infer.out / "infer-result.json").read_text())["detection"]


def test_training_rejects_an_annotation_with_a_class_out_of_range(tmp_path, caplog):
    tree = _training_tree(tmp_path, protocol_version="1.0.0", class_id=7)
    assert tree.run() == 1
    assert tree.monitor()[3:] == ["4", str(int(protocol.ReturnCode.DATASET))]
    assert "bad.txt:1: class id 7" in caplog.text
