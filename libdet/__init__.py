"""libdet: object detection and segmentation in PyTorch, detectron2-compatible.

Public sub-packages mirror detectron2's (``libdet.config``, ``libdet.structures``, ``libdet.layers``,
...), so porting code is a rename of ``detectron2`` to ``libdet``. Importing ``libdet`` is cheap: it
imports no sub-package and never compiles anything.
"""

__version__ = "0.1.0"
