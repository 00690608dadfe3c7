"""Logging set-up (rank-aware, coloured terminal output, log files) and rate-limited log calls."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sys
import time
from collections import Counter
from typing import Any

from tabulate import tabulate
from termcolor import colored

from .file_io import PathManager

__all__ = ["setup_logger", "log_first_n", "log_every_n", "log_every_n_seconds", "create_small_table"]

_FILE_FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"


class _ColorfulFormatter(logging.Formatter):
    """Green timestamp and abbreviated logger name; warnings and errors flagged in colour."""

    def __init__(self, *args: Any, root_name: str, abbrev_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._root_name = root_name
        self._abbrev_name = abbrev_name

    def formatMessage(self, record: logging.LogRecord) -> str:
        name = record.name
        if name == self._root_name or name.startswith(self._root_name + "."):
            name = self._abbrev_name + name[len(self._root_name) :]
        # Format a copy: the record is shared with other handlers (the log file keeps full names).
        record = logging.makeLogRecord({**record.__dict__, "name": name})
        log = super().formatMessage(record)
        if record.levelno == logging.WARNING:
            prefix = colored("WARNING", "red", attrs=["blink"])
        elif record.levelno in (logging.ERROR, logging.CRITICAL):
            prefix = colored("ERROR", "red", attrs=["blink", "underline"])
        else:
            return log
        return prefix + " " + log


@functools.lru_cache  # the same call twice must not add handlers twice
def setup_logger(
    output: str | None = None,
    distributed_rank: int = 0,
    *,
    color: bool = True,
    name: str = "libdet",
    abbrev_name: str | None = None,
    enable_propagation: bool = False,
    configure_stdout: bool = True,
) -> logging.Logger:
    """Configure and return the logger ``name``.

    Args:
        output: a file (``*.txt`` / ``*.log``) or a directory (``<dir>/log.txt``) to log to; processes
            of rank > 0 write to ``<file>.rank<N>``. ``None``: no file.
        distributed_rank: rank of this process; only rank 0 logs to the terminal.
        color: colour terminal output (only when stdout is a terminal-like stream).
        name: the logger to configure (``"libdet"`` covers the library).
        abbrev_name: short name shown in terminal output instead of ``name`` (default ``"ld"`` for libdet).
        enable_propagation: also pass records to the parent (root) logger.
        configure_stdout: add the terminal handler.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = enable_propagation
    if abbrev_name is None:
        abbrev_name = "ld" if name == "libdet" else name
    plain = logging.Formatter(_FILE_FORMAT, datefmt=_DATE_FORMAT)
    if configure_stdout and distributed_rank == 0:
        handler = logging.StreamHandler(stream=sys.stdout)
        handler.setLevel(logging.DEBUG)
        if color:
            handler.setFormatter(
                _ColorfulFormatter(
                    colored("[%(asctime)s %(name)s]: ", "green") + "%(message)s",
                    datefmt=_DATE_FORMAT,
                    root_name=name,
                    abbrev_name=str(abbrev_name),
                )
            )
        else:
            handler.setFormatter(plain)
        logger.addHandler(handler)
    if output is not None:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = f"{filename}.rank{distributed_rank}"
        PathManager.mkdirs(os.path.dirname(filename) or ".")
        handler = logging.StreamHandler(_cached_log_stream(filename))
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(plain)
        logger.addHandler(handler)
    return logger


@functools.cache
def _cached_log_stream(filename: str):
    # One append-mode stream per file for the whole process, closed at exit.
    stream = PathManager.open(filename, "a", buffering=1024 if "://" in filename else -1)
    atexit.register(stream.close)
    return stream


def _find_caller() -> tuple[str, tuple[str, int, str]]:
    """The module name and (file, line, function) key of the first frame outside this file."""
    frame = sys._getframe(2)
    this_file = os.path.normcase(__file__)
    while frame:
        code = frame.f_code
        if os.path.normcase(code.co_filename) != this_file:
            module_name = frame.f_globals.get("__name__", "__main__")
            if module_name == "__main__":
                module_name = "libdet"
            return module_name, (code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return "libdet", ("", 0, "")


_LOG_COUNTER: Counter = Counter()
_LOG_TIMER: dict[Any, float] = {}


def log_first_n(lvl: int, msg: str, n: int = 1, *, name: str | None = None, key: str | tuple = "caller") -> None:
    """Log ``msg`` only the first ``n`` times.

    Args:
        key: what counts as "the same" message: ``"caller"`` (the calling line), ``"message"``, or both
            as ``("caller", "message")``.
    """
    keys = (key,) if isinstance(key, str) else key
    if not keys or not set(keys) <= {"caller", "message"}:
        raise ValueError(f"log_first_n: key must be 'caller', 'message' or both, got {key!r}.")
    caller_module, caller_key = _find_caller()
    hash_key: tuple = ()
    if "caller" in keys:
        hash_key = hash_key + caller_key
    if "message" in keys:
        hash_key = hash_key + (msg,)
    _LOG_COUNTER[hash_key] += 1
    if _LOG_COUNTER[hash_key] <= n:
        logging.getLogger(name or caller_module).log(lvl, msg)


def log_every_n(lvl: int, msg: str, n: int = 1, *, name: str | None = None) -> None:
    """Log ``msg`` once every ``n`` calls from the same line."""
    caller_module, key = _find_caller()
    _LOG_COUNTER[key] += 1
    if n == 1 or _LOG_COUNTER[key] % n == 1:
        logging.getLogger(name or caller_module).log(lvl, msg)


def log_every_n_seconds(lvl: int, msg: str, n: float = 1, *, name: str | None = None) -> None:
    """Log ``msg`` from the same line at most once every ``n`` seconds."""
    caller_module, key = _find_caller()
    last = _LOG_TIMER.get(key)
    now = time.monotonic()
    if last is None or now - last >= n:
        logging.getLogger(name or caller_module).log(lvl, msg)
        _LOG_TIMER[key] = now


def create_small_table(small_dict: dict[str, Any]) -> str:
    """A one-row table (keys as header) in pipe format, e.g. for a few metrics."""
    keys, values = tuple(zip(*small_dict.items())) if small_dict else ((), ())
    return tabulate([values], headers=keys, tablefmt="pipe", floatfmt=".3f", stralign="center", numalign="center")
