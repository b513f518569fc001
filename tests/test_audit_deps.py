"""tools/audit_deps.py: the lock parser and the audit's decisions, with a fake network (no requests)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "audit_deps.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_deps", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_deps"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


ad = _load()
PYPI = ad.PYPI_URL
OSV = ad.OSV_URL

Answers = dict[str, Any]


def fake_fetch(answers: Answers, calls: list[str] | None = None) -> Callable[..., tuple[int, Any]]:
    """A Fetch: ``answers[url]`` is ``(status, json)`` or an exception to raise; a missing URL is a 404."""

    def fetch(url: str, body: dict[str, Any] | None, timeout: float) -> tuple[int, Any]:
        if calls is not None:
            calls.append(url)
        answer = answers.get(url, (404, None))
        if isinstance(answer, Exception):
            raise answer
        return answer

    return fetch


OSV_DOWN = {f"{OSV}/querybatch": ad.FetchError("api.osv.dev: Name or service not known")}


def vuln(vid: str, fixed: str, alias: str = "") -> dict[str, Any]:
    """A PyPI JSON ``vulnerabilities`` entry."""
    return {"id": vid, "aliases": [alias] if alias else [], "fixed_in": [fixed], "withdrawn": None,
            "summary": "bad", "link": f"https://osv.dev/vulnerability/{vid}"}


def project(latest: str, vulns: list[dict[str, Any]] | None = None) -> tuple[int, dict[str, Any]]:
    """A PyPI per-project JSON answer."""
    return 200, {"info": {"version": latest}, "vulnerabilities": vulns or []}


def run(tmp_path: Path, lock: str, answers: Answers, *args: str) -> tuple[int, str]:
    """main() over ``lock`` with the fake network; its exit status and stdout."""
    path = tmp_path / "requirements.lock"
    path.write_text(lock)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = ad.main(["--lock", str(path), *args], fetch=fake_fetch(answers))
    return status, out.getvalue()


def test_parse_lock() -> None:
    text = """\
# header comment
-c other.txt

Jinja2==3.1.6
numpy==2.4.6 ; python_version >= "3.11"  # trailing comment
uvicorn[standard]==0.54.0
jinja2==3.1.6
requests>=2
torch @ https://example.org/torch.whl
pkg==1.0 \\
    --hash=sha256:abc
"""
    pins, skipped = ad.parse_lock(text)
    assert pins == [ad.Pin("Jinja2", "3.1.6"), ad.Pin("numpy", "2.4.6"), ad.Pin("uvicorn", "0.54.0"),
                    ad.Pin("pkg", "1.0")]
    assert skipped == ["requests>=2", "torch @ https://example.org/torch.whl"]


def test_vulnerable_pin_exits_1(tmp_path: Path) -> None:
    answers = {**OSV_DOWN, f"{PYPI}/jinja2/3.1.4/json": (200, {"vulnerabilities": [vuln("GHSA-1", "3.1.5")]})}
    status, out = run(tmp_path, "Jinja2==3.1.4\n", answers)
    assert status == 1
    assert "GHSA-1" in out and "fixed in 3.1.5" in out and "1 known vulnerabilities" in out


def test_fixed_version_exits_0(tmp_path: Path) -> None:
    answers = {**OSV_DOWN, f"{PYPI}/jinja2/3.1.5/json": (200, {"vulnerabilities": []})}
    status, out = run(tmp_path, "Jinja2==3.1.5\n", answers)
    assert status == 0
    assert "1 audited (pypi (version) 1)" in out and "WARNING" not in out


def test_latest_release_data_used_only_when_it_is_the_pin(tmp_path: Path) -> None:
    answers = {
        **OSV_DOWN,
        f"{PYPI}/fastapi/json": project("0.165.0", [vuln("PYSEC-9", "0.166.0")]),
        f"{PYPI}/numpy/json": project("2.5.5", [vuln("PYSEC-8", "2.5.6")]),  # about 2.5.5, not our 2.4.6
    }
    status, out = run(tmp_path, "fastapi==0.165.0\nnumpy==2.4.6\n", answers)
    assert status == 1
    assert "PYSEC-9" in out and "PYSEC-8" not in out
    assert "not audited (pinned 2.4.6, latest 2.5.5; no per-version data reachable)" in out


def test_not_audited_counted_and_alone_exits_2(tmp_path: Path) -> None:
    answers = {**OSV_DOWN, f"{PYPI}/numpy/json": project("2.5.5"), f"{PYPI}/fastapi/json": project("0.165.0")}
    status, out = run(tmp_path, "fastapi==0.165.0\nnumpy==2.4.6\n", answers)
    assert status == 0
    assert "1 audited" in out and "1 not audited" in out
    assert "WARNING: 1 of 2 pinned packages could NOT be audited" in out

    status, out = run(tmp_path, "numpy==2.4.6\nnotonpypi==1.0\n", answers)
    assert status == 2
    assert "0 audited" in out and "2 not audited" in out and "not found on PyPI" in out


def test_unreachable_exits_2(tmp_path: Path) -> None:
    calls: list[str] = []
    down = ad.FetchError("pypi.org: Temporary failure in name resolution")
    answers = {**OSV_DOWN, **{f"{PYPI}/{n}/json": down for n in ("a", "b", "c")}}
    path = tmp_path / "requirements.lock"
    path.write_text("a==1\nb==1\nc==1\n")
    status = ad.main(["--lock", str(path), "--quiet"], fetch=fake_fetch(answers, calls))
    assert status == 2
    assert len(calls) == 2  # OSV once, one PyPI probe: no request per pin once the network is known down


def test_ignore_by_id_or_alias(tmp_path: Path) -> None:
    answers = {
        **OSV_DOWN,
        f"{PYPI}/jinja2/3.1.4/json": (200, {"vulnerabilities": [vuln("GHSA-1", "3.1.5", alias="CVE-2024-1")]}),
        f"{PYPI}/h11/0.14.0/json": (200, {"vulnerabilities": [vuln("PYSEC-2", "0.16.0")]}),
    }
    lock = "Jinja2==3.1.4\nh11==0.14.0\n"
    assert run(tmp_path, lock, answers, "--ignore", "CVE-2024-1")[0] == 1
    status, out = run(tmp_path, lock, answers, "--ignore", "CVE-2024-1", "--ignore", "PYSEC-2")
    assert status == 0
    assert "2 ignored" in out and "ignored: GHSA-1" in out


def test_withdrawn_is_not_a_finding(tmp_path: Path) -> None:
    withdrawn = vuln("GHSA-W", "9") | {"withdrawn": "2024-01-01T00:00:00Z"}
    answers = {**OSV_DOWN, f"{PYPI}/jinja2/3.1.4/json": (200, {"vulnerabilities": [withdrawn]})}
    assert run(tmp_path, "Jinja2==3.1.4\n", answers)[0] == 0


def test_osv_first_with_fixed_versions(tmp_path: Path) -> None:
    calls: list[str] = []
    record = {"id": "GHSA-O", "aliases": ["CVE-2023-7"], "affected": [
        {"package": {"ecosystem": "PyPI", "name": "Jinja2"}, "ranges": [{"type": "ECOSYSTEM", "events": [
            {"introduced": "0"}, {"fixed": "3.1.3"}]}]},
        {"package": {"ecosystem": "PyPI", "name": "other"}, "ranges": [{"events": [{"fixed": "99"}]}]},
    ]}
    answers = {
        f"{OSV}/querybatch": (200, {"results": [{"vulns": [{"id": "GHSA-O", "modified": "x"}]}, {}]}),
        f"{OSV}/vulns/GHSA-O": (200, record),
    }
    path = tmp_path / "requirements.lock"
    path.write_text("jinja2==3.1.2\nh11==0.16.0\n")
    status = ad.main(["--lock", str(path), "--json", str(tmp_path / "a.json"), "--markdown", str(tmp_path / "a.md")],
                     fetch=fake_fetch(answers, calls))
    assert status == 1
    assert not any(c.startswith(PYPI) for c in calls)
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["exit_status"] == 1
    jinja, h11 = result["results"]
    assert (jinja["status"], jinja["source"], jinja["vulns"][0]["fixed_in"]) == ("vulnerable", "osv", ["3.1.3"])
    assert (h11["status"], h11["source"]) == ("ok", "osv")
    md = (tmp_path / "a.md").read_text()
    assert "| jinja2 | 3.1.2 | osv | VULNERABLE: GHSA-O (CVE-2023-7) [fixed in 3.1.3] |" in md


def test_retry_once() -> None:
    attempts: list[int] = []

    def flaky(url: str, body: dict[str, Any] | None, timeout: float) -> tuple[int, Any]:
        attempts.append(1)
        if len(attempts) == 1:
            raise ad.FetchError("reset")
        return 200, {}

    assert ad.with_retry(flaky, retries=1, delay=0)("u", None, 1) == (200, {})
    attempts.clear()
    with pytest.raises(ad.FetchError):
        ad.with_retry(fake_fetch({"u": ad.FetchError("down")}), retries=1, delay=0)("u", None, 1)


def test_pip_audit_skips_are_not_audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = {"dependencies": [
        {"name": "anyio", "skip_reason": "Dependency not found on PyPI and could not be audited: anyio (4.16.0)"},
        {"name": "jinja2", "version": "3.1.2", "vulns": [{"id": "GHSA-O", "fix_versions": ["3.1.3"], "aliases": []}]},
    ], "fixes": []}

    class Done:
        returncode = 1
        stdout = json.dumps(report)
        stderr = ""

    monkeypatch.setattr(ad.shutil, "which", lambda name: sys.executable)
    monkeypatch.setattr(ad.subprocess, "run", lambda *a, **k: Done())
    results, _ = ad.run_pip_audit(tmp_path / "requirements.lock", 10)
    assert [(r.name, r.version, r.status) for r in results] == [
        ("anyio", "4.16.0", "not-audited"), ("jinja2", "3.1.2", "vulnerable")]
