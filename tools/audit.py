"""The dependency audit: pip-audit on the pinned versions of ``requirements.lock``, with this
project's policy on top (docs/reliability.md, "Dependency audit").

pip-audit does the auditing (``pip-audit -r LOCK --no-deps --disable-pip -f json``), asking OSV
first and PyPI's vulnerability data when OSV cannot be reached. This wrapper only adds what
pip-audit leaves to its caller:

- exit 1 when a pinned version has a known vulnerability (``--ignore ID`` accepts one, by id or alias);
- exit 2, loudly, when nothing could be audited: pip-audit exits 0 and prints "No known
  vulnerabilities found" even when every pin was skipped because no source answered;
- the count of pins that could not be audited, in every summary, never passed silently.

Usage::

    python tools/audit.py                                 # summary on stdout
    python tools/audit.py --json var/audit.json --ignore GHSA-xxxx-xxxx-xxxx
    python tools/audit.py --from-json saved.json          # apply the policy to a saved pip-audit result
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("osv", "pypi")  # pip-audit's vulnerability services, tried in this order


def run_pip_audit(lock: Path, service: str, ignore: list[str]) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON result (None when it produced none: its service unreachable) and its stderr."""
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "-r",
        str(lock),
        "--no-deps",
        "--disable-pip",
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--vulnerability-service",
        service,
    ]
    for vuln_id in ignore:
        command += ["--ignore-vuln", vuln_id]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    try:
        return json.loads(done.stdout), done.stderr
    except json.JSONDecodeError:
        return None, done.stderr or done.stdout


def summarise(result: dict[str, Any], ignore: list[str]) -> tuple[int, list[str]]:
    """(exit status, lines to print) for one pip-audit JSON result under this project's policy."""
    deps = result.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = [d for d in deps if not d.get("skip_reason")]
    found = [
        (d, v)
        for d in audited
        for v in d.get("vulns", [])
        if not ({v["id"], *v.get("aliases", [])} & set(ignore))
    ]
    lines = [
        f"{d['name']}=={d['version']}: {v['id']} ({', '.join(v.get('aliases', [])) or 'no aliases'}); "
        f"fixed in {', '.join(v.get('fix_versions', [])) or 'no release yet'}"
        for d, v in found
    ]
    lines.append(
        f"audited {len(audited)} of {len(deps)} pins; known vulnerabilities: {len(found)}; "
        f"not audited: {len(skipped)}"
        + (f" (e.g. {skipped[0]['name']}: {skipped[0]['skip_reason']})" if skipped else "")
    )
    if found:
        return 1, lines
    if not audited:
        lines.append("WARNING: NOTHING WAS AUDITED: no vulnerability source answered for any pin")
        return 2, lines
    return 0, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock", help="default: %(default)s")
    parser.add_argument(
        "--ignore", action="append", default=[], metavar="ID", help="an accepted vulnerability"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write pip-audit's JSON result here")
    parser.add_argument(
        "--from-json", type=Path, metavar="FILE", help="a saved pip-audit JSON result, not a new run"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        result, source = json.loads(args.from_json.read_text()), f"saved result {args.from_json}"
    else:
        best: tuple[dict[str, Any] | None, str] = (None, "")
        for service in SERVICES:  # the first service that audits anything wins
            result, stderr = run_pip_audit(args.lock, service, args.ignore)
            if result is None:
                print(
                    f"pip-audit -s {service}: no result ({stderr.strip().splitlines()[-1:] or ['no output']})"
                )
                continue
            best = (result, f"pip-audit -s {service}")
            if any(not d.get("skip_reason") for d in result.get("dependencies", [])):
                break
        result, source = best
        if result is None:
            print("WARNING: NOTHING WAS AUDITED: pip-audit reached no vulnerability service")
            return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    status, lines = summarise(result, args.ignore)
    print(f"dependency audit of {args.lock.name} by {source}:")
    print("\n".join("  " + line for line in lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
