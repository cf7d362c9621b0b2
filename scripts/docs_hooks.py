"""The documentation's generated parts, filled in at build time so they cannot drift from the code.

A page asks for a part with a marker line, ``<!-- gen:NAME -->``; :func:`on_page_markdown` (an mkdocs hook,
named in ``mkdocs.yml``) replaces it with the part's markdown:

- ``cli``: every ``unetkit`` command and option, from the argparse parsers (``unetkit.cli.build_parser``);
- ``plan``: every plan field with its type, default, bounds and meaning, from the config dataclasses
  (``unetkit.config``, ``unetkit.data.options``, ``unetkit.model_config``: types and defaults from the fields,
  bounds from ``unetkit.config.BOUNDS``, meanings from the docstrings' ``Attributes`` sections);
- ``bad-inputs-check``: the dataset problems ``unetkit check`` reports, from the bad-input corpus
  (``tests/badinput/_cases.py``: each case's problem, command and the words its one-line error must hold);
- ``benchmarks``: the benchmark tables, from the summaries committed under ``docs/benchmarks/data/*.json``.

Run on its own to print one part: ``PYTHONPATH=src python scripts/docs_hooks.py cli``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCHMARK_DATA = REPO / "docs" / "benchmarks" / "data"
MARKER = re.compile(r"^<!-- gen:([a-z0-9-]+) -->$", re.MULTILINE)


# -- the hook ------------------------------------------------------------------------------------------------
def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs hook: replace each ``<!-- gen:NAME -->`` line with the generated part NAME."""
    return MARKER.sub(lambda m: part(m.group(1)), markdown)


def part(name: str) -> str:
    """The markdown of one generated part.

    Raises:
        KeyError: no part of that name (the build then fails, naming it).
    """
    parts: dict[str, Callable[[], str]] = {
        "cli": cli_markdown,
        "plan": plan_markdown,
        "bad-inputs-check": lambda: bad_inputs_markdown(command="check"),
        "benchmarks": benchmarks_markdown,
    }
    if name not in parts:
        raise KeyError(f"<!-- gen:{name} -->: no such generated part; known: {', '.join(parts)}")
    return parts[name]()


def _cell(text: object) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _markdown(rst: str) -> str:
    """Docstring text (reST inline markup) as markdown: ``code`` and :role:`target` become `code`."""
    return re.sub(r"``(.+?)``", r"`\1`", re.sub(r":\w+:`~?([^`]+)`", r"`\1`", rst))


# -- CLI ---------------------------------------------------------------------------------------------------
def commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (command line, parser) of ``unetkit``, depth first: ``unetkit``, ``unetkit check``, ...,
    ``unetkit diffusion train``."""
    from unetkit.cli import build_parser

    def walk(prefix: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield prefix, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(f"{prefix} {name}", sub)

    yield from walk("unetkit", build_parser())


def _option_name(action: argparse.Action) -> str:
    if action.option_strings:
        value = "" if action.nargs == 0 else action.metavar or (action.dest.upper() if action.choices is None else "")
        return ", ".join(f"`{o} {value}`" if value else f"`{o}`" for o in action.option_strings)
    return f"`{action.metavar or action.dest}`"


def _help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    text = formatter._expand_help(action) if action.help else ""  # %(default)s and (default: X) as --help
    text = text.replace(" (default: )", "")  # an empty-string default says nothing
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        text = f"{text.rstrip('.')}. Choices: {', '.join(f'`{c}`' for c in action.choices)}."
    if action.nargs in ("+", "*"):
        text = f"{text} (one or more)" if action.nargs == "+" else f"{text} (any number)"
    if isinstance(action, argparse._AppendAction):
        text = f"{text} (repeatable)"
    if action.required and action.option_strings:
        text = f"{text} **Required.**"
    return text


def cli_markdown() -> str:
    """Markdown for every command: its description, usage, and one table per argument group."""
    out: list[str] = []
    for line, parser in commands():
        if line == "unetkit":
            continue
        out += [f"## {line}", "", parser.description or "", "", "```text", parser.format_usage().strip(), "```", ""]
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for sub in subparsers:
            out += ["| sub-command | what it does |", "|---|---|"]
            out += [f"| [`{line} {c.dest}`](#{_anchor(f'{line} {c.dest}')}) | {_cell(c.help)} |"
                    for c in sub._choices_actions]
            out.append("")
        for group in parser._action_groups:
            actions = [a for a in group._group_actions
                       if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)]
            if not actions:
                continue
            title = {"positional arguments": "Arguments", "options": "Options"}.get(group.title or "", group.title)
            out += [f"**{str(title).capitalize()}**", "", "| option | meaning |", "|---|---|"]
            out += [f"| {_option_name(a)} | {_cell(_help_text(parser, a))} |" for a in actions]
            out.append("")
    return "\n".join(out)


def _anchor(heading: str) -> str:
    """The id Python-Markdown's toc gives a heading (lower case, words joined by '-')."""
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower())


def cli_options() -> list[tuple[str, str]]:
    """(command line, option or argument name) for everything a user can type; what the reference must show."""
    found = []
    for line, parser in commands():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help is argparse.SUPPRESS:
                continue
            for name in action.option_strings or [action.metavar or action.dest]:
                found.append((line, str(name)))
    return found


# -- plan fields -------------------------------------------------------------------------------------------
def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> meaning, from the ``Attributes:`` sections of ``cls`` and its bases' docstrings
    (``a / b: text`` documents both ``a`` and ``b``)."""
    meanings: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = klass.__dict__.get("__doc__") or ""
        section = re.search(r"^(\s*)Attributes:\n(.*?)(?=^\s*\w+:\n|\Z)", doc, re.MULTILINE | re.DOTALL)
        if not section:
            continue
        current: list[str] = []
        for raw in section.group(2).splitlines():
            entry = re.match(r"^\s+((?:\w+)(?:\s*/\s*\w+)*):\s+(.*)$", raw)
            indent = len(raw) - len(raw.lstrip())
            if entry and (not current or indent <= _entry_indent(section.group(2))):
                current = [n.strip() for n in entry.group(1).split("/")]
                for name in current:
                    meanings[name] = entry.group(2).strip()
            elif raw.strip() and current:
                for name in current:
                    meanings[name] += " " + raw.strip()
    return meanings


def _entry_indent(block: str) -> int:
    lines = [ln for ln in block.splitlines() if ln.strip()]
    return min(len(ln) - len(ln.lstrip()) for ln in lines) if lines else 0


def _type_name(hint: Any) -> str:
    text = str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
    return text.replace("typing.", "").replace("NoneType", "None")


def _default(f: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def plan_sections() -> list[tuple[str, type]]:
    """(prefix, dataclass) of every part of a plan, ``model.kwargs`` as the built-in U-Nets' typed configs."""
    from unetkit.config import InferConfig, ModelConfig, Plan, TrainConfig
    from unetkit.data.options import DataConfig
    from unetkit.model_config import SegModelConfig, UNetPlusPlusConfig

    return [("", Plan), ("data", DataConfig), ("model", ModelConfig), ("model.kwargs", SegModelConfig),
            ("model.kwargs", UNetPlusPlusConfig), ("train", TrainConfig), ("infer", InferConfig)]


def plan_fields() -> list[str]:
    """Every dotted plan field (``train.lr``, ``model.kwargs.width``, ...): what the reference must show."""
    names: list[str] = []
    for prefix, cls in plan_sections():
        for f in dataclasses.fields(cls):
            name = f"{prefix}.{f.name}" if prefix else f.name
            if name not in names:
                names.append(name)
    return names


def plan_markdown() -> str:
    """One table per plan section: field, type, default, bounds, meaning."""
    from unetkit.config import BOUNDS

    out: list[str] = []
    seen: set[str] = set()
    for prefix, cls in plan_sections():
        hints = typing.get_type_hints(cls)
        meanings = attribute_docs(cls)
        fields = [f for f in dataclasses.fields(cls) if f"{prefix}.{f.name}" not in seen]
        title = f"`{prefix}`" if prefix else "The plan file"
        if cls.__name__ == "UNetPlusPlusConfig":
            title = "`model.kwargs`, `unetplusplus` only"
        out += [f"## {title}", "", f"From `{cls.__module__}.{cls.__name__}`.", "",
                "| field | type | default | bounds | meaning |", "|---|---|---|---|---|"]
        for f in fields:
            name = f"{prefix}.{f.name}" if prefix else f.name
            seen.add(name)
            if dataclasses.is_dataclass(hints[f.name]):
                default = f"see [`{name}`](#{name.replace('.', '')})"
            else:
                default = f"`{json.dumps(_default(f))}`"
            bounds = BOUNDS.get(name, (None, ""))[1] or ""
            meaning = _markdown(meanings.get(f.name, ""))
            out.append(f"| `{name}` | `{_cell(_type_name(hints[f.name]))}` | {default} | {_cell(bounds)} | "
                       f"{_cell(meaning)} |")
        out.append("")
    return "\n".join(out)


# -- bad inputs --------------------------------------------------------------------------------------------
def bad_input_cases() -> list[Any]:
    """The bad-input corpus's cases (``tests/badinput/_cases.py``; importing it reads no data)."""
    folder = str(REPO / "tests" / "badinput")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    from _cases import CASES  # type: ignore[import-not-found]

    return list(CASES)


def bad_inputs_markdown(*, command: str) -> str:
    """A table of the corpus's cases for one command: the problem, the command run, what the error names."""
    rows = ["| problem | command | the one-line error contains | exit |", "|---|---|---|---|"]
    for case in bad_input_cases():
        if case.command != command:
            continue
        words = [a.replace("{root}/", "").replace("{root}", ".") for a in case.args]
        expect = ", ".join(f"`{_cell(e)}`" for e in case.expect)
        rows.append(f"| {_cell(case.what)} | `{_cell('unetkit ' + ' '.join(words))}` | {expect} | {case.exit} |")
    return "\n".join(rows) + "\n"


# -- benchmarks --------------------------------------------------------------------------------------------
def benchmark_summaries(folder: Path = BENCHMARK_DATA) -> list[dict[str, Any]]:
    """The committed benchmark summaries, sorted by machine kind then date.

    Raises:
        ValueError: a summary without one of the required keys (named with its file).
    """
    required = ("title", "machine", "date", "command", "columns", "rows")
    summaries = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{path}: benchmark summary lacks {', '.join(missing)}")
        data["_file"] = path.name
        summaries.append(data)
    return sorted(summaries, key=lambda s: (s["machine"]["kind"], s["date"], s["title"]))


def benchmarks_markdown() -> str:
    """One section per machine kind (its CPU flags shown), one table per summary with its command and source."""
    out: list[str] = []
    kind = None
    for s in benchmark_summaries():
        machine = s["machine"]
        if machine["kind"] != kind:
            kind = machine["kind"]
            flags = ", ".join(f"`{f}`" for f in machine.get("flags", [])) or "none of the tracked ones"
            out += [f"## {kind}", "", f"CPU flags: {flags}. {machine.get('note', '')}".strip(), ""]
        out += [f"### {s['title']}", "", f"Measured {s['date']}. {s.get('setup', '')}".strip(), ""]
        out += ["| " + " | ".join(_cell(c) for c in s["columns"]) + " |",
                "|" + "---|" * len(s["columns"])]
        out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in s["rows"]]
        out += ["", f"Command: `{s['command']}`", ""]
        if s.get("notes"):
            out += [f"- {n}" for n in s["notes"]] + [""]
        out += [f"Source: `docs/benchmarks/data/{s['_file']}` ({_cell(s.get('source', ''))})", ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(part(sys.argv[1] if len(sys.argv) > 1 else "cli"))
