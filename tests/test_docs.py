"""Every CLI command and every runbook is documented (README.md or docs/*.md) and has --help."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from commands.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in DOC_FILES if p.exists())


def walk(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from walk(command, path)


COMMANDS = list(walk(main))


def test_there_are_commands_to_check() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"audit list", "audit verify", "audit timeline", "audit browse", "demo"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_is_documented_and_has_help(path: tuple[str, ...], command: click.Command) -> None:
    words = " ".join(path)
    assert re.search(rf"stabilize {re.escape(words)}\b", docs_text()), (
        f"`stabilize {words}` is not in README.md or docs/*.md"
    )
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: main {words}" in result.output or f"{words}" in result.output
    help_text = (command.help or command.short_help or "").strip()
    assert len(help_text) > 20, f"`stabilize {words}` has no real --help text"
    # Leaf commands show how to use them, like sqlite-utils does.
    if not isinstance(command, click.Group):
        assert "Example" in help_text or command.params == [], (
            f"`stabilize {words} --help` has no Example: block"
        )


def test_every_runbook_is_documented() -> None:
    engine = pytest.importorskip("runbooks.engine")
    text = docs_text()
    assert engine.RUNBOOKS, "no runbooks registered"
    for name in engine.RUNBOOKS:
        assert f"`{name}`" in text, f"runbook {name} is not documented"


def test_iam_policy_in_docs_is_the_file() -> None:
    policy = json.loads((ROOT / "iam" / "stabilize-policy.json").read_text())
    text = (ROOT / "docs" / "deploy.md").read_text()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert f"`{action}`" in text, f"{action} is in the policy but not explained"
