"""quantize's commands are on the command runtime (issue 13): the shared options, the
device, the output transaction and the manifest come from core.run, never from the plugin."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpuforge.plugins.quantize.cli import app

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "quantize"
# commands that compute nothing on a device never resolve it (--device cuda is no error there)
NO_DEVICE = {"inspect", "advise"}


def test_every_quantize_command_is_on_the_runtime():
    names = set()
    for cmd in app.registered_commands:
        runtime = getattr(cmd.callback, "gpuforge_runtime", None)
        assert runtime is not None, f"quantize {cmd.name} is not registered with core.run.command"
        assert runtime["device"] == (cmd.name not in NO_DEVICE), cmd.name
        names.add(cmd.name)
    assert names == {"run", "eval", "inspect", "advise", "sparsify", "kv"}


@pytest.mark.parametrize("path", sorted(PLUGIN.glob("*.py")), ids=lambda p: p.name)
def test_the_plugin_writes_no_output_or_option_of_its_own(path):
    text = path.read_text()
    for pattern in (r"core\.output import .*\bemit\b", r"\bget_context\b", r"\batomic_dir\b", r"\bManifest\(",
                    r"core\.device\b", r"write_text_atomic", r'"--json"', r'"--force"', r'"--seed"'):
        assert not re.search(pattern, text), f"{path.name}: {pattern}"
