"""The `asen` command."""

from __future__ import annotations

import argparse
import sys

from asen_search.model.tuning import prefer_sleeping_threads, tune_allocator

prefer_sleeping_threads()  # before the imports below load torch, faiss and numpy's BLAS
from asen_search.service.cli import (  # noqa: E402
    eval_commands,
    model_commands,
    protection_commands,
    service_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asen", description="Fine-grained, attribute-specific fashion search"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    model_commands.register(sub)
    eval_commands.register(sub)
    service_commands.register(sub)
    protection_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_allocator()
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
