"""`--help` for every option, with its default: one formatter for rig's and bench's parsers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help where the default says something: not for
    flags (False), unset options (None), empty lists, or help that already names a default or
    shows its value in parentheses ("profile (rig.toml)"). A value merely inside the text does
    not count: "share on the GPU, 0..1" does not say that the default is 1."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default in (None, False, argparse.SUPPRESS)
            or default == []
            or "default" in text.lower()
            or f"({default})" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


def use_formatter(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give `parser` and every subcommand parser under it the HelpFormatter (subcommands are
    added by several modules; setting it once here covers all of them)."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                use_formatter(sub)
    return parser


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Any:
    """(command path, parser) for the parser and every subcommand under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def path_arg(text: str) -> Path:
    """An argparse type for a path option: an empty value is refused (Path("") would quietly
    mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is empty — give a path, or leave the option out for its default"
        )
    return Path(text)
