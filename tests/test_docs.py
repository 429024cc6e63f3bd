"""The README and docs/ cannot go stale.

- Every ```python block runs: a page's blocks in order, in one namespace, as
  a reader would run them, in a folder holding what they name
  (work_dirs/ssd_shapes/best.pth, the session's trained checkpoint;
  photo.jpg and photos/, Shapes images). A block that needs a download is
  marked by a `<!-- docs-test: skip (why) -->` line right above it and is
  skipped with that reason.
- Every `python tools/<tool>.py ...` command line, in a ```bash block or in
  inline code, is checked against the tool's own parser: a concrete command
  must parse, and a usage line with placeholders (CHECKPOINT, [--opt ...])
  may use only options the tool's --help lists. Configs it names exist, and
  its --set overrides are fields of that config.
"""
from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from typing import Optional

import pytest

from tests.helpers import REPO
from tests.tools.test_tools import tool

DOC_FILES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"),
                                                                 recursive=True))
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((.+)\)\s*-->")
TOOL_COMMAND = re.compile(r"python tools/(\w+)\.py")
PLACEHOLDER = re.compile(r"\[|\]|\||\.\.\.|\b[A-Z][A-Z_]{2,}\b")


@dataclass
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    skip: Optional[str]  # why it does not run here, or None


def fenced_blocks(path: str) -> list[Block]:
    """The fenced code blocks of a Markdown file, with their skip markers."""
    blocks, lines = [], open(path, encoding="utf-8").read().split("\n")
    index = 0
    while index < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[index])
        if not opening:
            index += 1
            continue
        end = lines.index("```", index + 1)
        marker = SKIP.search(lines[index - 1]) if index else None
        blocks.append(Block(opening.group(1), "\n".join(lines[index + 1:end]), index + 1,
                            marker.group(1) if marker else None))
        index = end + 1
    return blocks


def relative(path: str) -> str:
    return os.path.relpath(path, REPO)


PAGES_WITH_PYTHON = [relative(p) for p in DOC_FILES if any(b.language == "python" for b in fenced_blocks(p))]


def test_the_collector_sees_blocks_and_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n<!-- docs-test: skip (needs a download) -->\n```python\n"
                    "fetch()\n```\n```bash\nls\n```\n")
    assert [(b.language, b.code, b.line, b.skip) for b in fenced_blocks(str(page))] == [
        ("python", "x = 1", 2, None), ("python", "fetch()", 6, "needs a download"), ("bash", "ls", 9, None)]


@pytest.fixture(scope="module")
def workspace(trained, tmp_path_factory):
    """A folder with what the examples name, as a user's would be after `python tools/train.py`."""
    from detkit.engine.build import prepare_shapes

    config, work_dir = trained
    folder = tmp_path_factory.mktemp("docs")
    os.makedirs(folder / "work_dirs" / "ssd_shapes")
    shutil.copy(os.path.join(work_dir, "best.pth"), folder / "work_dirs" / "ssd_shapes" / "best.pth")
    images = sorted(glob.glob(os.path.join(prepare_shapes(config.data).image_root, "*.jpg")))
    shutil.copy(images[0], folder / "photo.jpg")
    os.makedirs(folder / "photos")
    for image in images[1:4]:
        shutil.copy(image, folder / "photos")
    return folder


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON)
def test_python_examples_run(page, workspace, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(workspace)
    blocks = [b for b in fenced_blocks(os.path.join(REPO, page)) if b.language == "python"]
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        if block.skip is None:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(block.code, f"{page}:{block.line}", "exec"), namespace)
    skipped = [f"line {b.line}: {b.skip}" for b in blocks if b.skip]
    if skipped and len(skipped) == len(blocks):
        pytest.skip("; ".join(skipped))


def command_lines(path: str) -> list[tuple[int, str]]:
    """(line, command) of every `python tools/*.py` command in the file's bash
    blocks and inline code, one per command of a `&&` chain, comments cut."""
    found = []
    for block in fenced_blocks(path):
        if block.language not in ("bash", "sh", "console"):
            continue
        for offset, line in enumerate(block.code.split("\n")):
            for part in line.split("#")[0].split("&&"):
                if TOOL_COMMAND.search(part):
                    found.append((block.line + 1 + offset, part.strip()))
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
        for code in re.findall(r"`([^`]*python tools/[^`]*)`", line):
            found += [(number, part.strip()) for part in code.split("&&") if TOOL_COMMAND.search(part)]
    return found


def help_text(module, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.parse_args(argv + ["--help"])
    return out.getvalue()


def check_command(command: str) -> Optional[str]:
    """None if `command` fits its tool, else what is wrong."""
    words = shlex.split(command[command.index("python tools/"):])
    name = TOOL_COMMAND.match(" ".join(words[:2])).group(1)
    module, argv = tool(name), words[2:]
    subcommand = argv[:1] if name == "data" and argv and argv[0].isalpha() else []
    if PLACEHOLDER.search(" ".join(argv)):  # a usage line: its options must be the tool's
        listed = help_text(module, subcommand)
        unknown = [o for o in re.findall(r"(--[a-zA-Z][\w-]*)", command) if o not in listed]
        return f"options not in {name}.py's --help: {unknown}" if unknown else None
    with contextlib.redirect_stderr(io.StringIO()) as errors:
        try:
            args = module.parse_args(argv)
        except SystemExit:
            return errors.getvalue().strip().splitlines()[-1]
    if name == "train":
        try:  # args.config defaults to the tool's absolute DEFAULT_CONFIG, which join keeps as it is
            tool("_common").load_tool_config(os.path.join(REPO, args.config), args.set or [])
        except Exception as exc:  # noqa: BLE001 - reported as the failure
            return f"{type(exc).__name__}: {exc}"
    return None


def test_tool_command_lines_match_the_tools():
    commands = [(relative(path), line, command) for path in DOC_FILES for line, command in command_lines(path)]
    assert len(commands) >= 20, "the collector found too few command lines"
    problems = [f"{path}:{line}: {command}: {problem}" for path, line, command in commands
                if (problem := check_command(command))]
    assert not problems, "\n".join(problems)


def broken_links(path: str) -> list[str]:
    """Relative Markdown links of `path` whose file does not exist (the site's
    own pages are checked by `mkdocs build --strict`; the README is not one)."""
    text = open(path, encoding="utf-8").read()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    return [t for t in targets if "://" not in t and not os.path.exists(os.path.join(os.path.dirname(path), t))]


def test_the_readmes_links_lead_somewhere(tmp_path):
    assert not broken_links(os.path.join(REPO, "README.md"))
    planted = tmp_path / "page.md"
    planted.write_text("[ok](page.md) [gone](docs/missing.md#part) [web](https://d2l.ai)\n")
    assert broken_links(str(planted)) == ["docs/missing.md"]


def test_a_wrong_command_is_caught():
    assert check_command("python tools/infer.py work_dirs/x/best.pth photos/ --output out/") is not None
    assert "--colour" in check_command("python tools/train.py [CONFIG] [--colour]")
    assert "not a field" in check_command("python tools/train.py --set solver.learning_rate=1") or \
        "learning_rate" in check_command("python tools/train.py --set solver.learning_rate=1")
    assert check_command("python tools/infer.py work_dirs/x/best.pth photos/ --out out/") is None
