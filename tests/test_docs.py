"""The documentation cannot rot: every ```python and ```bash block of ``docs/*.md`` runs here, and the site builds
with ``mkdocs build --strict``.

Conventions (HTML comments on the lines right above a block; invisible on the site):

* ``<!-- test: skip: <reason> -->``: the block is not run (it needs a GPU, a cluster, a download, an install);
  each one is reported as a skipped test with its reason, so the summary counts them;
* ``<!-- test: args: <overrides> -->``: appended to every ``python tools/...`` / ``python projects/...``
  command of a bash block (tiny settings such as ``train.max_iter=2``);
* ``<!-- test: replace: <old> => <new> -->``: a textual replacement in the block before it runs.

Blocks of one page run in page order in one temporary folder (``configs/``, ``tools/`` and ``projects/`` are
linked into it, datasets are generated into it); each python block runs as a script of its own (a fresh
namespace, in the test's process: they must not rely on each other's variables), bash blocks with ``bash -e``.
Other languages (text, yaml) are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUNNABLE = ("python", "bash")
_MARKER = re.compile(r"^<!--\s*test:\s*(?P<kind>[a-z]+)\s*:\s*(?P<value>.*?)\s*-->\s*$")
_ANY_MARKER = re.compile(r"^<!--\s*test\b")
_FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_+-]*)\s*$")
_TOOL_COMMAND = re.compile(r"^\s*python\s+(tools|projects)/")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None = None
    args: list[str] = field(default_factory=list)
    replaces: list[tuple[str, str]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def parse_page(path: Path) -> list[Block]:
    """The fenced blocks of a markdown page with the ``<!-- test: ... -->`` markers right above them.

    Raises:
        ValueError: a malformed or unknown marker, a marker not followed by a runnable block, or a skip
            without a reason (the message names the line).
    """
    lines = path.read_text().splitlines()
    blocks, pending, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        if _ANY_MARKER.match(line):
            m = _MARKER.match(line)
            if m is None or m["kind"] not in ("skip", "args", "replace"):
                raise ValueError(f"docs/{path.name}:{i + 1}: unknown test marker {line!r}")
            if m["kind"] == "skip" and not m["value"]:
                raise ValueError(f"docs/{path.name}:{i + 1}: a skipped block needs a reason")
            if m["kind"] == "replace" and " => " not in m["value"]:
                raise ValueError(f"docs/{path.name}:{i + 1}: expected 'replace: <old> => <new>'")
            pending.append((i + 1, m["kind"], m["value"]))
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if pending and line.strip():
                raise ValueError(f"docs/{path.name}:{pending[0][0]}: a test marker must come right above a block")
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        block = Block(path.name, i + 1, fence["lang"], "\n".join(lines[i + 1 : end]) + "\n")
        for lineno, kind, value in pending:
            if block.lang not in RUNNABLE:
                raise ValueError(f"docs/{path.name}:{lineno}: a test marker above a ```{block.lang} block")
            if kind == "skip":
                block.skip = value
            elif kind == "args":
                block.args.extend(value.split())
            else:
                old, new = value.split(" => ", 1)
                if old not in block.code:
                    raise ValueError(f"docs/{path.name}:{lineno}: {old!r} does not occur in the block below")
                block.replaces.append((old, new))
        pending = []
        blocks.append(block)
        i = end + 1
    if pending:
        raise ValueError(f"docs/{path.name}:{pending[0][0]}: a test marker at the end of the page")
    return blocks


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _runnable(page: Path) -> list[Block]:
    return [b for b in parse_page(page) if b.lang in RUNNABLE]


def _bash_script(block: Block) -> str:
    """The block with its replacements, continuations joined and the test's arguments added to each tool call."""
    code = block.code
    for old, new in block.replaces:
        code = code.replace(old, new)
    commands = []
    for line in re.sub(r"[ \t]*\\\n\s*", " ", code).splitlines():
        if _TOOL_COMMAND.match(line):
            command, hash_, comment = line.partition(" #")
            line = " ".join([command.rstrip(), *block.args]) + (f" {hash_}{comment}" if hash_ else "")
            line = re.sub(r"^(\s*)python\s", lambda m: f"{m[1]}{sys.executable} ", line)
        commands.append(line)
    return "\n".join(commands) + "\n"


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    """Shared by the pages: the shapes dataset is generated once per test process."""
    return tmp_path_factory.mktemp("docs_datasets")


def _exec_python(block: Block, workdir: Path, index: int) -> None:
    """Run a python block as a script in this process (an interpreter start per block would dominate the
    test's time); ``sys.path`` is restored and modules the block created in ``workdir`` are forgotten."""
    code = block.code
    for old, new in block.replaces:
        code = code.replace(old, new)
    script = workdir / f"_doc_block_{index}.py"
    script.write_text(code)
    saved_path = list(sys.path)
    try:
        exec(compile(code, str(script), "exec"), {"__name__": "__main__", "__file__": str(script)})
    except Exception:
        pytest.fail(f"{block.where} (python) failed:\n--- block ---\n{code}\n--- error ---\n{traceback.format_exc()}")
    finally:
        sys.path[:] = saved_path
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(workdir)):
                del sys.modules[name]


def _run_bash(block: Block, workdir: Path, index: int) -> None:
    script = workdir / f"_doc_block_{index}.sh"
    script.write_text(_bash_script(block))
    proc = subprocess.run(
        ["bash", "-e", script.name], cwd=workdir, env=dict(os.environ), capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{block.where} (bash) failed with exit code {proc.returncode}:\n--- block ---\n"
            f"{script.read_text()}\n--- output (last 4000 characters) ---\n{(proc.stdout + proc.stderr)[-4000:]}"
        )


def test_markers_are_well_formed_and_blocks_are_counted():
    blocks = [b for page in _pages() for b in parse_page(page)]
    runnable = [b for b in blocks if b.lang in RUNNABLE]
    skipped = [b for b in runnable if b.skip]
    assert len(runnable) - len(skipped) >= 20, "the docs should run most of their examples"
    # every page but the generated export table and the API page has examples that run
    for page in _pages():
        if page.name in ("export_support.md", "api.md", "index.md"):
            continue
        assert any(not b.skip for b in _runnable(page)), f"docs/{page.name} has no example that runs"
    print(f"docs: {len(runnable)} code blocks, {len(runnable) - len(skipped)} run, {len(skipped)} not run:")
    for b in skipped:
        print(f"  {b.where}: {b.skip}")


def test_parse_page_rejects_bad_markers(tmp_path):
    page = tmp_path / "bad.md"
    page.write_text("<!-- test: skip: -->\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="bad.md:1: a skipped block needs a reason"):
        parse_page(page)
    page.write_text("<!-- test: sikp: typo -->\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="unknown test marker"):
        parse_page(page)
    page.write_text("<!-- test: args: a=1 -->\n\ntext\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="right above a block"):
        parse_page(page)
    page.write_text("<!-- test: replace: nope => x -->\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="'nope' does not occur"):
        parse_page(page)


def test_bash_script_adds_arguments_to_tool_commands():
    block = Block(
        "p.md",
        1,
        "bash",
        "python tools/a.py --x 1 \\\n    k=v  # note\nls\npython -c 'print(1)'\n",
        args=["train.max_iter=2"],
    )
    lines = _bash_script(block).splitlines()
    assert lines[0] == f"{sys.executable} tools/a.py --x 1 k=v train.max_iter=2  # note"
    assert lines[1:] == ["ls", "python -c 'print(1)'"]


_SKIPPED = [b for page in _pages() for b in _runnable(page) if b.skip]


@pytest.mark.parametrize("block", _SKIPPED, ids=[b.where for b in _SKIPPED])
def test_block_not_run(block):
    pytest.skip(f"{block.where} is marked not to run: {block.skip}")


_PAGES_WITH_RUNS = [p.name for p in _pages() if any(not b.skip for b in _runnable(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", _PAGES_WITH_RUNS)
def test_page_examples_run(page, tmp_path, datasets_dir, monkeypatch):
    for name in ("configs", "tools", "projects"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    for k in list(os.environ):
        if k.startswith(("LIBDET_", "SLURM_", "MLFLOW_", "WANDB_")):
            monkeypatch.delenv(k)
    settings = {
        "OMP_NUM_THREADS": "1",
        "LIBDET_DATASETS": str(datasets_dir),
        "LIBDET_CACHE": str(tmp_path / "cache"),
        "LIBDET_CACHE_DIR": str(tmp_path / "cache"),
        "MPLBACKEND": "Agg",
    }
    for k, v in settings.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    for index, block in enumerate(_runnable(DOCS / page)):
        if block.skip:
            continue
        if block.lang == "python":
            _exec_python(block, tmp_path, index)
        else:
            _run_bash(block, tmp_path, index)


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (pip install -e '.[docs]')")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "interpretability" / "index.html").is_file()
