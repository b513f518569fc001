"""Every curl example of docs/service.md's API section and of README.md, sent as curl would send it
to the service (a TestClient over the app, on a copy of the tagged demo index with the tagging
checkpoint, an API key set; for README.md with the copy calibration training writes), in the order
the documents give them: none may answer 5xx, and each answers what it implies: 2xx, or the status
its comment starts with (`# 304`, `# 201; 409 if it exists`; `# 422 unknown_field` also checks the
code). A batch whose items fail fails too.

Placeholders: image files (`-F image=@shirt.jpg`, `$(base64 -w0 new.jpg)`) are demo images;
`$ASEN_API_KEY` is the key; `$NEXT_CURSOR` is the previous answer's `next_cursor` and `$ETAG` its
`ETag`. A failure quotes each example that failed, with its line."""

from __future__ import annotations

import base64
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from asen_search.service.api.app import create_app
from asen_search.service.api.errors import ERRORS
from asen_search.service.api.settings import Settings
from tests.helpers import ROOT
from tests.helpers.doc_commands import (
    Command,
    CurlError,
    CurlRequest,
    curl_request,
    markdown_commands,
    section,
    without_section,
)

API_KEY = "doc-example-key"
VARIABLES = {"ASEN_API_KEY": API_KEY}
BASE64 = re.compile(r"\$\(base64(?: -w ?0)? ([\w./-]+)\)")
VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
STATUS = re.compile(r"^\s*([1-5]\d\d)\b[\s:;,]*`?([a-z_]+)?")


def _api_examples() -> list[Command]:
    text = (ROOT / "docs" / "service.md").read_text(encoding="utf-8")
    api = section(text, "## API", "### Errors")
    api = without_section(api, "### Python client")
    offset = text[: text.index(api)].count("\n")
    return [Command(c.text, c.argv, c.comment, c.line + offset) for c in markdown_commands(api)]


def _readme_examples() -> list[Command]:
    return markdown_commands((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.fixture
def doc_client(tmp_path: Path, tagging_checkpoint: Path, tagged_index: Path) -> Iterator[TestClient]:
    """The demo catalogue with predicted tags, value prototypes and precision curves; writes need
    the key, as they do in the documents."""
    index = Path(shutil.copytree(tagged_index, tmp_path / "index"))
    with TestClient(
        create_app(Settings(checkpoint=tagging_checkpoint, index=index, api_key=API_KEY))
    ) as client:
        yield client


class Examples:
    """Sends examples one after another, as a reader would, remembering the previous answer."""

    def __init__(self, client: TestClient, images: Path) -> None:
        self.client = client
        self.pictures = sorted(images.glob("*.jpg"))
        self.files: dict[str, Path] = {}
        self.previous: Any = None  # the answer before (an httpx response)

    def image(self, name: str) -> Path:
        """A demo image for a file an example names: the same one each time it names it."""
        if name not in self.files:
            self.files[name] = self.pictures[(41 + 7 * len(self.files)) % len(self.pictures)]
        return self.files[name]

    def substitute(self, token: str) -> str:
        token = BASE64.sub(lambda m: base64.b64encode(self.image(m.group(1)).read_bytes()).decode(), token)

        def variable(match: re.Match[str]) -> str:
            name, previous = match.group(1), self.previous
            if name in VARIABLES:
                return VARIABLES[name]
            if name not in ("NEXT_CURSOR", "ETAG"):
                raise CurlError(f"unknown variable ${name}")
            if previous is None:
                raise CurlError(f"${name} but no answer before it")
            if name == "ETAG":
                if "etag" not in previous.headers:
                    raise CurlError(f"$ETAG: the answer before has no ETag: {previous.status_code}")
                return previous.headers["etag"]
            cursor = previous.json().get("next_cursor")
            if not cursor:
                raise CurlError(f"$NEXT_CURSOR: the answer before has no next_cursor: {previous.text[:200]}")
            return str(cursor)

        return VARIABLE.sub(variable, token)

    def build(self, request: CurlRequest) -> tuple[dict[str, str], bytes | None]:
        headers = dict(request.headers)
        if request.form or request.files:
            boundary = uuid.uuid4().hex
            body = b""
            for name, value in request.form:
                body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                body += value.encode() + b"\r\n"
            for name, file, media in request.files:
                body += (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{file}"\r\n'
                    f"Content-Type: {media}\r\n\r\n"
                ).encode()
                body += self.image(file).read_bytes() + b"\r\n"
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            return headers, body + f"--{boundary}--\r\n".encode()
        if request.data:
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            return headers, "&".join(request.data).encode()
        return headers, None

    def problem(self, command: Command) -> str | None:
        """Why an example does not answer as it says (None: it does)."""
        try:
            request = curl_request([command.argv[0], *(self.substitute(t) for t in command.argv[1:])])
        except CurlError as exc:
            return f"cannot send it: {exc}"
        headers, body = self.build(request)
        answer = self.client.request(request.method, request.path, content=body, headers=headers)
        self.previous = answer
        said = STATUS.match(command.comment)
        shown = f"{answer.status_code} {answer.text[:400]}"
        if answer.status_code >= 500:
            return f"answered {shown}"
        if said is None:
            if not 200 <= answer.status_code < 300:
                return f"answered {shown} (no status in its comment: 2xx expected)"
        elif answer.status_code != int(said.group(1)):
            return f"answered {shown}, its comment says {said.group(1)}"
        elif said.group(2) in ERRORS and answer.json().get("error") != said.group(2):
            return f"answered {shown}, its comment says {said.group(2)}"
        results: Any = (
            answer.json().get("results") if "json" in answer.headers.get("content-type", "") else None
        )
        if "batch" in request.path and "error" not in command.comment:
            failed = [r for r in results or [] if r.get("status") == "error"]
            if failed:
                return f"a batch item failed: {json.dumps(failed)[:400]}"
        return None


def _run(client: TestClient, demo_dataset: Path, examples: list[Command], name: str) -> int:
    sender = Examples(client, demo_dataset / "images" / "test")
    curls = [c for c in examples if c.argv[0] == "curl"]
    problems = [f"{c.where(name)}\n    -> {why}" for c in curls if (why := sender.problem(c)) is not None]
    assert not problems, f"{len(problems)} of {len(curls)} curl examples of {name} fail:\n" + "\n".join(
        problems
    )
    return len(curls)


def test_the_api_sections_curl_examples_answer_as_documented(
    doc_client: TestClient, demo_dataset: Path
) -> None:
    examples = _api_examples()
    sent = _run(doc_client, demo_dataset, examples, "docs/service.md")
    assert sent >= 30  # the section's examples were found


@pytest.fixture
def calibrated_doc_client(
    tmp_path: Path, tagging_checkpoint: Path, tagged_index: Path, demo_dataset: Path
) -> Iterator[TestClient]:
    """As `doc_client`, with the copy calibration beside the checkpoint that `asen train` writes (the
    README's model is the demo's, trained with it); docs/service.md shows the refusal without one."""
    from asen_search.model.copy_calibration import calibrate_copies, save_copy_calibration
    from asen_search.model.data.dataset import load_dataset
    from asen_search.model.encoder import Encoder

    checkpoint = Path(shutil.copy(tagging_checkpoint, tmp_path / "tagging.pt"))
    save_copy_calibration(
        checkpoint,
        calibrate_copies(
            Encoder.from_checkpoint(checkpoint), load_dataset(demo_dataset), max_images=120, progress=False
        ),
    )
    index = Path(shutil.copytree(tagged_index, tmp_path / "index"))
    with TestClient(create_app(Settings(checkpoint=checkpoint, index=index, api_key=API_KEY))) as client:
        yield client


def test_the_readmes_curl_examples_answer_as_documented(
    calibrated_doc_client: TestClient, demo_dataset: Path
) -> None:
    assert _run(calibrated_doc_client, demo_dataset, _readme_examples(), "README.md") >= 6


def test_a_wrong_example_fails_with_its_text(doc_client: TestClient, demo_dataset: Path) -> None:
    wrong = markdown_commands(
        "```sh\ncurl -s localhost:8000/search -F attribute=neckline -F topk=5 \\\n"
        "     -F item_id=test-00042\n"
        "curl -s -I localhost:8000/items/nope      # 200\n"
        "curl -s localhost:8000/search -d '{\"top_k\": 1}' -H 'Content-Type: application/json'"
        "  # 422 attribute_required\n```\n"
    )
    with pytest.raises(AssertionError) as failed:
        _run(doc_client, demo_dataset, wrong, "example.md")
    message = str(failed.value)
    assert (
        "3 of 3" in message
        and "example.md:2: curl -s localhost:8000/search -F attribute=neckline -F topk=5" in message
    )
    assert (
        "unknown_field" in message
        and "its comment says 200" in message
        and "its comment says attribute_required" in message
    )
