#!/usr/bin/env python
"""Plot the curves of a training run's ``metrics.json`` into one PNG.

``metrics.json`` holds JSON lines, one dict per logged iteration (``iteration``, ``total_loss``, ``loss_*``,
``lr``, ``bbox/AP``, ...). Each ``--keys`` pattern (shell-style, e.g. ``loss_*`` or ``*/AP``) becomes one
panel holding every key it matches. Lines lacking a key simply have no point for it (evaluation metrics
are logged only every few thousand iterations). When a run was resumed, iterations logged again replace the
earlier entries from that iteration on.

Examples::

    python tools/plot_metrics.py output/metrics.json -o curves.png
    python tools/plot_metrics.py output/ --keys total_loss "loss_*" lr "bbox/AP*" --smooth 20 --log-y lr
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import sys
from collections.abc import Sequence

DEFAULT_KEYS = ["total_loss", "loss_*", "lr", "*/AP"]


def load_metrics(path: str) -> list[dict]:
    """Read a metrics file of JSON lines (or the ``metrics.json`` inside directory ``path``).

    Returns:
        the records in file order; blank lines are skipped.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: on a line that is not a JSON object, naming the file and line number.
    """
    from libdet.utils.file_io import PathManager

    if PathManager.isdir(path):
        path = os.path.join(path, "metrics.json")
    if not PathManager.exists(path):
        raise FileNotFoundError(f"plot_metrics: metrics file {path!r} does not exist.")
    records = []
    with PathManager.open(path, "r") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.pos + 1}).") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(rec).__name__}.")
            records.append(rec)
    return records


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def select_keys(records: Sequence[dict], patterns: Sequence[str], x_key: str = "iteration") -> dict[str, list[str]]:
    """Map each pattern to the sorted numeric keys it matches (``x_key`` excluded); patterns matching
    nothing map to an empty list."""
    keys = sorted({k for r in records for k, v in r.items() if _is_number(v) and k != x_key})
    return {p: [k for k in keys if fnmatch.fnmatchcase(k, p)] for p in patterns}


def series(records: Sequence[dict], key: str, x_key: str = "iteration") -> tuple[list[float], list[float]]:
    """The ``(x, y)`` points of ``key``, from records holding both ``x_key`` and a finite number for ``key``.

    A record whose ``x_key`` is not larger than the previous one's starts a resumed run: points from that
    ``x`` on are dropped before it is added.
    """
    xs: list[float] = []
    ys: list[float] = []
    for r in records:
        x, y = r.get(x_key), r.get(key)
        if not _is_number(x) or not _is_number(y):
            continue
        while xs and xs[-1] >= x:
            xs.pop()
            ys.pop()
        xs.append(x)
        ys.append(y)
    return xs, ys


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` points (``window <= 1``: unchanged)."""
    if window <= 1:
        return list(values)
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_metrics(
    records: Sequence[dict],
    output: str,
    patterns: Sequence[str] = DEFAULT_KEYS,
    x_key: str = "iteration",
    smooth_window: int = 1,
    log_y: Sequence[str] = (),
    title: str | None = None,
) -> dict[str, list[str]]:
    """Draw one panel per pattern that matches something and save the figure as ``output`` (PNG).

    Args:
        records: metric dicts (see :func:`load_metrics`).
        output: image path; its extension picks the format.
        patterns: shell-style key patterns, one panel each.
        x_key: the key used as x axis.
        smooth_window: moving-average window applied to every curve.
        log_y: patterns whose panel gets a logarithmic y axis.
        title: figure title.

    Returns:
        the keys plotted per pattern (patterns that matched nothing are left out).

    Raises:
        ValueError: when no pattern matches any key; the message lists the keys available.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from libdet.utils.file_io import atomic_write

    matched = {p: ks for p, ks in select_keys(records, patterns, x_key).items() if ks}
    if not matched:
        available = sorted({k for r in records for k, v in r.items() if _is_number(v) and k != x_key})
        raise ValueError(f"plot_metrics: no key matches {list(patterns)}; numeric keys are {available}.")
    fig = Figure(figsize=(8, 3 * len(matched)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(matched), 1, squeeze=False)[:, 0]
    for ax, (pattern, keys) in zip(axes, matched.items()):
        for key in keys:
            xs, ys = series(records, key, x_key)
            marker = "o" if len(xs) < 20 else None  # sparse metrics (evaluations) are easier to read as dots
            ax.plot(xs, smooth(ys, smooth_window), label=key, marker=marker, markersize=3, linewidth=1.2)
        ax.set_title(pattern, fontsize=10)
        ax.set_xlabel(x_key)
        ax.grid(True, alpha=0.3)
        if pattern in log_y:
            ax.set_yscale("log")
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    ext = os.path.splitext(output)[1].lower().lstrip(".") or "png"
    with atomic_write(output, "wb") as f:
        fig.savefig(f, format=ext)
    return matched


def main(argv: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Command line entry point; returns the keys plotted per pattern."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", help="metrics.json (JSON lines) or the output directory holding it")
    parser.add_argument("-o", "--output", default=None, help="PNG to write (default: next to the metrics file)")
    parser.add_argument("--keys", nargs="+", default=DEFAULT_KEYS, help="key patterns, one panel each")
    parser.add_argument("--x", default="iteration", help="key used as x axis")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window")
    parser.add_argument("--log-y", nargs="*", default=[], help="patterns whose panel gets a log y axis")
    args = parser.parse_args(argv)

    records = load_metrics(args.metrics)
    output = args.output
    if output is None:
        base = args.metrics if os.path.isdir(args.metrics) else os.path.dirname(args.metrics)
        output = os.path.join(base, "metrics.png")
    unmatched = [p for p, ks in select_keys(records, args.keys, args.x).items() if not ks]
    for p in unmatched:
        print(f"plot_metrics: no key matches {p!r}; skipped", file=sys.stderr)
    matched = plot_metrics(
        records,
        output,
        args.keys,
        x_key=args.x,
        smooth_window=args.smooth,
        log_y=args.log_y,
        title=os.path.abspath(args.metrics),
    )
    print(f"Wrote {output} ({', '.join(k for ks in matched.values() for k in ks)})")
    return matched


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        sys.exit(str(e))
