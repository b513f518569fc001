"""Reading the commands out of Markdown: fenced code blocks, shell commands in them (continuation
lines, quotes spanning lines, trailing comments, `&&` / `;` / `|` between commands) as argv lists,
and `curl` commands as the HTTP requests they send. Used by tests/test_readme.py and
tests/service/api/test_doc_examples.py."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from urllib.parse import quote_plus, urlsplit

FENCE = re.compile(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
SHELL_LANGUAGES = ("sh", "bash", "shell", "console", "")
SEPARATORS = ("&&", "||", ";", "|", "&")


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int  # the line of the block's first line of code in its file (1-based)


@dataclass(frozen=True)
class Command:
    """One shell command: its text as written (continuations joined), its argv, the comments on its
    lines (without `#`), and the line it starts on in its file."""

    text: str
    argv: list[str]
    comment: str
    line: int

    def where(self, name: str) -> str:
        return f"{name}:{self.line}: {self.text}" + (f"   # {self.comment}" if self.comment else "")


def code_blocks(markdown: str) -> list[Block]:
    return [
        Block(m.group(1).lower(), m.group(2), markdown.count("\n", 0, m.start(2)) + 1)
        for m in FENCE.finditer(markdown)
    ]


def section(markdown: str, start: str, end: str) -> str:
    """The text from the line `start` to the line `end` (headings), blank lines kept so that line
    numbers can be recovered by `lines_before`."""
    first = markdown.index(f"\n{start}\n") + 1
    last = markdown.index(f"\n{end}\n", first) + 1
    return markdown[first:last]


def without_section(text: str, heading: str) -> str:
    """`text` with the section under `heading` (to the next heading of its level or above) blanked,
    its lines kept as empty lines."""
    match = re.search(rf"^{re.escape(heading)}\n", text, re.M)
    if match is None:
        return text
    level = len(heading) - len(heading.lstrip("#"))
    following = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    stop = following.start() if following else len(text)
    return text[: match.start()] + "\n" * text.count("\n", match.start(), stop) + text[stop:]


def _split_lines(text: str) -> list[tuple[str, str, int]]:
    """(command text, comments, 0-based line it starts on) for each logical line of `text`: a
    backslash-newline continues a line, a newline inside quotes is part of the word, `#` after
    whitespace outside quotes starts a comment."""
    out: list[tuple[str, str, int]] = []
    current: list[str] = []
    comments: list[str] = []
    quote: str | None = None
    line, start, i = 0, 0, 0

    def flush() -> None:
        nonlocal current, comments
        if "".join(current).strip():
            out.append(("".join(current).strip(), " ".join(comments), start))
        current, comments = [], []

    while i < len(text):
        char = text[i]
        if char == "\n":
            line += 1
        if not "".join(current).strip() and not char.isspace():
            start = line
        if quote == "'":
            current.append(char)
            quote = None if char == "'" else quote
        elif quote == '"':
            current.append(char)
            if char == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                line += text[i + 1] == "\n"
                i += 1
            elif char == '"':
                quote = None
        elif char == "\\" and text[i + 1 : i + 2] == "\n":
            current.append(" ")
            line += 1
            i += 1
        elif char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 1
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == "#" and (not current or current[-1][-1:].isspace()):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            comments.append(text[i + 1 : end].strip())
            i = end
            continue
        elif char == "\n":
            flush()
        else:
            current.append(char)
        i += 1
    if quote is not None:
        raise ValueError(f"an unclosed {quote} quote in:\n{text}")
    flush()
    return out


def shell_commands(block: Block) -> list[Command]:
    """The commands of a shell code block, each pipeline or `&&` list split into its commands."""
    commands: list[Command] = []
    for text, comment, offset in _split_lines(block.text):
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token in SEPARATORS:
                if argv:
                    commands.append(Command(text, argv, comment, block.line + offset))
                argv = []
            else:
                argv.append(token)
    return commands


def markdown_commands(markdown: str) -> list[Command]:
    return [c for b in code_blocks(markdown) if b.language in SHELL_LANGUAGES for c in shell_commands(b)]


@dataclass
class CurlRequest:
    """What a `curl` command sends."""

    method: str
    path: str  # path and query string, without scheme and host
    headers: dict[str, str] = field(default_factory=dict)
    form: list[tuple[str, str]] = field(default_factory=list)  # -F k=v
    files: list[tuple[str, str, str]] = field(default_factory=list)  # -F k=@file: (field, file, content type)
    data: list[str] = field(default_factory=list)  # -d, --data-urlencode (encoded)


class CurlError(ValueError):
    """A curl command this reader does not understand (an option it does not know, say)."""


NO_VALUE = {
    "-s": "",
    "--silent": "",
    "-S": "",
    "--show-error": "",
    "-f": "",
    "--fail": "",
    "-i": "",
    "--include": "",
    "-L": "",
    "--location": "",
    "-v": "",
    "--verbose": "",
    "-I": "head",
    "--head": "head",
    "-G": "get",
    "--get": "get",
    "-N": "",
    "--no-buffer": "",
    "--compressed": "",
}
WITH_VALUE = {
    "-X": "method",
    "--request": "method",
    "-H": "header",
    "--header": "header",
    "-F": "form",
    "--form": "form",
    "-d": "data",
    "--data": "data",
    "--data-raw": "data",
    "--data-binary": "data",
    "--data-urlencode": "urlencode",
    "--json": "json",
    "-o": "",
    "--output": "",
    "-w": "",
    "--write-out": "",
    "-m": "",
    "--max-time": "",
    "--connect-timeout": "",
    "-u": "",
    "--user": "",
}


def _options(argv: list[str]) -> list[tuple[str, str | None]]:
    """(option, value) pairs and ("url", URL) for the arguments of curl, short flags unbundled."""
    out: list[tuple[str, str | None]] = []
    rest = list(argv)
    while rest:
        token = rest.pop(0)
        if token.startswith("--"):
            name, _, inline = token.partition("=")
            if name in NO_VALUE:
                out.append((name, None))
            elif name in WITH_VALUE:
                if not inline and not rest:
                    raise CurlError(f"{name} needs a value")
                out.append((name, inline or rest.pop(0)))
            else:
                raise CurlError(f"unknown curl option {name}")
        elif token.startswith("-") and len(token) > 1:
            for n, letter in enumerate(token[1:], 1):
                flag = "-" + letter
                if flag in NO_VALUE:
                    out.append((flag, None))
                elif flag in WITH_VALUE:
                    value = token[n + 1 :]
                    if not value and not rest:
                        raise CurlError(f"{flag} needs a value")
                    out.append((flag, value or rest.pop(0)))
                    break
                else:
                    raise CurlError(f"unknown curl option {flag}")
        else:
            out.append(("url", token))
    return out


def curl_request(argv: list[str]) -> CurlRequest:
    """The request a `curl` command line sends (argv[0] is `curl`), as curl builds it: `-F` a
    multipart form, `-d` a urlencoded body (or what `Content-Type` says), `-G` the data in the URL."""
    if not argv or argv[0] != "curl":
        raise CurlError("not a curl command")
    method: str | None = None
    head = get = False
    urls: list[str] = []
    request = CurlRequest("GET", "")
    for option, value in _options(argv[1:]):
        kind = NO_VALUE.get(option, WITH_VALUE.get(option, "url"))
        if kind == "head":
            head = True
        elif kind == "get":
            get = True
        elif kind == "url":
            assert value is not None
            urls.append(value)
        elif kind == "method":
            method = value
        elif kind == "header":
            assert value is not None
            name, _, text = value.partition(":")
            request.headers[name.strip()] = text.strip()
        elif kind == "form":
            assert value is not None
            name, _, text = value.partition("=")
            if text.startswith("@"):
                file, _, params = text[1:].partition(";")
                media = (
                    params.removeprefix("type=") if params.startswith("type=") else "application/octet-stream"
                )
                if media == "application/octet-stream" and file.lower().endswith((".jpg", ".jpeg")):
                    media = "image/jpeg"
                request.files.append((name, file, media))
            elif text.startswith("<"):
                raise CurlError("-F name=<file is not supported here")
            else:
                request.form.append((name, text))
        elif kind in ("data", "json"):
            assert value is not None
            if value.startswith("@"):
                raise CurlError("-d @file is not supported here")
            request.data.append(value)
            if kind == "json":
                request.headers.setdefault("Content-Type", "application/json")
                request.headers.setdefault("Accept", "application/json")
        elif kind == "urlencode":
            assert value is not None
            name, equals, text = value.partition("=")
            request.data.append(f"{name}={quote_plus(text)}" if equals else quote_plus(name))
    if len(urls) != 1:
        raise CurlError(f"expected one URL, got {urls}")
    url = urls[0] if "://" in urls[0] else "http://" + urls[0]
    parts = urlsplit(url)
    request.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if (request.form or request.files) and request.data:
        raise CurlError("-F and -d together")
    if get and request.data:
        request.path += ("&" if "?" in request.path else "?") + "&".join(request.data)
        request.data = []
    default = "HEAD" if head else "POST" if request.form or request.files or request.data else "GET"
    request.method = (method or default).upper()
    return request
