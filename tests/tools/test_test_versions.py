"""tools/test_versions.py: the pins a version run installs."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "test_versions_tool", os.path.join(ROOT, "tools", "test_versions.py")
)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def test_requirements_keep_every_pin_and_replace_only_the_torch_pair():
    pinned = tool.requirements(None, None)
    text = open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8").read()
    assert all(line in text.splitlines() for line in pinned)
    assert all(not line.startswith("#") for line in pinned)
    other = tool.requirements("2.11.0", "0.26.0")
    assert "torch==2.11.0" in other and "torchvision==0.26.0" in other
    assert [x for x in other if "torch" not in x] == [x for x in pinned if "torch" not in x]
    with pytest.raises(SystemExit, match="together"):
        tool.requirements("2.11.0", None)


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_a_recorded_row_joins_the_table_above_the_notes(tmp_path):
    path = str(tmp_path / "versions.md")
    open(path, "w").close()  # an empty file gets the title and the table
    tool.record_row(path, "| 3.12 | a |")
    tool.record_row(path, "| 3.13 | b |")
    text = _read(path)
    assert text.startswith("# Versions run") and text.count("\n|---") == 1
    with open(path, "a", encoding="utf-8") as f:
        f.write("\nA note on the 3.13 row.\n\n| a table in a note |\n|---|\n| its row |")
    tool.record_row(path, "| 3.11 | c |")
    lines = _read(path).splitlines()
    assert lines[lines.index("| 3.13 | b |") + 1] == "| 3.11 | c |"
    assert lines.index("| 3.12 | a |") == lines.index("| 3.13 | b |") - 1
    assert lines[-3:] == ["| a table in a note |", "|---|", "| its row |"]


def test_a_file_without_a_table_gets_one_after_its_text(tmp_path):
    path = tmp_path / "versions.md"
    path.write_text("Some notes")
    tool.record_row(str(path), "| 3.12 | a |")
    lines = _read(path).splitlines()
    assert (
        lines[0] == "Some notes" and lines[2].startswith("| Python") and lines[-1] == "| 3.12 | a |"
    )
