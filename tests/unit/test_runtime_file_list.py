"""The list of what a release directory held when it was made (file_list.py), for a
directory listed from disk as the python_wheel runtime does with its venvs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from muto.agent.runtime.file_list import (
    damage,
    file_list_path,
    list_tree,
    set_aside,
    write_file_list,
)

SOURCE = "sha256:" + "ab" * 32


def venv_like(root: Path) -> Path:
    (root / "venv/bin").mkdir(parents=True)
    (root / "venv/lib/site-packages/pkg").mkdir(parents=True)
    (root / "venv/lib/site-packages/pkg/__init__.py").write_text("x = 1\n")
    (root / "venv/bin/tool").write_text("#!/bin/sh\n")
    (root / "venv/bin/tool").chmod(0o755)
    (root / "venv/bin/python").symlink_to("/usr/bin/python3")  # outside: only its target
    (root / "venv/lib64").symlink_to("lib")  # a link to a directory is not walked into
    (root / "components.json").write_text("{}")
    return root


def test_list_tree_lists_parents_first_and_never_follows_a_link(tmp_path: Path) -> None:
    listed = list_tree(venv_like(tmp_path / "r"), SOURCE)
    assert listed.dirs == ["venv", "venv/bin", "venv/lib", "venv/lib/site-packages",
                           "venv/lib/site-packages/pkg"]  # fmt: skip
    assert sorted(listed.files) == [
        "components.json", "venv/bin/tool", "venv/lib/site-packages/pkg/__init__.py"
    ]  # fmt: skip
    assert listed.files["venv/bin/tool"].mode == 0o755
    assert listed.links == {"venv/bin/python": "/usr/bin/python3", "venv/lib64": "lib"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("edited", "venv/lib/site-packages/pkg/__init__.py is not the file the installation"),
        ("deleted", "venv/bin/tool is missing or not a file"),
        ("mode", "venv/bin/tool has mode 644, not 755"),
        ("relinked", "venv/bin/python no longer links to /usr/bin/python3"),
        ("dir-replaced", "venv/lib/ is missing or not a directory"),
        ("other-wheels", "its file list is of another installation"),
        ("no-list", "it has no file list"),
    ],
)
def test_damage_of_a_listed_tree(tmp_path: Path, change: str, expected: str) -> None:
    root = venv_like(tmp_path / "r")
    write_file_list(root, list_tree(root, SOURCE))
    # What runs there writes later: not listed, not judged.
    (root / "venv/lib/site-packages/pkg/__pycache__").mkdir()
    (root / "venv/lib/site-packages/pkg/__pycache__/__init__.cpython-311.pyc").write_bytes(b"")
    (root / "component.json").write_text("{}")
    assert damage(root, SOURCE, made_by="installation") is None
    source = SOURCE
    if change == "edited":
        (root / "venv/lib/site-packages/pkg/__init__.py").write_text("x = 2\n")
    elif change == "deleted":
        (root / "venv/bin/tool").unlink()
    elif change == "mode":
        (root / "venv/bin/tool").chmod(0o644)
    elif change == "relinked":
        (root / "venv/bin/python").unlink()
        (root / "venv/bin/python").symlink_to("/bin/sh")
    elif change == "dir-replaced":
        shutil.rmtree(root / "venv/lib")
        (root / "venv/lib").symlink_to("/usr/lib")
    elif change == "other-wheels":
        source = "sha256:" + "cd" * 32
    elif change == "no-list":
        file_list_path(root).unlink()
    problem = damage(root, source, made_by="installation")
    assert problem is not None and problem.startswith(expected), problem


def test_a_list_written_before_venvs_had_lists_still_reads(tmp_path: Path) -> None:
    """The on-disk field keeps its name, "archive": lists written by the agent before
    this one are not taken for damage (which would extract every release again)."""
    root = venv_like(tmp_path / "r")
    listed = list_tree(root, SOURCE)
    files = {name: [f.mode, f.size, f.sha256] for name, f in listed.files.items()}
    encoded = {"archive": SOURCE, "dirs": listed.dirs, "files": files, "links": listed.links}
    file_list_path(root).write_text(json.dumps(encoded))
    assert damage(root, SOURCE) is None


def test_set_aside_frees_the_name(tmp_path: Path) -> None:
    root = venv_like(tmp_path / "r")
    set_aside(root)
    assert not root.exists() and os.listdir(tmp_path) == []
