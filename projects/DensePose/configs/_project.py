"""Puts ``projects/DensePose`` on ``sys.path``, so that the configs here (and ``instantiate`` of them, in every process
the trainer launches, since each one loads the config) can import the ``densepose`` package without installing it.

Configs import it first (``from ._project import PROJECT_ROOT``). Defines no model: it is not a training config.
"""

import os
import sys

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_ROOT not in sys.path:
    sys.path.insert(0, PROJECT_ROOT)
