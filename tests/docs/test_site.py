"""The site builds strictly, offline, and its generated reference shows every CLI option and plan field."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import pytest
from _docs import DOCS, REPO

sys.path.insert(0, str(REPO / "scripts"))
import docs_hooks  # noqa: E402

# Where a page may point outside the site: links a reader clicks. Nothing the browser loads by itself.
LOADED = re.compile(r"<(?:script|img|link|iframe|source|video|audio)\b[^>]*\b(?:src|href)=\"([^\"]+)\"", re.I)


def _text(page: Path) -> str:
    """A built page's text as a reader sees it (tags dropped, entities decoded), without its code blocks: the
    usage lines argparse prints name every option, so only the tables and prose count as documenting one."""
    text = re.sub(r"<pre\b.*?</pre>", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def missing_options(text: str, options: list[tuple[str, str]]) -> list[str]:
    """The ``command option`` pairs whose command section of ``text`` (the CLI reference) lacks the option."""
    sections: dict[str, str] = {}
    for heading, body in re.findall(r"^(unetkit(?: [\w-]+)+)¶\n(.*?)(?=^unetkit(?: [\w-]+)+¶\n|\Z)", text,
                                    re.MULTILINE | re.DOTALL):
        sections[heading] = body
    return [f"{line} {name}" for line, name in options
            if line != "unetkit" and not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", sections.get(line, ""))]


def missing_fields(text: str, fields: list[str]) -> list[str]:
    """The dotted plan fields that do not appear in ``text`` (the plan reference), each as a whole word."""
    return [f for f in fields if not re.search(rf"(?<![\w.]){re.escape(f)}(?![\w.])", text)]


def test_site_builds_strictly_with_every_page_of_the_nav(site: Path) -> None:
    for page in ["index.html", "reference/cli.html", "reference/plan.html", "reference/api.html",
                 "tutorials/em-membranes.html", "how-to/annotation-formats.html", "how-to/fewer-labels.html",
                 "reference/bad-inputs.html", "benchmarks/index.html"]:
        assert (site / page).is_file(), page
    # Every marker was replaced: none is left in the built pages.
    for page in site.rglob("*.html"):
        assert "gen:" not in page.read_text(encoding="utf-8"), page


def test_nothing_is_loaded_from_the_network(site: Path) -> None:
    external = {}
    for page in site.rglob("*.html"):
        for url in LOADED.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^(?:[a-z]+:)?//", url, re.I):
                external.setdefault(str(page.relative_to(site)), []).append(url)
    assert not external, external
    css_js = [p for p in site.rglob("*") if p.suffix in (".css", ".js")]
    assert css_js, "the theme's own assets are in the build"
    for asset in css_js:
        assert "fonts.googleapis" not in asset.read_text(encoding="utf-8", errors="replace"), asset


def test_every_cli_option_is_in_the_cli_reference(site: Path) -> None:
    options = docs_hooks.cli_options()
    assert len(options) > 100 and ("unetkit train", "--time-budget") in options
    assert ("unetkit diffusion sample", "--eta") in options  # the nested sub-commands too
    assert missing_options(_text(site / "reference" / "cli.html"), options) == []


def test_every_plan_field_is_in_the_plan_reference_with_a_meaning(site: Path) -> None:
    fields = docs_hooks.plan_fields()
    assert {"train.lr", "infer.tta", "data.value_map", "model.kwargs.encoder", "model.kwargs.ds_eval"} <= set(fields)
    assert missing_fields(_text(site / "reference" / "plan.html"), fields) == []
    # Every field's row has a meaning (from the docstrings), and the bounds of unetkit.config.BOUNDS are shown.
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in docs_hooks.plan_markdown().splitlines()
            if r.startswith("| `")]
    assert len(rows) == len(fields) and all(len(r) == 5 for r in rows)
    assert [r[0] for r in rows if not r[4]] == []
    assert next(r for r in rows if r[0] == "`train.lr`")[1:4] == ["`float`", "`0.001`", "positive"]
    assert next(r for r in rows if r[0] == "`data.mask_threshold`")[1:3] == ["`int \\| None`", "`null`"]


def test_the_checks_fail_when_an_option_or_a_field_is_missing(site: Path) -> None:
    """The two checks above can fail: the real pages with one option's / one field's rows taken out."""
    cli = _text(site / "reference" / "cli.html")
    options = docs_hooks.cli_options()
    without = re.sub(r"--value-map\b", "", cli)
    assert {"unetkit check --value-map", "unetkit train --value-map"} <= set(missing_options(without, options))
    # An option a parser gains without the reference being rebuilt.
    assert missing_options(cli, [*options, ("unetkit predict", "--brand-new")]) == ["unetkit predict --brand-new"]
    plan = _text(site / "reference" / "plan.html")
    assert missing_fields(plan.replace("infer.blend", "infer.blnd"), docs_hooks.plan_fields()) == ["infer.blend"]


def test_a_field_without_a_documented_meaning_is_found() -> None:
    from dataclasses import dataclass

    @dataclass
    class Documented:
        """A test class.

        Attributes:
            alpha / beta: two at once,
                over two lines.
            gamma: one.
        """

        alpha: int = 0
        beta: int = 0
        gamma: int = 0
        delta: int = 0

    meanings = docs_hooks.attribute_docs(Documented)
    assert meanings == {"alpha": "two at once, over two lines.", "beta": "two at once, over two lines.",
                        "gamma": "one."}


def test_the_bad_input_table_lists_the_check_cases() -> None:
    table = docs_hooks.bad_inputs_markdown(command="check")
    cases = [c for c in docs_hooks.bad_input_cases() if c.command == "check"]
    assert len(cases) >= 10
    assert table.count("\n| ") == len(cases)
    assert "| masks saved as 0/255 |" in table and "`--mask-threshold 128`" in table


def test_benchmark_summaries_are_complete_and_grouped_by_machine() -> None:
    summaries = docs_hooks.benchmark_summaries()
    assert summaries, "docs/benchmarks/data holds the committed summaries"
    for s in summaries:
        assert all(len(row) == len(s["columns"]) for row in s["rows"]), s["_file"]
        assert s["machine"]["flags"] is not None and s["command"].strip(), s["_file"]
    page = docs_hooks.benchmarks_markdown()
    kinds = {s["machine"]["kind"] for s in summaries}
    assert sorted(re.findall(r"^## (.+)$", page, re.MULTILINE)) == sorted(kinds)


def test_a_summary_without_its_command_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"title": "t", "machine": {"kind": "k"}, "date": "d", "columns": [], "rows": []}')
    with pytest.raises(ValueError, match=r"x\.json: benchmark summary lacks command"):
        docs_hooks.benchmark_summaries(tmp_path)


def test_the_three_pages_being_written_elsewhere_are_in_the_nav() -> None:
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for page in ["how-to/annotation-formats.md", "how-to/fewer-labels.md", "reference/bad-inputs.md"]:
        assert page in nav and (DOCS / page).is_file(), page


def test_the_readme_is_short_and_keeps_its_first_lines() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    assert lines[:5] == [
        "# unetkit", "", "```bash",
        "make demo   # set-up + the main job: check, train (5-min budget), evaluate, predict on ISBI 2012 EM from "
        "../shared/datasets",
        "make test   # set-up + the test suite (CI: .ci/run = make lint (ruff, mypy src) + make test, after installing "
        "Debian's chromium if missing)",
    ]
