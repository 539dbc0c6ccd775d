"""CLI output that other tools read: the enrich run's one-line reconciliation."""

from rich.console import Console

from newsflow import cli
from pipelines.enrich import EnrichReport


def test_an_enrich_run_prints_the_reports_summary(monkeypatch):
    console = Console(width=300, record=True)
    monkeypatch.setattr(cli, "console", console)
    counters = {
        "kafka_records_read": 30,
        "enriched": 24,
        "dead_lettered.decode": 6,
        "written.kafka": 24,
        "written.files": 24,
        "written.dlq": 6,
    }
    report = EnrichReport("run-7", "batch", [], counters, seconds=2.5, sinks=("kafka", "files"))
    cli._print_enrich(report)
    assert (
        console.export_text().strip() == f"run run-7 (2.5s on fnapi): {report.summary()}; offsets committed"
    )


def _synopsis() -> dict[tuple[str, ...], str]:
    """docs/CLI.md's synopsis block: command path -> its line (continuation lines joined)."""
    import re

    from newsflow.config import REPO_ROOT

    text = (REPO_ROOT / "docs" / "CLI.md").read_text(encoding="utf-8")
    block = text.split("## Synopsis", 1)[1].split("```", 2)[1]
    entries: dict[tuple[str, ...], str] = {}
    last: tuple[str, ...] | None = None
    for line in block.splitlines():
        if line.startswith("newsflow"):
            words = re.match(r"newsflow((?: [a-z]+)*)", line)
            assert words is not None
            last = tuple(words[1].split())
            assert last not in entries, f"{last} twice in the synopsis"
            entries[last] = line
        elif line.strip() and last is not None:
            entries[last] += " " + line.strip()
    return entries


def _commands(command, path=()):
    """(path, command) for the root and every leaf command of the command tree (typer's own Click)."""
    children = getattr(command, "commands", None)
    if not path or children is None:
        yield path, command
    for name, sub in (children or {}).items():
        yield from _commands(sub, (*path, name))


def test_the_cli_reference_lists_every_command_and_option():
    """docs/CLI.md's synopsis names each command and exactly the long options its --help shows."""
    import re

    import typer

    documented = _synopsis()
    seen = set()
    for path, command in _commands(typer.main.get_command(cli.app)):
        assert path in documented, f"docs/CLI.md's synopsis lacks `newsflow {' '.join(path)}`"
        seen.add(path)
        options = {
            opt
            for param in command.params
            if param.param_type_name == "option"
            for opt in param.opts
            if opt.startswith("--") and opt != "--help"
        }
        # A command's own options follow its name; the root's come before COMMAND.
        line = documented[path]
        line = line.split(" ".join(path), 1)[1] if path else line.split("COMMAND", 1)[0]
        assert set(re.findall(r"--[a-z][a-z0-9-]*", line)) == options, f"newsflow {' '.join(path)}"
    assert set(documented) == seen, f"documented commands that do not exist: {set(documented) - seen}"
