"""Utilities shared by every part of libdet (file I/O, logging, distributed helpers, environment)."""
