"""Fixed metadata of the built-in datasets: COCO things and person keypoints, Cityscapes and Pascal VOC classes.

Only lists that are part of the datasets' definitions live here. Category lists that are long and must be
exactly right (COCO panoptic's 133 categories, LVIS's 1203, ADE20K's 150) are read from the datasets' own
annotation files when they are loaded (see ``coco_panoptic.py``, ``lvis.py``, ``builtin.py``).

Category ids and names of COCO instances are those of the official ``instances_*.json``; the colours are the
ones detectron2 uses for visualization, so visualizations look the same.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "COCO_CATEGORIES",
    "COCO_PERSON_KEYPOINT_NAMES",
    "COCO_PERSON_KEYPOINT_FLIP_MAP",
    "KEYPOINT_CONNECTION_RULES",
    "CITYSCAPES_THING_CLASSES",
    "CITYSCAPES_STUFF_CLASSES",
    "CITYSCAPES_STUFF_COLORS",
    "PASCAL_VOC_CLASSES",
    "get_builtin_metadata",
]

# (COCO category id, name, RGB colour)
_COCO = [
    (1, "person", (220, 20, 60)),
    (2, "bicycle", (119, 11, 32)),
    (3, "car", (0, 0, 142)),
    (4, "motorcycle", (0, 0, 230)),
    (5, "airplane", (106, 0, 228)),
    (6, "bus", (0, 60, 100)),
    (7, "train", (0, 80, 100)),
    (8, "truck", (0, 0, 70)),
    (9, "boat", (0, 0, 192)),
    (10, "traffic light", (250, 170, 30)),
    (11, "fire hydrant", (100, 170, 30)),
    (13, "stop sign", (220, 220, 0)),
    (14, "parking meter", (175, 116, 175)),
    (15, "bench", (250, 0, 30)),
    (16, "bird", (165, 42, 42)),
    (17, "cat", (255, 77, 255)),
    (18, "dog", (0, 226, 252)),
    (19, "horse", (182, 182, 255)),
    (20, "sheep", (0, 82, 0)),
    (21, "cow", (120, 166, 157)),
    (22, "elephant", (110, 76, 0)),
    (23, "bear", (174, 57, 255)),
    (24, "zebra", (199, 100, 0)),
    (25, "giraffe", (72, 0, 118)),
    (27, "backpack", (255, 179, 240)),
    (28, "umbrella", (0, 125, 92)),
    (31, "handbag", (209, 0, 151)),
    (32, "tie", (188, 208, 182)),
    (33, "suitcase", (0, 220, 176)),
    (34, "frisbee", (255, 99, 164)),
    (35, "skis", (92, 0, 73)),
    (36, "snowboard", (133, 129, 255)),
    (37, "sports ball", (78, 180, 255)),
    (38, "kite", (0, 228, 0)),
    (39, "baseball bat", (174, 255, 243)),
    (40, "baseball glove", (45, 89, 255)),
    (41, "skateboard", (134, 134, 103)),
    (42, "surfboard", (145, 148, 174)),
    (43, "tennis racket", (255, 208, 186)),
    (44, "bottle", (197, 226, 255)),
    (46, "wine glass", (171, 134, 1)),
    (47, "cup", (109, 63, 54)),
    (48, "fork", (207, 138, 255)),
    (49, "knife", (151, 0, 95)),
    (50, "spoon", (9, 80, 61)),
    (51, "bowl", (84, 105, 51)),
    (52, "banana", (74, 65, 105)),
    (53, "apple", (166, 196, 102)),
    (54, "sandwich", (208, 195, 210)),
    (55, "orange", (255, 109, 65)),
    (56, "broccoli", (0, 143, 149)),
    (57, "carrot", (179, 0, 194)),
    (58, "hot dog", (209, 99, 106)),
    (59, "pizza", (5, 121, 0)),
    (60, "donut", (227, 255, 205)),
    (61, "cake", (147, 186, 208)),
    (62, "chair", (153, 69, 1)),
    (63, "couch", (3, 95, 161)),
    (64, "potted plant", (163, 255, 0)),
    (65, "bed", (119, 0, 170)),
    (67, "dining table", (0, 182, 199)),
    (70, "toilet", (0, 165, 120)),
    (72, "tv", (183, 130, 88)),
    (73, "laptop", (95, 32, 0)),
    (74, "mouse", (130, 114, 135)),
    (75, "remote", (110, 129, 133)),
    (76, "keyboard", (166, 74, 118)),
    (77, "cell phone", (219, 142, 185)),
    (78, "microwave", (79, 210, 114)),
    (79, "oven", (178, 90, 62)),
    (80, "toaster", (65, 70, 15)),
    (81, "sink", (127, 167, 115)),
    (82, "refrigerator", (59, 105, 106)),
    (84, "book", (142, 108, 45)),
    (85, "clock", (196, 172, 0)),
    (86, "vase", (95, 54, 80)),
    (87, "scissors", (128, 76, 255)),
    (88, "teddy bear", (201, 57, 1)),
    (89, "hair drier", (246, 0, 122)),
    (90, "toothbrush", (191, 162, 208)),
]

#: COCO's 80 thing categories: ``{"id", "name", "color", "isthing": 1}``, sorted by id.
COCO_CATEGORIES: list[dict[str, Any]] = [{"id": i, "name": n, "color": list(c), "isthing": 1} for i, n, c in _COCO]

#: The 17 COCO person keypoints, in annotation order.
COCO_PERSON_KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

#: Pairs of keypoints swapped by a horizontal flip.
COCO_PERSON_KEYPOINT_FLIP_MAP = tuple(
    (f"left_{part}", f"right_{part}") for part in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
)

#: (keypoint, keypoint, RGB colour) lines drawn by the visualizer for COCO persons.
KEYPOINT_CONNECTION_RULES = [
    ("left_ear", "left_eye", (102, 204, 255)),
    ("right_ear", "right_eye", (51, 153, 255)),
    ("left_eye", "nose", (102, 0, 204)),
    ("nose", "right_eye", (51, 102, 255)),
    ("left_shoulder", "right_shoulder", (255, 128, 0)),
    ("left_shoulder", "left_elbow", (153, 255, 204)),
    ("right_shoulder", "right_elbow", (128, 229, 255)),
    ("left_elbow", "left_wrist", (153, 255, 153)),
    ("right_elbow", "right_wrist", (102, 255, 224)),
    ("left_hip", "right_hip", (255, 102, 0)),
    ("left_hip", "left_knee", (255, 255, 77)),
    ("right_hip", "right_knee", (153, 255, 204)),
    ("left_knee", "left_ankle", (191, 255, 128)),
    ("right_knee", "right_ankle", (255, 195, 77)),
]

#: Cityscapes classes with instances, in train-id order.
CITYSCAPES_THING_CLASSES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")

#: The 19 Cityscapes evaluation classes, indexed by train id.
CITYSCAPES_STUFF_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

#: Official Cityscapes colours of the 19 evaluation classes, indexed by train id.
CITYSCAPES_STUFF_COLORS = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)

#: The 20 Pascal VOC classes, in the order of the official devkit.
PASCAL_VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _coco_instances_meta() -> dict[str, Any]:
    ids = [c["id"] for c in COCO_CATEGORIES]
    return {
        "thing_dataset_id_to_contiguous_id": {cid: i for i, cid in enumerate(ids)},
        "thing_classes": [c["name"] for c in COCO_CATEGORIES],
        "thing_colors": [c["color"] for c in COCO_CATEGORIES],
    }


def get_builtin_metadata(dataset_name: str) -> dict[str, Any]:
    """Fixed metadata of a family of built-in datasets.

    Args:
        dataset_name: ``"coco"`` (80 things, ids, colours), ``"coco_person"`` (person keypoints),
            ``"cityscapes"`` (thing and stuff classes) or ``"pascal_voc"``.
    """
    if dataset_name == "coco":
        return _coco_instances_meta()
    if dataset_name == "coco_person":
        return {
            "thing_classes": ["person"],
            "thing_dataset_id_to_contiguous_id": {1: 0},
            "thing_colors": [COCO_CATEGORIES[0]["color"]],
            "keypoint_names": list(COCO_PERSON_KEYPOINT_NAMES),
            "keypoint_flip_map": [list(p) for p in COCO_PERSON_KEYPOINT_FLIP_MAP],
            "keypoint_connection_rules": list(KEYPOINT_CONNECTION_RULES),
        }
    if dataset_name == "cityscapes":
        return {
            "thing_classes": list(CITYSCAPES_THING_CLASSES),
            "stuff_classes": list(CITYSCAPES_STUFF_CLASSES),
            "stuff_colors": [list(c) for c in CITYSCAPES_STUFF_COLORS],
        }
    if dataset_name == "pascal_voc":
        return {"thing_classes": list(PASCAL_VOC_CLASSES)}
    raise KeyError(
        f"No built-in metadata for {dataset_name!r}; known: 'coco', 'coco_person', 'cityscapes', 'pascal_voc'."
    )
