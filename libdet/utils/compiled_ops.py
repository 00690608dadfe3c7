"""Compiled ops that describe themselves: declaration, lazy build, disk cache, and kernel-or-twin choice.

An op is one folder of C++ (and optionally CUDA) sources plus one :func:`register_op` call next to its Python
wrapper. The call names everything the op is: its source folder and include folders, the schema of every
operator it registers (checked against what the compiled library registers), their fake kernels (so that
``torch.compile`` and ``torch.export`` trace through them), extra compiler flags, whether it has CUDA
kernels, and its pure-PyTorch twin. Nothing is compiled when a wrapper module is imported: the first
:meth:`CompiledOp.use_kernel` (or call of the op) compiles it, once per source version, cached on disk, and
loads it into ``torch.ops.<namespace>``. When an op cannot be built (no compiler, compile error, ...) a
warning says why, once, and the wrapper uses the twin. Each op is its own extension, so one that fails never
disables another. libdet's ops are declared in ``libdet/layers/{rotated_boxes,nms,roi_align,roi_align_rotated}.py``
and ``libdet/evaluation/fast_eval_api.py``; a project declares its own the same way, from its own folder.

Where libdet's sources are looked up (:func:`libdet_csrc`): ``libdet/_csrc`` (an installed package), then
``<repo>/csrc`` (a source checkout or an editable install).

Where builds are cached: ``$LIBDET_OPS_CACHE`` or ``$XDG_CACHE_HOME/libdet/ops`` (default
``~/.cache/libdet/ops``), then ``<torch version>-<cpu|cuXY>/<op>-<hash>``, where the hash covers the
sources, the compiler flags and the Python version, so editing a source rebuilds it.

Environment:
    LIBDET_DISABLE_OPS: ``1`` (or ``all``) uses the twins for every op; a comma-separated list of op
        names (``nms_rotated,roi_align_rotated``) only for those.
    LIBDET_OPS_CACHE: root folder of the build cache.
    MAX_JOBS, CXX, TORCH_CUDA_ARCH_LIST: read by ``torch.utils.cpp_extension`` when compiling.

``python -m libdet.utils.compiled_ops`` builds libdet's ops and prints their status (exit code 1 if one
failed).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CORE_OP_MODULES",
    "CompiledOp",
    "OpLoader",
    "get_op",
    "libdet_csrc",
    "load_op",
    "main",
    "ops_status",
    "register_core_ops",
    "register_op",
    "registered_ops",
    "use_kernel",
]

logger = logging.getLogger(__name__)

#: The modules that declare libdet's own ops. The command line and the environment report import them (by
#: name, so that this module stays importable from every layer) to list every op, loaded or not.
CORE_OP_MODULES: tuple[str, ...] = (
    "libdet.layers.rotated_boxes",
    "libdet.layers.nms",
    "libdet.layers.roi_align",
    "libdet.layers.roi_align_rotated",
    "libdet.evaluation.fast_eval_api",
)

_DISABLE_ENV = "LIBDET_DISABLE_OPS"
_CACHE_ENV = "LIBDET_OPS_CACHE"
_DISABLED_STATUS = f"disabled by {_DISABLE_ENV}"
_NOT_LOADED_STATUS = "not loaded yet"
# Bump to force every cached build to be redone (e.g. after changing how ops are compiled).
_BUILD_RECIPE_VERSION = "1"
_MARKER = "BUILD_OK"
_SOURCE_SUFFIXES = (".h", ".hpp", ".cuh", ".cpp", ".cc", ".cu")


@dataclass(frozen=True, eq=False)
class CompiledOp:
    """One compiled op: what to build, what it registers, and what replaces it when it is unavailable.

    Create it with :func:`register_op` (which also makes it known to ``LIBDET_DISABLE_OPS``, the status
    report and the command line). Calling the op runs its kernel when it is usable for the device of the
    first tensor argument, else its twin.

    Args:
        name: the op's name, unique in its namespace (``LIBDET_DISABLE_OPS`` and the status use it).
        sources: folder holding the op's ``*.cpp`` (and ``*.cu``) files; all of them are compiled.
        schemas: ``{operator: schema}`` of every operator the library registers, as its C++ ``m.def``
            declares it (without the namespace), e.g. ``{"nms_rotated": "nms_rotated(Tensor boxes, ...) ->
            Tensor"}``. Loading fails with a clear reason when the library registers something else.
        fakes: ``{operator: function}`` shape-only implementations for ``torch.library.register_fake``.
        twin: pure-PyTorch function with the same signature and results as ``kernel``; None when the op
            has none (its caller then checks :meth:`use_kernel` and falls back itself).
        kernel: the Python entry that calls the compiled operators (e.g. an autograd Function's ``apply``);
            default: the first operator of ``schemas``.
        include_dirs: extra header folders (also part of the build hash).
        extra_cflags: compiler flags beyond libdet's ``-O3`` (and ``-fopenmp`` on Linux), for gcc/clang.
        cuda: whether the op has CUDA kernels (compiled when CUDA is available); False for host-only ops.
        namespace: the ``torch.ops`` namespace the C++ code registers into.
        fallback: what replaces the op, as the warning says when it cannot be built.
    """

    name: str
    sources: Path
    schemas: Mapping[str, str]
    fakes: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    twin: Callable[..., Any] | None = None
    kernel: Callable[..., Any] | None = None
    include_dirs: tuple[Path, ...] = ()
    extra_cflags: tuple[str, ...] = ()
    cuda: bool = True
    namespace: str = "libdet"
    fallback: str = "its pure-PyTorch twin"

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}::{self.name}"

    @property
    def ops(self) -> Any:
        """``torch.ops.<namespace>``: the compiled operators, once :meth:`load` succeeded."""
        return getattr(torch.ops, self.namespace)

    def load(self) -> bool:
        """Compiles (first time, cached on disk) and loads the op; True when its operators are usable."""
        return _default_loader.load(self)

    def use_kernel(self, device: torch.device | str) -> bool:
        """Whether to call the compiled kernel for tensors on ``device`` (else the twin); logs the choice
        once per device type and outcome."""
        return _default_loader.use_kernel(self, device)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        device = next((a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu")
        if _choose_kernel(self.name, torch.device(device).type):
            kernel = self.kernel if self.kernel is not None else getattr(self.ops, next(iter(self.schemas)))
            return kernel(*args, **kwargs)
        if self.twin is None:
            raise RuntimeError(f"libdet op {self.qualified_name} is unavailable for {device} tensors and has no twin.")
        return self.twin(*args, **kwargs)


# torch.compile runs this eagerly while tracing and keeps its result as a constant: the loader (a lock, perhaps a
# compilation) cannot be traced, and the choice is fixed per op and device type anyway.
def _choose_kernel(name: str, device_type: str) -> bool:
    return _default_loader.use_kernel(name, device_type)


# `torch.compiler.assume_constant_result` only sets this flag, but calling it imports torch._dynamo (seconds) in
# every process that imports an op module; dynamo reads the flag when it traces.
# tests/evaluation/test_lazy_imports.py checks that the decorator still sets exactly this flag.
_choose_kernel._dynamo_marked_constant = True  # type: ignore[attr-defined]


_REGISTRY: dict[str, CompiledOp] = {}
_REGISTRY_LOCK = threading.Lock()


def register_op(name: str, *, sources: str | os.PathLike, schemas: Mapping[str, str], **fields: Any) -> CompiledOp:
    """Declares a compiled op (see :class:`CompiledOp` for the arguments) and returns it. Builds nothing.

    Registering the same name again (a reloaded module) replaces the declaration when it names the same
    source folder; a different folder under a registered name is an error.
    """
    include_dirs = tuple(Path(d) for d in fields.pop("include_dirs", ()))
    extra_cflags = tuple(fields.pop("extra_cflags", ()))
    if not schemas:
        raise ValueError(f"register_op({name!r}): `schemas` must name at least one operator.")
    op = CompiledOp(
        name=name,
        sources=Path(sources),
        schemas=dict(schemas),
        include_dirs=include_dirs,
        extra_cflags=extra_cflags,
        **fields,
    )
    with _REGISTRY_LOCK:
        previous = _REGISTRY.get(name)
        if previous is not None and (previous.sources, previous.namespace) != (op.sources, op.namespace):
            raise ValueError(
                f"register_op: an op named {name!r} is already registered from {previous.sources} "
                f"(namespace {previous.namespace!r}); cannot register another from {op.sources}."
            )
        _REGISTRY[name] = op
    return op


def registered_ops() -> tuple[CompiledOp, ...]:
    """The registered ops, in registration order."""
    return tuple(_REGISTRY.values())


def get_op(name: str | CompiledOp) -> CompiledOp:
    """The registered op called ``name`` (an op is returned as is)."""
    if isinstance(name, CompiledOp):
        return name
    if name not in _REGISTRY:
        known = ", ".join(_REGISTRY) or "none registered yet"
        raise ValueError(f"Unknown libdet op {name!r}; expected one of {known}.")
    return _REGISTRY[name]


def register_core_ops() -> tuple[CompiledOp, ...]:
    """Imports the modules of :data:`CORE_OP_MODULES` (which declare libdet's ops); returns libdet's ops."""
    for module in CORE_OP_MODULES:
        importlib.import_module(module)
    return tuple(op for op in registered_ops() if op.namespace == "libdet")


def libdet_csrc(name: str) -> Path:
    """Folder ``name`` of libdet's C++ sources: ``libdet/_csrc/<name>`` in an installed package, else
    ``<repo>/csrc/<name>`` (returned even when missing; building then reports where it looked)."""
    package_root = Path(__file__).resolve().parents[1]  # .../libdet
    candidates = (package_root / "_csrc" / name, package_root.parent / "csrc" / name)
    return next((folder for folder in candidates if folder.is_dir()), candidates[-1])


_warned_disable_values: set[str] = set()


def _disabled(op: CompiledOp) -> bool:
    """Whether ``LIBDET_DISABLE_OPS`` turns ``op`` off (read on every call, so tests can monkeypatch it)."""
    value = os.environ.get(_DISABLE_ENV, "").strip()
    if value.lower() in ("", "0", "false", "no", "off"):
        return False
    if value.lower() in ("1", "true", "yes", "on", "all", "*"):
        return True
    names = {part.strip() for part in value.split(",") if part.strip()}
    unknown = names - set(_REGISTRY)
    if unknown and value not in _warned_disable_values:
        _warned_disable_values.add(value)
        logger.warning(
            "%s names unknown op(s) %s; registered ops: %s", _DISABLE_ENV, sorted(unknown), ", ".join(_REGISTRY)
        )
    return op.name in names


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


# Operators ("ns::op") whose fake implementations are registered; shared by all loaders of the process.
_FAKES_REGISTERED: set[str] = set()
_FAKES_LOCK = threading.Lock()


def _register_fakes(op: CompiledOp) -> None:
    """Shape-only implementations so that torch.compile / meta tensors can trace through the operators."""
    if not hasattr(torch, "library") or not hasattr(torch.library, "register_fake"):
        return
    with _FAKES_LOCK:
        for operator, fake in op.fakes.items():
            qualified = f"{op.namespace}::{operator}"
            if qualified in _FAKES_REGISTERED:
                continue
            _FAKES_REGISTERED.add(qualified)
            try:
                torch.library.register_fake(qualified)(fake)
            except Exception as error:  # tracing support is a bonus: never fail the op because of it
                logger.debug("libdet op %s: no fake implementation registered (%s)", qualified, error)


def _schema_mismatches(op: CompiledOp) -> list[str]:
    """What the loaded library registers differently from ``op.schemas`` (empty when it all matches)."""
    problems = []
    for operator, declared in op.schemas.items():
        packet = getattr(op.ops, operator, None)
        if packet is None:
            problems.append(f"did not register {operator}")
            continue
        expected = torch._C.parse_schema(f"{op.namespace}::{declared}")
        actual = packet.default._schema
        if str(actual) != str(expected):
            problems.append(f"registered {actual} where {expected} was declared")
    return problems


@dataclass(frozen=True)
class _LoadResult:
    ok: bool
    cuda: bool = False  # compiled with the CUDA sources
    reason: str = ""  # why it failed, or why CUDA sources were left out


class OpLoader:
    """Builds and loads ops into one cache; remembers the outcome per op.

    The op methods and module-level functions use a default instance; tests build their own to get a
    fresh state.

    Args:
        cache_root: root of the build cache. Default: ``$LIBDET_OPS_CACHE`` or ``~/.cache/libdet/ops``
            (read when an op is first built).
    """

    def __init__(self, cache_root: str | os.PathLike | None = None):
        self._cache_root = Path(cache_root) if cache_root is not None else None
        self._lock = threading.RLock()
        self._results: dict[str, _LoadResult] = {}
        self._logged_choices: set[tuple[str, str, str]] = set()

    @property
    def cache_root(self) -> Path:
        return self._cache_root if self._cache_root is not None else _default_cache_root()

    def load(self, op: CompiledOp | str) -> bool:
        """Compiles (or finds in the cache) and loads ``op``; True when its operators are usable."""
        op = get_op(op)
        if _disabled(op):
            return False
        result = self._results.get(op.qualified_name)
        if result is not None:  # the common case: no lock on the hot path
            return result.ok
        with self._lock:
            if op.qualified_name not in self._results:
                self._results[op.qualified_name] = self._build_and_load(op)
            return self._results[op.qualified_name].ok

    def use_kernel(self, op: CompiledOp | str, device: torch.device | str) -> bool:
        """Whether a wrapper should call the compiled ``op`` for tensors on ``device`` (else its twin).

        Logs the choice at INFO level the first time it is made (per op, device type and outcome).
        """
        op = get_op(op)
        device_type = torch.device(device).type
        if _disabled(op):
            use, reason = False, _DISABLED_STATUS
        elif not self.load(op):
            use, reason = False, f"unavailable: {self._results[op.qualified_name].reason}"
        elif device_type in ("cpu", "meta") or (device_type == "cuda" and self._results[op.qualified_name].cuda):
            use, reason = True, ""
        elif device_type == "cuda":
            use, reason = False, f"compiled without CUDA: {self._results[op.qualified_name].reason}"
        else:
            use, reason = False, f"no compiled kernel for {device_type} tensors"
        key = (op.qualified_name, device_type, reason)
        if key not in self._logged_choices:
            with self._lock:
                if key in self._logged_choices:
                    return use
                self._logged_choices.add(key)
            if use:
                logger.info("libdet op %s: using compiled kernel (%s)", op.name, device_type)
            else:
                logger.info("libdet op %s: using %s (%s)", op.name, _fallback_name(op), reason)
        return use

    def status(self, op: CompiledOp | str) -> str:
        """``compiled (cpu)``, ``compiled (cpu+cuda)``, ``compiled (cpu-only op)`` (an op without CUDA kernels
        by design), ``disabled by LIBDET_DISABLE_OPS``, ``unavailable: <reason>`` or ``not loaded yet``.
        Builds nothing."""
        op = get_op(op)
        result = self._results.get(op.qualified_name)
        if _disabled(op):
            return _DISABLED_STATUS
        if result is None:
            return _NOT_LOADED_STATUS
        if not result.ok:
            return f"unavailable: {result.reason}"
        if not op.cuda:
            return "compiled (cpu-only op)"
        return "compiled (cpu+cuda)" if result.cuda else "compiled (cpu)"

    def build_dir(self, op: CompiledOp, with_cuda: bool, cflags: Sequence[str], cuda_cflags: Sequence[str]) -> Path:
        """The cache folder of ``op`` built with these flags (a hash of them and of every source)."""
        digest = hashlib.sha256()
        for item in (_BUILD_RECIPE_VERSION, torch.__version__, sys.version, " ".join(cflags), " ".join(cuda_cflags)):
            digest.update(item.encode() + b"\0")
        if with_cuda:
            digest.update(_cuda_arch_key().encode() + b"\0")
        for folder in (op.sources, *op.include_dirs):
            if not folder.is_dir():
                continue
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _SOURCE_SUFFIXES):
                # Paths relative to the folder's parent: "<op>/<file>", "common/<file>".
                digest.update(path.relative_to(folder.parent).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        device_tag = f"cu{torch.version.cuda.replace('.', '')}" if with_cuda else "cpu"
        prefix = op.name if op.namespace == "libdet" else f"{op.namespace}.{op.name}"
        return self.cache_root / f"{torch.__version__}-{device_tag}" / f"{prefix}-{digest.hexdigest()[:16]}"

    def _build_and_load(self, op: CompiledOp) -> _LoadResult:
        try:
            result = self._try_build_and_load(op)
        except Exception as error:  # compile errors, load errors: the twin takes over
            result = _LoadResult(False, reason=_summarize_build_error(error))
        if not result.ok:
            logger.warning(
                "libdet op %s is unavailable, %s will be used instead: %s", op.name, op.fallback, result.reason
            )
        return result

    def _try_build_and_load(self, op: CompiledOp) -> _LoadResult:
        if not op.sources.is_dir():
            return _LoadResult(False, reason=f"sources not found (no folder {op.sources})")
        cuda_ok, cuda_reason = _cuda_toolkit()
        sources = sorted(str(p) for p in op.sources.glob("*.cpp"))
        cuda_sources = sorted(str(p) for p in op.sources.glob("*.cu"))
        with_cuda = cuda_ok and bool(cuda_sources) and op.cuda
        if not sources:
            return _LoadResult(False, reason=f"no .cpp sources in {op.sources}")
        cflags = ["/O2"] if os.name == "nt" else ["-O3", *op.extra_cflags]
        # at::parallel_for's OpenMP pragma is resolved against torch's own libgomp when the library loads;
        # without -fopenmp the loops would run on one thread.
        if sys.platform.startswith("linux"):
            cflags.append("-fopenmp")
        cuda_cflags: list[str] = []
        if with_cuda:
            sources += cuda_sources
            cflags.append("-DWITH_CUDA")
            cuda_cflags = ["-O3", "-DWITH_CUDA", *_pip_cuda_include_flags()]

        build_dir = self.build_dir(op, with_cuda, cflags, cuda_cflags)
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
                _compile(op, build_dir, sources, with_cuda, cflags, cuda_cflags)
        problems = _schema_mismatches(op)
        if problems:
            return _LoadResult(False, reason=f"the library loaded but {'; '.join(problems)}")
        _register_fakes(op)
        if not op.cuda:
            return _LoadResult(True, cuda=False, reason="a CPU-only op")
        return _LoadResult(True, cuda=with_cuda, reason="" if with_cuda else cuda_reason or "no CUDA sources")


def _fallback_name(op: CompiledOp) -> str:
    return "the pure-PyTorch twin" if op.fallback == CompiledOp.fallback else op.fallback


def _compile(
    op: CompiledOp,
    build_dir: Path,
    sources: list[str],
    with_cuda: bool,
    cflags: list[str],
    cuda_cflags: list[str],
) -> None:
    from torch.utils import cpp_extension

    _ensure_ninja_on_path()
    build_dir.mkdir(parents=True, exist_ok=True)
    prefix = op.name if op.namespace == "libdet" else f"{op.namespace}_{op.name}"
    extension = f"libdet_{prefix}_{build_dir.name.rsplit('-', 1)[-1][:8]}"
    logger.info("libdet op %s: compiling %d source file(s) in %s", op.name, len(sources), build_dir)
    try:
        cpp_extension.load(
            name=extension,
            sources=sources,
            extra_include_paths=[str(d) for d in op.include_dirs],
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


_default_loader = OpLoader()


def load_op(name: str | CompiledOp) -> bool:
    """Compiles (first time, cached on disk) and loads a registered op.

    Returns:
        True when the op's operators are usable; False when the op is disabled by ``LIBDET_DISABLE_OPS``
        or could not be built or loaded (logged once as a warning, with why).
    """
    return _default_loader.load(name)


def use_kernel(name: str | CompiledOp, device: torch.device | str) -> bool:
    """Whether the wrapper of a registered op should call its compiled kernel for tensors on ``device``
    (else its twin). Logs the choice once at INFO level."""
    return _default_loader.use_kernel(name, device)


def ops_status() -> dict[str, str]:
    """Status of every registered op, for ``collect_env_info``: ``compiled (cpu)``, ``compiled (cpu+cuda)``,
    ``compiled (cpu-only op)``, ``disabled by LIBDET_DISABLE_OPS``, ``unavailable: <reason>`` or
    ``not loaded yet``. Builds nothing."""
    return {op.name: _default_loader.status(op) for op in registered_ops()}


def main(argv: Sequence[str] | None = None) -> int:
    """Builds libdet's ops (and any other registered one) and prints the status table; returns 1 if an op
    failed to build."""
    del argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    register_core_ops()
    for op in registered_ops():
        load_op(op)
    status = ops_status()
    print(f"libdet compiled ops (torch {torch.__version__}, cache {_default_loader.cache_root})")
    width = max(len(name) for name in status)
    for name, line in status.items():
        print(f"  {name:<{width}}  {line}")
    failed = [name for name, line in status.items() if line.startswith("unavailable")]
    return 1 if failed else 0


if __name__ == "__main__":
    # Run the registry of the importable module: the op modules register into libdet.utils.compiled_ops,
    # not into this __main__ copy.
    from libdet.utils import compiled_ops

    sys.exit(compiled_ops.main())
