"""Every command of the README's code blocks exists as written: `asen` subcommands and their flags
(the real parser), `make` targets (the Makefile), `python -m bench.X` modules and their flags; every
repository path its code, links and inline code name exists, and every link's anchor is a heading;
the demo paths it names are where `asen demo` puts them. The HTTP examples are sent to the service
by tests/service/api/test_doc_examples.py."""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.doc_commands import Command, code_blocks, markdown_commands

README = ROOT / "README.md"
# top-level folders of the repository: a path starting with one of them must exist
REPO_DIRS = ("docs", "bench", "tests", "deploy", "tools", "model", "index", "service", "asen_search")
PATH = re.compile(rf"(?<![\w/.$-])((?:{'|'.join(REPO_DIRS)})/[\w./-]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
DEMO = Path("var/demo")


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def commands(readme: str) -> list[Command]:
    found = markdown_commands(readme)
    assert found, "no commands found in README.md's code blocks"
    return found


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    from asen_search.service.cli.main import build_parser

    return build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _asen_problem(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """Why `asen ARGS` would not run as written (None: it parses). Each subcommand level is looked up,
    each `--flag` must be one the subcommand declares (argparse would accept abbreviations), and
    the whole line must parse."""
    command, words, rest = parser, ["asen"], list(argv[1:])
    while _subparsers(command):
        if not rest or rest[0].startswith("-"):
            return f"`{' '.join(words)}` needs a subcommand: {sorted(_subparsers(command))}"
        name = rest.pop(0)
        if name not in _subparsers(command):
            return (
                f"`{' '.join(words)} {name}`: no such subcommand (there are {sorted(_subparsers(command))})"
            )
        command = _subparsers(command)[name]
        words.append(name)
    for token in rest:
        flag = token.split("=", 1)[0]
        if (
            flag.startswith("-")
            and len(flag) > 1
            and not flag[1:].replace(".", "").isdigit()
            and flag not in command._option_string_actions
        ):
            return f"`{' '.join(words)}` has no option {flag}"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv[1:])
    except SystemExit:
        return f"does not parse: {errors.getvalue().strip().splitlines()[-1]}"
    return None


def test_every_asen_command_and_flag_exists(commands: list[Command], parser: argparse.ArgumentParser) -> None:
    asen = [c for c in commands if c.argv[0] in ("asen", ".venv/bin/asen")]
    assert len(asen) >= 20, [c.text for c in asen]
    problems = [
        f"{c.where('README.md')}\n    -> {why}"
        for c in asen
        if (why := _asen_problem(parser, ["asen", *c.argv[1:]])) is not None
    ]
    assert not problems, "\n".join(problems)


def _make_targets() -> set[str]:
    targets: set[str] = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.%/ -]+?)\s*:(?![:=])", line)
        if match and not line.startswith("\t"):
            targets.update(match.group(1).split())
    return targets


def test_every_make_target_exists(commands: list[Command]) -> None:
    targets = _make_targets()
    assert {"install", "serve", "test"} <= targets, targets
    make = [c for c in commands if c.argv[0] == "make"]
    assert make
    problems = [
        f"{c.where('README.md')}\n    -> no target {word!r} in the Makefile"
        for c in make
        for word in c.argv[1:]
        if not word.startswith("-") and "=" not in word and word not in targets
    ]
    assert not problems, "\n".join(problems)


def _module_flags(path: Path) -> set[str]:
    """The options a script declares with `add_argument("--flag", ...)`."""
    flags: set[str] = {"-h", "--help"}
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
        ):
            flags.update(
                a.value
                for a in node.args
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")
            )
    return flags


def _demo_problem(token: str, parser: argparse.ArgumentParser) -> str | None:
    """A path under var/demo must be one `asen demo` makes (service/jobs/demo.py's layout):
    the checkpoint, the index, or a file of the dataset that `asen synth`'s defaults draw."""
    from asen_search.service.jobs.demo import demo_layout

    layout, path = demo_layout(DEMO), Path(token.rstrip("/"))
    if (
        path in (DEMO, layout.data, layout.checkpoint, layout.checkpoint.parent, layout.index)
        or layout.index in path.parents
    ):
        return None
    if layout.data not in path.parents:
        return f"{token} is not made by `asen demo` (it makes {layout.data}, {layout.checkpoint}, {layout.index})"
    image = re.fullmatch(r"images/(train|valid|test)/(\d{5})\.jpg", path.relative_to(layout.data).as_posix())
    if image is None:
        return (
            None
            if path.relative_to(layout.data).parts[0] in ("images",)
            else f"{token}: not a demo image path"
        )
    synth = _subparsers(parser)["synth"]
    count = next(a.default for a in synth._actions if a.dest == image.group(1))
    if int(image.group(2)) >= count:
        return f"{token}: the demo's {image.group(1)} split has {count} images"
    return None


def test_python_modules_and_scripts_exist_with_their_flags(
    commands: list[Command], parser: argparse.ArgumentParser
) -> None:
    python = [c for c in commands if re.fullmatch(r"(\.venv/bin/)?python3?", c.argv[0])]
    assert python, "README.md runs no python module"
    problems = []
    for command in python:
        args = command.argv[1:]
        if args[:1] == ["-c"]:
            continue
        if args[:1] == ["-m"]:
            module, options = args[1], args[2:]
            script = ROOT / (module.replace(".", "/") + ".py")
        else:
            script, options = ROOT / args[0], args[1:]
        if not script.is_file():
            problems.append(f"{command.where('README.md')}\n    -> no {script.relative_to(ROOT)}")
            continue
        declared = _module_flags(script)
        problems += [
            f"{command.where('README.md')}\n    -> {script.relative_to(ROOT)} has no option {o}"
            for o in options
            if o.startswith("-") and o.split("=")[0] not in declared
        ]
        problems += [
            f"{command.where('README.md')}\n    -> {why}"
            for o in options
            if o.startswith(f"{DEMO}/") and (why := _demo_problem(o, parser)) is not None
        ]
        if script == ROOT / "bench" / "screenshots.py" and "--query" in options:
            query = options[options.index("--query") + 1]  # run after `make serve`: a demo image
            if not query.startswith(f"{DEMO}/data/images/"):
                problems.append(
                    f"{command.where('README.md')}\n    -> --query {query} is not an image of the demo "
                    f"dataset ({DEMO}/data/images/...)"
                )
    assert not problems, "\n".join(problems)


def test_every_demo_path_in_the_code_blocks_is_one_the_demo_makes(
    commands: list[Command], parser: argparse.ArgumentParser
) -> None:
    named = [(c, token) for c in commands for token in c.argv if token.startswith(f"{DEMO}/")]
    assert any("images/test" in token for _, token in named), "the screenshot command's query is gone"
    problems = [
        f"{c.where('README.md')}\n    -> {why}"
        for c, token in named
        if (why := _demo_problem(token, parser)) is not None
    ]
    assert not problems, "\n".join(problems)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    without_code = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", without_code, re.M)}


def test_every_repository_path_and_link_exists(readme: str) -> None:
    named: set[str] = set()
    for block in code_blocks(readme):
        named.update(m.group(1) for m in PATH.finditer(block.text))
    for span in INLINE.finditer(re.sub(r"^```.*?^```", "", readme, flags=re.M | re.S)):
        named.update(m.group(1) for m in PATH.finditer(span.group(1)))
    problems = [
        f"README.md names {path}, which does not exist"
        for path in sorted(named)
        if not (ROOT / path.rstrip(".,:;")).exists()
    ]
    links = [m.group(1) for m in LINK.finditer(readme) if not re.match(r"[a-z]+://|mailto:", m.group(1))]
    assert len(links) >= 10, links
    for link in links:
        target, _, anchor = link.partition("#")
        path = ROOT / target if target else README
        if not path.exists():
            problems.append(f"README.md links to {link}: {target} does not exist")
        elif anchor and anchor not in _anchors(path.read_text(encoding="utf-8")):
            problems.append(f"README.md links to {link}: {target or 'README.md'} has no heading #{anchor}")
    assert named and not problems, "\n".join(problems)
