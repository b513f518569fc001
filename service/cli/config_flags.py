"""Command-line options generated from a dataclass's fields (`TrainConfig`, model/training/train_config.py):
type, default and help come from the field, so a new field is a new flag with nothing else to write.

argparse has no dataclass support of its own; the libraries that add it (simple-parsing, tyro, jsonargparse)
would each replace the hand-written parser of every other `asen` command or add a dependency for one
function, and none reads the flag names this command has always had (`--triplets`, `--no-asa`)."""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

_SCALARS = (bool, int, float, str, Path)


def _scalar(annotation: Any) -> type:
    """`int`, `float | None` ... -> the scalar type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _scalar(args[0])
    if annotation in _SCALARS:
        return annotation
    raise TypeError(f"no command-line type for {annotation!r}")


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A field's parser whose ValueError message reaches the user as argparse's error."""

    def run(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    run.__name__ = parse.__name__
    return run


def _help(f: Field, default: Any) -> str:
    text = str(f.metadata.get("help", ""))
    if default in (None, False, True) or "default" in text:
        return text
    return f"{text} (default {default})" if text else f"default {default}"


def add_config_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of `cls` that has a flag (not `cli=False`, not `follows` another field)."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or "follows" in meta:
            continue
        default = None if f.default is MISSING else f.default
        kind = _scalar(hints[f.name])
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        if kind is bool:
            if "negate" in meta:
                parser.add_argument(
                    meta["negate"],
                    dest=f.name,
                    action="store_false",
                    default=default,
                    help=f"leave out: {meta['help']}",
                )
            else:
                parser.add_argument(
                    flag,
                    dest=f.name,
                    action=argparse.BooleanOptionalAction,
                    default=default,
                    help=_help(f, default),
                )
            continue
        choices = meta.get("choices")
        parser.add_argument(
            flag,
            dest=f.name,
            type=_checked(meta.get("parse", kind)),
            default=default,
            choices=choices() if callable(choices) else choices,
            metavar=meta.get("metavar"),
            help=_help(f, default),
        )


def config_from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """An instance of `cls` from parsed options (and `given` values for the fields without a flag);
    a field that `follows` another takes its value."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)} | given
    for f in fields(cls):
        if "follows" in f.metadata:
            values[f.name] = values[f.metadata["follows"]]
    return cls(**values)


def _settings_type(annotation: Any) -> tuple[Callable[[str], Any] | None, tuple[Any, ...] | None]:
    """A settings field's command-line type and choices: scalars as they are, a Literal as choices,
    `Path | str` as text (the settings parse it)."""
    if typing.get_origin(annotation) is typing.Literal:
        return None, typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0], None) if len(args) == 1 else (str, None)
    return annotation, None


def add_settings_options(parser: argparse.ArgumentParser, settings: Any, skip: tuple[str, ...] = ()) -> None:
    """One option per field of a pydantic-settings class (`--max-top-k` for `max_top_k`), its help the
    field's description, its environment variable and default. Every option defaults to None so that
    only the flags given override the environment (`settings_from_args`)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    for name, info in settings.model_fields.items():
        if name in skip:
            continue
        env = f"{prefix}{name}".upper()
        text = info.description or name.replace("_", " ")
        default = "" if info.is_required() or info.default is None else f"; default {info.default}"
        help_text = text if f"({env}" in text else f"{text} ({env}{default})"
        flag = "--" + name.replace("_", "-")
        if info.annotation is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=help_text)
            continue
        kind, choices = _settings_type(info.annotation)
        if kind is None:
            parser.add_argument(flag, dest=name, choices=choices, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, help=help_text)


def settings_from_args(settings: Any, args: argparse.Namespace) -> Any:
    """The settings: the flags given, the environment for the rest."""
    return settings(
        **{n: getattr(args, n) for n in settings.model_fields if getattr(args, n, None) is not None}
    )
