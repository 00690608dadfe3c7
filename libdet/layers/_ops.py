"""Lazy loading of libdet's compiled ops (the C++/CUDA sources under ``csrc/``).

Each op lives in its own folder ``csrc/<op>/`` and is compiled on first use as its own extension, so
one op that fails to build never disables another. Nothing is compiled or loaded when this module is
imported: the Python wrappers (``nms.py``, ``rotated_boxes.py``, ``roi_align_rotated.py``) call
:func:`use_kernel` at their first call, which compiles the op (once per source version, cached on
disk) and loads it into ``torch.ops.libdet``. When an op cannot be built (no compiler, compile error,
...) a warning says why, once, and the wrapper uses the op's pure-PyTorch twin instead. ``coco_eval``
(used by ``libdet/evaluation/fast_eval_api.py``) is a CPU-only op whose fallback is pycocotools.

Where sources are looked up: ``libdet/_csrc`` (an installed package), then ``<repo>/csrc`` (a source
checkout or an editable install).

Where builds are cached: ``$LIBDET_OPS_CACHE`` or ``$XDG_CACHE_HOME/libdet/ops`` (default
``~/.cache/libdet/ops``), then ``<torch version>-<cpu|cuXY>/<op>-<hash>``, where the hash covers the
sources, the compiler flags and the Python version, so editing a source rebuilds it.

Environment:
    LIBDET_DISABLE_OPS: ``1`` (or ``all``) uses the twins for every op; a comma-separated list of op
        names (``nms_rotated,roi_align_rotated``) only for those.
    LIBDET_OPS_CACHE: root folder of the build cache.
    MAX_JOBS, CXX, TORCH_CUDA_ARCH_LIST: read by ``torch.utils.cpp_extension`` when compiling.

``python -m libdet.layers._ops`` builds every op and prints their status (exit code 1 if one failed).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["OP_NAMES", "load_op", "has_op", "use_kernel", "ops_status", "main"]

logger = logging.getLogger(__name__)

#: The compiled ops, one extension (and one ``csrc/<name>/`` folder) each.
OP_NAMES: tuple[str, ...] = ("box_iou_rotated", "nms_rotated", "roi_align_rotated", "coco_eval")

# Operators each extension registers under torch.ops.libdet.
_OPERATORS: dict[str, tuple[str, ...]] = {
    "box_iou_rotated": ("box_iou_rotated",),
    "nms_rotated": ("nms_rotated",),
    "roi_align_rotated": ("roi_align_rotated_forward", "roi_align_rotated_backward"),
    "coco_eval": ("coco_eval_decode_masks", "coco_eval_evaluate", "coco_eval_accumulate"),
}

# Ops that have no CUDA sources by design (they work on host data): their status says so instead of
# reporting a missing CUDA build, and their fallback is named in the warning when they cannot be built.
_CPU_ONLY_OPS: frozenset[str] = frozenset({"coco_eval"})
_FALLBACKS: dict[str, str] = {"coco_eval": "pycocotools' Python COCOeval"}


def _extra_cflags(name: str) -> list[str]:
    """Compiler flags of op ``name`` beyond the common ones (part of the build hash).

    Every op compiles at::parallel_for's OpenMP pragma (resolved against torch's own libgomp when the
    library loads; without ``-fopenmp`` the loops would run on one thread). coco_eval reproduces
    pycocotools' float64 arithmetic bit for bit, so it also forbids contracting a*b+c into one fused
    multiply-add (the default of gcc/clang where the target has FMA).
    """
    if os.name == "nt":
        return []
    flags = ["-ffp-contract=off"] if name == "coco_eval" else []
    if sys.platform.startswith("linux"):
        flags.append("-fopenmp")
    return flags


_DISABLE_ENV = "LIBDET_DISABLE_OPS"
_CACHE_ENV = "LIBDET_OPS_CACHE"
_DISABLED_STATUS = f"disabled by {_DISABLE_ENV}"
_NOT_LOADED_STATUS = "not loaded yet"
# Bump to force every cached build to be redone (e.g. after changing how ops are compiled).
_BUILD_RECIPE_VERSION = "1"
_MARKER = "BUILD_OK"
_SOURCE_SUFFIXES = (".h", ".hpp", ".cuh", ".cpp", ".cc", ".cu")


@dataclass(frozen=True)
class _LoadResult:
    ok: bool
    cuda: bool = False  # compiled with the CUDA sources
    reason: str = ""  # why it failed, or why CUDA sources were left out


def _disabled_ops() -> frozenset[str]:
    """Op names that ``LIBDET_DISABLE_OPS`` turns off (read on every call, so tests can monkeypatch it)."""
    value = os.environ.get(_DISABLE_ENV, "").strip()
    if value.lower() in ("", "0", "false", "no", "off"):
        return frozenset()
    if value.lower() in ("1", "true", "yes", "on", "all", "*"):
        return frozenset(OP_NAMES)
    names = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = names - set(OP_NAMES)
    if unknown:
        logger.warning("%s names unknown op(s) %s; known ops: %s", _DISABLE_ENV, sorted(unknown), ", ".join(OP_NAMES))
    return names


def _check_name(name: str) -> None:
    if name not in OP_NAMES:
        raise ValueError(f"Unknown libdet op {name!r}; expected one of {', '.join(OP_NAMES)}.")


def _default_csrc_dirs() -> list[Path]:
    package_root = Path(__file__).resolve().parents[1]  # .../libdet
    return [package_root / "_csrc", package_root.parent / "csrc"]


def _default_cache_root() -> Path:
    if os.environ.get(_CACHE_ENV):
        return Path(os.environ[_CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "libdet" / "ops"


def _cuda_toolkit() -> tuple[bool, str]:
    """Whether the CUDA sources can be compiled here, and if not, why."""
    if not torch.cuda.is_available():
        return False, "no CUDA device available"
    if torch.version.cuda is None:
        return False, "this torch build has no CUDA support"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    return True, ""


def _cuda_arch_key() -> str:
    """What the CUDA code is compiled for: TORCH_CUDA_ARCH_LIST, else the visible GPUs."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    capabilities = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return ";".join(f"{major}.{minor}" for major, minor in sorted(capabilities))


def _pip_cuda_include_flags() -> list[str]:
    """``-isystem`` flags for the CUDA headers of pip's ``nvidia-*`` packages (torch's headers include e.g.
    ``cusparse.h``, which a bare toolkit may lack). nvcc searches them after the toolkit's own headers,
    so they only fill gaps."""
    nvidia = Path(torch.__file__).resolve().parent.parent / "nvidia"
    flags: list[str] = []
    for include in sorted(nvidia.glob("*/include")):
        flags += ["-isystem", str(include)]
    return flags


def _ensure_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the pip package puts it beside the interpreter of a venv that
    may not be activated."""
    if shutil.which("ninja"):
        return
    candidates = [Path(sys.executable).parent]
    with contextlib.suppress(ImportError, AttributeError):
        import ninja  # type: ignore[import-not-found]

        candidates.append(Path(ninja.BIN_DIR))
    for folder in candidates:
        if shutil.which("ninja", path=str(folder)):
            os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
            logger.debug("libdet ops: using ninja from %s", folder)
            return


def _summarize_build_error(error: BaseException) -> str:
    """The first few compiler error lines of a failed build, or the exception's first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # Compiler diagnostics look like "<file>:<line>:<col>: fatal error: <what>" (gcc, clang, nvcc, MSVC).
    errors = [line for line in lines if "error:" in line.lower() or "error c" in line.lower()]
    summary = " | ".join(errors[:3]) if errors else (lines[0] if lines else type(error).__name__)
    return summary if len(summary) <= 600 else summary[:597] + "..."


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (POSIX); builds of the same op wait for each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: torch's own build-directory baton still serialises ninja
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# Ops whose fake (meta) implementations are registered; shared by all loaders of the process.
_FAKES_REGISTERED: set[str] = set()
_FAKES_LOCK = threading.Lock()


def _register_fakes(name: str) -> None:
    """Shape-only implementations so that torch.compile / meta tensors can trace through the ops."""
    with _FAKES_LOCK:
        if name in _FAKES_REGISTERED or not hasattr(torch, "library") or not hasattr(torch.library, "register_fake"):
            return
        _FAKES_REGISTERED.add(name)
        try:
            if name == "box_iou_rotated":

                @torch.library.register_fake("libdet::box_iou_rotated")
                def _box_iou_rotated_fake(boxes1, boxes2):
                    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))

            elif name == "nms_rotated":

                @torch.library.register_fake("libdet::nms_rotated")
                def _nms_rotated_fake(boxes, scores, iou_threshold):
                    kept = torch.library.get_ctx().new_dynamic_size()
                    return boxes.new_empty((kept,), dtype=torch.int64)

            elif name == "roi_align_rotated":

                @torch.library.register_fake("libdet::roi_align_rotated_forward")
                def _forward_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
                    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))

                @torch.library.register_fake("libdet::roi_align_rotated_backward")
                def _backward_fake(
                    grad,
                    rois,
                    spatial_scale,
                    pooled_height,
                    pooled_width,
                    batch_size,
                    channels,
                    height,
                    width,
                    sampling_ratio,
                ):
                    return grad.new_empty((batch_size, channels, height, width))

        except Exception as error:  # tracing support is a bonus: never fail the op because of it
            logger.debug("libdet op %s: no fake implementation registered (%s)", name, error)


class _OpLoader:
    """Builds and loads ops from one list of source folders into one cache; remembers the results.

    The module-level functions use a default instance; tests build their own to get a fresh state.

    Args:
        csrc_dirs: folders that may hold ``<op>/`` source folders and ``common/``, searched in order.
            Default: ``libdet/_csrc``, then ``<repo>/csrc``.
        cache_root: root of the build cache. Default: ``$LIBDET_OPS_CACHE`` or ``~/.cache/libdet/ops``
            (read when an op is first built).
    """

    def __init__(
        self, csrc_dirs: Sequence[str | os.PathLike] | None = None, cache_root: str | os.PathLike | None = None
    ):
        self._csrc_dirs = [Path(d) for d in csrc_dirs] if csrc_dirs is not None else None
        self._cache_root = Path(cache_root) if cache_root is not None else None
        self._lock = threading.RLock()
        self._results: dict[str, _LoadResult] = {}
        self._logged_choices: set[tuple[str, str, str]] = set()

    # ----------------------------------------------------------------------------------------- queries
    def load_op(self, name: str) -> bool:
        """Compiles (or finds in the cache) and loads op ``name``; True when its kernels are usable."""
        _check_name(name)
        if name in _disabled_ops():
            return False
        result = self._results.get(name)
        if result is not None:  # the common case: no lock on the hot path
            return result.ok
        with self._lock:
            if name not in self._results:
                self._results[name] = self._build_and_load(name)
            return self._results[name].ok

    def has_op(self, name: str) -> bool:
        """Same as :meth:`load_op` (which it calls: the first query triggers the build)."""
        return self.load_op(name)

    def use_kernel(self, name: str, device: torch.device | str) -> bool:
        """Whether a wrapper should call the compiled op ``name`` for tensors on ``device``.

        Logs the choice at INFO level the first time it is made (per op, device type and outcome).
        """
        _check_name(name)
        device_type = torch.device(device).type
        if name in _disabled_ops():
            use, reason = False, _DISABLED_STATUS
        elif not self.load_op(name):
            use, reason = False, f"unavailable: {self._results[name].reason}"
        elif device_type in ("cpu", "meta") or (device_type == "cuda" and self._results[name].cuda):
            use, reason = True, ""
        elif device_type == "cuda":
            use, reason = False, f"compiled without CUDA: {self._results[name].reason}"
        else:
            use, reason = False, f"no compiled kernel for {device_type} tensors"
        key = (name, device_type, reason)
        if key not in self._logged_choices:
            with self._lock:
                if key in self._logged_choices:
                    return use
                self._logged_choices.add(key)
            if use:
                logger.info("libdet op %s: using compiled kernel (%s)", name, device_type)
            else:
                logger.info("libdet op %s: using the pure-PyTorch twin (%s)", name, reason)
        return use

    def ops_status(self) -> dict[str, str]:
        """One line per op: ``compiled (cpu)``, ``compiled (cpu+cuda)``, ``compiled (cpu-only op)`` (an op without
        CUDA sources by design), ``disabled by LIBDET_DISABLE_OPS``,
        ``unavailable: <reason>`` or ``not loaded yet``. Builds nothing."""
        disabled = _disabled_ops()
        status = {}
        for name in OP_NAMES:
            result = self._results.get(name)
            if name in disabled:
                status[name] = _DISABLED_STATUS
            elif result is None:
                status[name] = _NOT_LOADED_STATUS
            elif result.ok and name in _CPU_ONLY_OPS:
                status[name] = "compiled (cpu-only op)"
            elif result.ok:
                status[name] = "compiled (cpu+cuda)" if result.cuda else "compiled (cpu)"
            else:
                status[name] = f"unavailable: {result.reason}"
        return status

    # ---------------------------------------------------------------------------------------- building
    def _find_sources(self, name: str) -> Path | None:
        for root in self._csrc_dirs if self._csrc_dirs is not None else _default_csrc_dirs():
            if (root / name).is_dir():
                return root
        return None

    def _build_dir(self, name: str, root: Path, with_cuda: bool, cflags: list[str], cuda_cflags: list[str]) -> Path:
        digest = hashlib.sha256()
        for item in (_BUILD_RECIPE_VERSION, torch.__version__, sys.version, " ".join(cflags), " ".join(cuda_cflags)):
            digest.update(item.encode() + b"\0")
        if with_cuda:
            digest.update(_cuda_arch_key().encode() + b"\0")
        for folder in (root / name, root / "common"):
            if not folder.is_dir():
                continue
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _SOURCE_SUFFIXES):
                digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        device_tag = f"cu{torch.version.cuda.replace('.', '')}" if with_cuda else "cpu"
        cache_root = self._cache_root if self._cache_root is not None else _default_cache_root()
        return cache_root / f"{torch.__version__}-{device_tag}" / f"{name}-{digest.hexdigest()[:16]}"

    def _build_and_load(self, name: str) -> _LoadResult:
        try:
            result = self._try_build_and_load(name)
        except Exception as error:  # compile errors, load errors: the twin takes over
            result = _LoadResult(False, reason=_summarize_build_error(error))
        if not result.ok:
            fallback = _FALLBACKS.get(name, "its pure-PyTorch twin")
            logger.warning("libdet op %s is unavailable, %s will be used instead: %s", name, fallback, result.reason)
        return result

    def _try_build_and_load(self, name: str) -> _LoadResult:
        root = self._find_sources(name)
        searched = self._csrc_dirs if self._csrc_dirs is not None else _default_csrc_dirs()
        if root is None:
            return _LoadResult(
                False, reason=f"sources not found (looked for {name}/ in {', '.join(map(str, searched))})"
            )
        cuda_ok, cuda_reason = _cuda_toolkit()
        sources = sorted(str(p) for p in (root / name).glob("*.cpp"))
        cuda_sources = sorted(str(p) for p in (root / name).glob("*.cu"))
        with_cuda = cuda_ok and bool(cuda_sources) and name not in _CPU_ONLY_OPS
        if not sources:
            return _LoadResult(False, reason=f"no .cpp sources in {root / name}")
        cflags = (["/O2"] if os.name == "nt" else ["-O3"]) + _extra_cflags(name)
        cuda_cflags: list[str] = []
        if with_cuda:
            sources += cuda_sources
            cflags.append("-DWITH_CUDA")
            cuda_cflags = ["-O3", "-DWITH_CUDA", *_pip_cuda_include_flags()]

        build_dir = self._build_dir(name, root, with_cuda, cflags, cuda_cflags)
        with _file_lock(build_dir.with_name(build_dir.name + ".lock")):
            marker = build_dir / _MARKER
            library = build_dir / marker.read_text().strip() if marker.is_file() else None
            if library is not None and library.is_file():
                try:
                    torch.ops.load_library(str(library))
                except Exception as error:
                    raise RuntimeError(
                        f"could not load the cached build {library} ({error}); delete {build_dir} to rebuild it"
                    ) from error
            else:
                cxx = os.environ.get("CXX", "cl" if os.name == "nt" else "c++")
                if shutil.which(cxx) is None:
                    return _LoadResult(
                        False, reason=f"no C++ compiler found ({cxx!r} is not on PATH; set CXX or install g++)"
                    )
                self._compile(name, build_dir, sources, root / "common", with_cuda, cflags, cuda_cflags)
        missing = [op for op in _OPERATORS[name] if not hasattr(torch.ops.libdet, op)]
        if missing:
            return _LoadResult(False, reason=f"the library loaded but did not register {', '.join(missing)}")
        _register_fakes(name)
        if name in _CPU_ONLY_OPS:
            return _LoadResult(True, cuda=False, reason="a CPU-only op")
        return _LoadResult(True, cuda=with_cuda, reason="" if with_cuda else cuda_reason or "no CUDA sources")

    @staticmethod
    def _compile(
        name: str,
        build_dir: Path,
        sources: list[str],
        include_dir: Path,
        with_cuda: bool,
        cflags: list[str],
        cuda_cflags: list[str],
    ) -> None:
        from torch.utils import cpp_extension

        _ensure_ninja_on_path()
        build_dir.mkdir(parents=True, exist_ok=True)
        extension = f"libdet_{name}_{build_dir.name.rsplit('-', 1)[-1][:8]}"
        logger.info("libdet op %s: compiling %d source file(s) in %s", name, len(sources), build_dir)
        try:
            cpp_extension.load(
                name=extension,
                sources=sources,
                extra_include_paths=[str(include_dir)],
                extra_cflags=cflags,
                extra_cuda_cflags=cuda_cflags or None,
                build_directory=str(build_dir),
                with_cuda=with_cuda,
                is_python_module=False,
                verbose=False,
            )
        except Exception as error:
            log = build_dir / "build_error.log"
            with contextlib.suppress(OSError):
                log.write_text(f"{type(error).__name__}: {error}\n", encoding="utf-8")
            raise RuntimeError(f"{_summarize_build_error(error)} (full log: {log})") from error
        built = [
            p
            for p in build_dir.iterdir()
            if p.is_file() and p.name.startswith(extension) and p.suffix in (".so", ".pyd", ".dll", ".dylib")
        ]
        if built:
            (build_dir / _MARKER).write_text(max(built, key=lambda p: p.stat().st_mtime).name + "\n")


_default_loader = _OpLoader()


def load_op(name: str) -> bool:
    """Compiles (first time, cached on disk) and loads op ``name`` (one of :data:`OP_NAMES`).

    Returns:
        True when ``torch.ops.libdet``'s operators of this op are usable; False when the op is disabled
        by ``LIBDET_DISABLE_OPS`` or could not be built or loaded (logged once as a warning, with why).
    """
    return _default_loader.load_op(name)


def has_op(name: str) -> bool:
    """Whether op ``name`` is compiled and loaded (builds it on the first call, like :func:`load_op`)."""
    return _default_loader.has_op(name)


def use_kernel(name: str, device: torch.device | str) -> bool:
    """Whether the wrapper of op ``name`` should call its compiled kernel for tensors on ``device``
    (else its pure-PyTorch twin). Logs the choice once at INFO level."""
    return _default_loader.use_kernel(name, device)


def ops_status() -> dict[str, str]:
    """Status of every op, for ``collect_env_info``: ``compiled (cpu)``, ``compiled (cpu+cuda)``,
    ``compiled (cpu-only op)``, ``disabled by LIBDET_DISABLE_OPS``, ``unavailable: <reason>`` or
    ``not loaded yet``."""
    return _default_loader.ops_status()


def main(argv: Sequence[str] | None = None) -> int:
    """Builds every op and prints the status table; returns 1 if an op failed to build."""
    del argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for name in OP_NAMES:
        load_op(name)
    status = ops_status()
    cache = _default_loader._cache_root or _default_cache_root()
    print(f"libdet compiled ops (torch {torch.__version__}, cache {cache})")
    width = max(len(name) for name in OP_NAMES)
    for name in OP_NAMES:
        print(f"  {name:<{width}}  {status[name]}")
    failed = [name for name, line in status.items() if line.startswith("unavailable")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
