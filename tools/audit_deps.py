"""Check the pinned versions in ``requirements.lock`` for known vulnerabilities (stdlib only).

Sources, per ``name==version`` pin, best first:

1. OSV (``https://api.osv.dev/v1/querybatch``): knows every version of every PyPI project. Tried once for
   the whole lock, with a short timeout; when it does not answer, the PyPI sources are used instead.
2. PyPI, per version (``/pypi/NAME/VERSION/json``, its ``vulnerabilities``): what pip-audit's default
   "pypi" service asks.
3. PyPI, per project (``/pypi/NAME/json``): its ``vulnerabilities`` are those of the *latest* release
   only, so they are used only when the latest release is the pinned version. Otherwise the pin is
   reported as not audited: no source reachable from here says anything about that version.

Exit status: 1 when a pinned version has a known vulnerability that no ``--ignore ID`` covers; 2 when
no pin could be audited at all (no source reachable, or none with data for the pinned versions);
0 otherwise. Pins that could not be audited are counted and named in every output, never silently
passed.

``--use-pip-audit`` runs ``pip-audit -r LOCK --no-deps --disable-pip`` instead (when it is installed)
and reports its result the same way, its "could not be audited" skips included.

Usage::

    python3 tools/audit_deps.py                       # table + summary on stdout
    python3 tools/audit_deps.py --json var/audit.json --markdown var/audit.md --ignore GHSA-xxxx-xxxx-xxxx
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
PYPI_URL = "https://pypi.org/pypi"
OSV_URL = "https://api.osv.dev/v1"
OSV_BATCH = 1000  # the querybatch limit
USER_AGENT = "asen-search-audit_deps/1 (+tools/audit_deps.py)"
RETRY_DELAY = 1.0  # seconds before the one retry of a failed request

Status = Literal["ok", "vulnerable", "not-audited", "error"]

SOURCE_OSV = "osv"
SOURCE_PYPI_VERSION = "pypi (version)"
SOURCE_PYPI_LATEST = "pypi (latest = pinned)"
SOURCE_PIP_AUDIT = "pip-audit"
SOURCE_NONE = "-"


class FetchError(Exception):
    """The request got no usable HTTP answer: DNS, connection, timeout, TLS, or a 5xx/429 status."""


Fetch = Callable[[str, dict[str, Any] | None, float], tuple[int, Any]]
"""``fetch(url, json_body_or_None, timeout) -> (http_status, parsed_json_or_None)``.

GET when the body is None, POST of the JSON body otherwise. 4xx answers (404 above all) are returned,
not raised; anything without a usable answer raises :class:`FetchError`.
"""


@dataclasses.dataclass(frozen=True)
class Pin:
    """One ``name==version`` line of the lock."""

    name: str
    version: str


@dataclasses.dataclass
class Vuln:
    """A known vulnerability of a pinned version."""

    id: str
    aliases: list[str] = dataclasses.field(default_factory=list)
    fixed_in: list[str] = dataclasses.field(default_factory=list)
    summary: str = ""
    link: str = ""

    def ids(self) -> set[str]:
        """The id and every alias (CVE, GHSA, PYSEC ...)."""
        return {self.id, *self.aliases}


@dataclasses.dataclass
class Result:
    """What was found out about one pin."""

    name: str
    version: str
    status: Status
    source: str = SOURCE_NONE
    vulns: list[Vuln] = dataclasses.field(default_factory=list)
    ignored: list[Vuln] = dataclasses.field(default_factory=list)
    note: str = ""

    @property
    def audited(self) -> bool:
        """True when some source had vulnerability data for exactly this version."""
        return self.status in ("ok", "vulnerable")


@dataclasses.dataclass
class Report:
    """The audit of a whole lock file."""

    lock: str
    date: str
    command: str
    results: list[Result]
    skipped_lines: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def count(self, status: Status) -> int:
        """How many pins ended with ``status``."""
        return sum(r.status == status for r in self.results)

    def by_source(self) -> dict[str, int]:
        """How many pins each source audited."""
        out: dict[str, int] = {}
        for r in self.results:
            if r.audited:
                out[r.source] = out.get(r.source, 0) + 1
        return out

    def vuln_count(self) -> int:
        """Known, not ignored vulnerabilities over all pins."""
        return sum(len(r.vulns) for r in self.results)

    def ignored_count(self) -> int:
        """Known vulnerabilities that ``--ignore`` silenced."""
        return sum(len(r.ignored) for r in self.results)


# --------------------------------------------------------------------------------------------- lock file


def canonical(name: str) -> str:
    """PEP 503 normalised name: ``Jinja2`` -> ``jinja2``, ``pydantic_core`` -> ``pydantic-core``."""
    return re.sub(r"[-_.]+", "-", name).lower()


_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*(?P<version>[^\s;#,\\]+)\s*$")


def parse_lock(text: str) -> tuple[list[Pin], list[str]]:
    """The exact pins in a requirements/constraints file, and the lines that are not one.

    Comments, blank lines and option lines (``-c``, ``--hash`` continuations ...) are neither; an
    environment marker (``; python_version < "3.12"``) is dropped, the pin kept. Names are kept as
    written; duplicates (same canonical name and version) are kept once.
    """
    pins: list[Pin] = []
    skipped: list[str] = []
    seen: set[tuple[str, str]] = set()
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        line = line.rstrip("\\").strip()
        if not line or line.startswith("-"):
            continue
        requirement = line.split(";", 1)[0].strip()
        m = _PIN.match(requirement)
        if m is None:
            skipped.append(raw.strip())
            continue
        key = (canonical(m["name"]), m["version"])
        if key not in seen:
            seen.add(key)
            pins.append(Pin(m["name"], m["version"]))
    return pins, skipped


# --------------------------------------------------------------------------------------------- network


def http_fetch(url: str, body: dict[str, Any] | None, timeout: float) -> tuple[int, Any]:
    """The real :data:`Fetch`: urllib, JSON in and out."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code == 429:
            raise FetchError(f"HTTP {e.code} from {url}") from e
        return e.code, None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"{urllib.parse.urlsplit(url).netloc}: {reason}") from e


def with_retry(fetch: Fetch, retries: int = 1, delay: float = 1.0) -> Fetch:
    """``fetch`` that tries ``retries`` more times, ``delay`` seconds apart, on a :class:`FetchError`."""

    def retrying(url: str, body: dict[str, Any] | None, timeout: float) -> tuple[int, Any]:
        for attempt in range(retries + 1):
            try:
                return fetch(url, body, timeout)
            except FetchError:
                if attempt == retries:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    return retrying


# --------------------------------------------------------------------------------------------- sources


def _pypi_vulns(entries: Iterable[dict[str, Any]] | None) -> list[Vuln]:
    """PyPI JSON ``vulnerabilities`` entries as :class:`Vuln`, withdrawn ones left out."""
    return [
        Vuln(
            id=str(e.get("id", "?")),
            aliases=[str(a) for a in e.get("aliases") or []],
            fixed_in=[str(v) for v in e.get("fixed_in") or []],
            summary=str(e.get("summary") or e.get("details") or "")[:200],
            link=str(e.get("link") or ""),
        )
        for e in entries or []
        if not e.get("withdrawn")
    ]


def audit_pypi(pin: Pin, fetch: Fetch, timeout: float, pypi_url: str = PYPI_URL) -> Result:
    """One pin against PyPI: the per-version JSON, else the per-project JSON if its latest is the pin."""
    name = urllib.parse.quote(canonical(pin.name))
    version = urllib.parse.quote(pin.version)
    try:
        status, data = fetch(f"{pypi_url}/{name}/{version}/json", None, timeout)
        if status == 200 and isinstance(data, dict):
            vulns = _pypi_vulns(data.get("vulnerabilities"))
            return Result(pin.name, pin.version, "vulnerable" if vulns else "ok", SOURCE_PYPI_VERSION, vulns)
        status, data = fetch(f"{pypi_url}/{name}/json", None, timeout)
    except FetchError as e:
        return Result(pin.name, pin.version, "error", note=str(e))
    if status == 404:
        return Result(pin.name, pin.version, "not-audited", note="not found on PyPI")
    if status != 200 or not isinstance(data, dict):
        return Result(pin.name, pin.version, "not-audited", note=f"PyPI answered HTTP {status}")
    latest = str((data.get("info") or {}).get("version") or "?")
    if latest.lower() == pin.version.lower():
        vulns = _pypi_vulns(data.get("vulnerabilities"))
        return Result(pin.name, pin.version, "vulnerable" if vulns else "ok", SOURCE_PYPI_LATEST, vulns)
    return Result(
        pin.name,
        pin.version,
        "not-audited",
        note=f"pinned {pin.version}, latest {latest}; no per-version data reachable",
    )


def _osv_fixed(vuln: dict[str, Any], name: str) -> list[str]:
    """The ``fixed`` events of an OSV record's PyPI ranges for project ``name``."""
    fixed: list[str] = []
    for affected in vuln.get("affected") or []:
        package = affected.get("package") or {}
        if package.get("ecosystem") != "PyPI" or canonical(str(package.get("name", ""))) != canonical(name):
            continue
        for r in affected.get("ranges") or []:
            for event in r.get("events") or []:
                if "fixed" in event and event["fixed"] not in fixed:
                    fixed.append(str(event["fixed"]))
    return fixed


def _osv_vuln(record: dict[str, Any], name: str) -> Vuln:
    """An OSV vulnerability record as :class:`Vuln` for project ``name``."""
    vid = str(record.get("id", "?"))
    return Vuln(
        id=vid,
        aliases=[str(a) for a in record.get("aliases") or []],
        fixed_in=_osv_fixed(record, name),
        summary=str(record.get("summary") or record.get("details") or "")[:200],
        link=f"https://osv.dev/vulnerability/{vid}",
    )


def audit_osv(
    pins: Sequence[Pin], fetch: Fetch, timeout: float, workers: int, osv_url: str = OSV_URL
) -> list[Result] | None:
    """Every pin against OSV, or None when OSV does not answer (then another source must be used).

    ``querybatch`` answers ids only; the records (for aliases and fixed versions) are fetched once per id.
    A pin whose result is paginated is asked again on ``/v1/query`` until its pages are exhausted.
    """
    ids_per_pin: list[list[str]] = []
    records: dict[str, dict[str, Any]] = {}
    try:
        for start in range(0, len(pins), OSV_BATCH):
            chunk = pins[start : start + OSV_BATCH]
            queries = [{"package": {"name": p.name, "ecosystem": "PyPI"}, "version": p.version} for p in chunk]
            status, data = fetch(f"{osv_url}/querybatch", {"queries": queries}, timeout)
            if status != 200 or not isinstance(data, dict) or len(data.get("results") or []) != len(chunk):
                return None
            for pin, result in zip(chunk, data["results"]):
                ids = [str(v["id"]) for v in result.get("vulns") or [] if "id" in v]
                token = result.get("next_page_token")
                while token:
                    query = {"package": {"name": pin.name, "ecosystem": "PyPI"}, "version": pin.version}
                    status, page = fetch(f"{osv_url}/query", {**query, "page_token": token}, timeout)
                    if status != 200 or not isinstance(page, dict):
                        return None
                    for record in page.get("vulns") or []:
                        records[str(record["id"])] = record
                        ids.append(str(record["id"]))
                    token = page.get("next_page_token")
                ids_per_pin.append(list(dict.fromkeys(ids)))
    except FetchError:
        return None

    def detail(vid: str) -> tuple[str, dict[str, Any]]:
        try:
            status, record = fetch(f"{osv_url}/vulns/{urllib.parse.quote(vid)}", None, timeout)
        except FetchError:
            record, status = None, 0
        return vid, record if status == 200 and isinstance(record, dict) else {"id": vid}

    wanted = sorted({vid for ids in ids_per_pin for vid in ids} - set(records))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        records.update(pool.map(detail, wanted))

    results = []
    for pin, ids in zip(pins, ids_per_pin):
        vulns = [_osv_vuln(records[vid], pin.name) for vid in ids if not records[vid].get("withdrawn")]
        results.append(Result(pin.name, pin.version, "vulnerable" if vulns else "ok", SOURCE_OSV, vulns))
    return results


def apply_ignores(results: Iterable[Result], ignore: Iterable[str]) -> None:
    """Move vulnerabilities whose id or alias is in ``ignore`` to ``Result.ignored``; fix up the status."""
    ignore_set = {i.strip() for i in ignore if i.strip()}
    for r in results:
        kept = [v for v in r.vulns if not (v.ids() & ignore_set)]
        r.ignored += [v for v in r.vulns if v.ids() & ignore_set]
        r.vulns = kept
        if r.status == "vulnerable" and not kept:
            r.status = "ok"


def audit(
    pins: Sequence[Pin],
    fetch: Fetch,
    *,
    ignore: Iterable[str] = (),
    use_osv: bool = True,
    workers: int = 8,
    timeout: float = 10.0,
    osv_timeout: float = 5.0,
) -> tuple[list[Result], list[str]]:
    """Audit ``pins`` with ``fetch``: OSV first (when ``use_osv`` and it answers), else PyPI per pin.

    Returns the results in the order of ``pins`` and notes on the sources (for the report).
    """
    notes: list[str] = []
    results: list[Result] | None = None
    if use_osv and pins:
        results = audit_osv(pins, fetch, osv_timeout, workers)
        notes.append("OSV answered: every pin audited against OSV" if results is not None else
                     "OSV (api.osv.dev) did not answer: fell back to PyPI's JSON API")
    if results is None and pins:
        # One probe first, so that a machine without network fails in seconds instead of pins x timeout.
        probe = pins[0]
        try:
            fetch(f"{PYPI_URL}/{urllib.parse.quote(canonical(probe.name))}/json", None, timeout)
        except FetchError as e:
            notes.append(f"PyPI did not answer either ({e})")
            results = [Result(p.name, p.version, "error", note=f"no source reachable: {e}") for p in pins]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda p: audit_pypi(p, fetch, timeout), pins))
    results = results or []
    apply_ignores(results, ignore)
    return results, notes


def run_pip_audit(lock: Path, timeout: float) -> tuple[list[Result], list[str]]:
    """``pip-audit -r LOCK --no-deps --disable-pip`` (its default PyPI service), as results.

    pip-audit's "could not be audited" skips become ``not-audited`` results: pip-audit itself says "No
    known vulnerabilities found" and exits 0 even when it skipped every package.
    """
    exe = shutil.which("pip-audit") or str(Path(sys.executable).with_name("pip-audit"))
    if Path(exe).exists():
        command = [exe]
    elif importlib.util.find_spec("pip_audit") is not None:
        command = [sys.executable, "-m", "pip_audit"]
    else:
        raise SystemExit("audit_deps: --use-pip-audit: pip-audit is not installed (pip install pip-audit)")
    command += ["-r", str(lock), "--no-deps", "--disable-pip", "--format", "json", "--progress-spinner", "off"]
    command += ["--timeout", str(int(timeout))]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return [], [f"pip-audit exited {proc.returncode} without a JSON report: " + " | ".join(tail)]
    results: list[Result] = []
    for dep in data.get("dependencies") or []:
        name, version = str(dep.get("name", "?")), str(dep.get("version", "?"))
        if "skip_reason" in dep:
            m = re.search(r"\(([^()]+)\)\s*$", str(dep["skip_reason"]))
            results.append(Result(name, m[1] if m else version, "not-audited", note=str(dep["skip_reason"])))
            continue
        vulns = [
            Vuln(
                id=str(v.get("id", "?")),
                aliases=[str(a) for a in v.get("aliases") or []],
                fixed_in=[str(f) for f in v.get("fix_versions") or []],
                summary=str(v.get("description") or "")[:200],
            )
            for v in dep.get("vulns") or []
        ]
        results.append(Result(name, version, "vulnerable" if vulns else "ok", SOURCE_PIP_AUDIT, vulns))
    return results, [f"pip-audit {' '.join(command[1:])}: exit {proc.returncode}"]


# --------------------------------------------------------------------------------------------- output


def exit_status(report: Report) -> int:
    """1: a known, not ignored vulnerability; 2: nothing could be audited; 0: otherwise."""
    if report.vuln_count():
        return 1
    if not any(r.audited for r in report.results):
        return 2
    return 0


def _vuln_text(v: Vuln) -> str:
    fixed = f"fixed in {', '.join(v.fixed_in)}" if v.fixed_in else "no fix listed"
    aliases = [a for a in v.aliases if a != v.id]
    return f"{v.id}{' (' + ', '.join(aliases[:2]) + ')' if aliases else ''} [{fixed}]"


def finding(r: Result) -> str:
    """One cell: what was found for ``r``."""
    if r.status == "vulnerable":
        text = "VULNERABLE: " + "; ".join(_vuln_text(v) for v in r.vulns)
    elif r.status == "ok":
        text = "no known vulnerabilities"
    elif r.status == "not-audited":
        text = f"not audited ({r.note})"
    else:
        text = f"error ({r.note})"
    if r.ignored:
        text += "; ignored: " + ", ".join(v.id for v in r.ignored)
    return text


def summary(report: Report) -> list[str]:
    """The summary lines, loud about what was not audited."""
    n = len(report.results)
    audited = sum(r.audited for r in report.results)
    sources = ", ".join(f"{k} {v}" for k, v in sorted(report.by_source().items())) or "none"
    lines = [
        (
            f"{n} pins in {report.lock}: {audited} audited ({sources}), {report.count('not-audited')} not audited, "
            f"{report.count('error')} unreachable; {report.vuln_count()} known vulnerabilities in "
            f"{report.count('vulnerable')} packages ({report.ignored_count()} ignored)"
        )
    ]
    if audited < n:
        lines.append(
            f"WARNING: {n - audited} of {n} pinned packages could NOT be audited: "
            "'no known vulnerabilities' is only claimed for the audited ones."
        )
    if report.skipped_lines:
        lines.append(f"WARNING: {len(report.skipped_lines)} lock lines are not exact pins and were not audited: "
                     + "; ".join(report.skipped_lines))
    if n and audited == 0:
        lines.append("ERROR: no vulnerability source had data for any pinned version (network?): nothing audited.")
    return lines


def table(report: Report) -> str:
    """A plain-text table of every pin."""
    rows = [("package", "version", "source", "finding")]
    rows += [(r.name, r.version, r.source, finding(r)) for r in report.results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    out = []
    for i, row in enumerate(rows):
        out.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row[:3])) + "  " + row[3])
        if i == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(out)


def markdown(report: Report) -> str:
    """A docs-ready fragment: the command, date, counts and the table (no heading, to embed anywhere)."""
    n = len(report.results)
    audited = sum(r.audited for r in report.results)
    out = [
        f"Command: `{report.command}`, run {report.date}, over `{report.lock}` ({n} pins).",
        "",
        f"- audited: {audited}"
        + "".join(f"; via {k}: {v}" for k, v in sorted(report.by_source().items())),
        f"- not audited (no source with data for the pinned version): {report.count('not-audited')}",
        f"- unreachable (network error): {report.count('error')}",
        (
            f"- known vulnerabilities in pinned versions: {report.vuln_count()} in {report.count('vulnerable')} "
            f"packages ({report.ignored_count()} ignored)"
        ),
    ]
    out += [f"- note: {note}" for note in report.notes]
    out += ["", "| package | version | source | finding |", "|---|---|---|---|"]
    for r in report.results:
        out.append(f"| {r.name} | {r.version} | {r.source} | {finding(r).replace('|', '/')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None, fetch: Fetch | None = None) -> int:
    """Command line: audit the lock, print the table and summary, write the requested files.

    ``fetch`` replaces the network (tests); by default urllib, each request retried once.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock", help="default: %(default)s")
    parser.add_argument("--ignore", action="append", default=[], metavar="ID",
                        help="vulnerability id or alias (CVE, GHSA, PYSEC) not to fail on; repeatable")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the full result as JSON")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write a docs-ready markdown fragment")
    parser.add_argument("--no-osv", action="store_true", help="do not try OSV; PyPI's JSON API only")
    parser.add_argument("--use-pip-audit", action="store_true",
                        help="run pip-audit -r LOCK --no-deps --disable-pip instead and report its result")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="summary only, no table")
    args = parser.parse_args(argv)

    try:
        text = args.lock.read_text()
    except OSError as e:
        print(f"audit_deps: cannot read {args.lock}: {e}", file=sys.stderr)
        return 2
    pins, skipped = parse_lock(text)
    if not pins:
        print(f"audit_deps: no name==version pins in {args.lock}", file=sys.stderr)
        return 2

    try:
        lock_name = str(args.lock.resolve().relative_to(Path.cwd()))
    except ValueError:
        lock_name = str(args.lock)
    command = shlex.join(["python3", "tools/audit_deps.py", *(sys.argv[1:] if argv is None else argv)])
    if args.use_pip_audit:
        results, notes = run_pip_audit(args.lock, args.timeout)
        apply_ignores(results, args.ignore)
    else:
        fetch = with_retry(http_fetch, retries=1, delay=RETRY_DELAY) if fetch is None else fetch
        results, notes = audit(pins, fetch, ignore=args.ignore, use_osv=not args.no_osv,
                               workers=args.workers, timeout=args.timeout)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = Report(lock_name, date, command, results, skipped, notes)

    if not args.quiet:
        print(table(report))
        print()
    for note in notes:
        print(f"note: {note}")
    for line in summary(report):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = dataclasses.asdict(report) | {"exit_status": exit_status(report)}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(report))
    return exit_status(report)


if __name__ == "__main__":
    sys.exit(main())
