"""The example plugin of docs/PLUGINS.md, read from the page itself: its files (a line
"`gpuforge-hello/<path>`:" before a fenced block) and its console session ("$ " lines,
the exact output under each, "# exit N" where a command must fail)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "PLUGINS.md"
FOLDER = "gpuforge-hello"
_FILE = re.compile(r"^`" + re.escape(FOLDER) + r"/([^`]+)`:\s*\n\n```[a-z]*\n(.*?)\n```", re.M | re.S)
_SESSION = re.compile(r"^```console\n(.*?)\n```", re.M | re.S)


@dataclass
class SessionCommand:
    env: dict[str, str]
    argv: list[str]
    output: list[str]
    exit_code: int


def example_files(doc: str | None = None) -> dict[str, str]:
    text = DOC.read_text() if doc is None else doc
    files = {path: body + "\n" for path, body in _FILE.findall(text)}
    if not files:
        raise AssertionError(f"no `{FOLDER}/...` files found in {DOC}")
    return files


def write_example(dest: Path) -> Path:
    """Write the example's folder under ``dest``; returns ``dest / "gpuforge-hello"``."""
    root = dest / FOLDER
    for rel, body in example_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return root


def session(doc: str | None = None) -> list[SessionCommand]:
    text = DOC.read_text() if doc is None else doc
    blocks = [b for b in _SESSION.findall(text) if f"pip install ./{FOLDER}" in b]
    if len(blocks) != 1:
        raise AssertionError(f"expected one console session installing ./{FOLDER} in {DOC}, found {len(blocks)}")
    commands: list[SessionCommand] = []
    for line in blocks[0].splitlines():
        if line.startswith("$ "):
            code = 0
            m = re.search(r"#\s*exit (\d+)", line)
            if m:
                code = int(m.group(1))
            words = shlex.split(line[2:], comments=True)
            env = {}
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                k, _, v = words.pop(0).partition("=")
                env[k] = v
            commands.append(SessionCommand(env, words, [], code))
        elif commands:
            commands[-1].output.append(line)
    return commands
