"""Shared `argparse` conventions of the jaxcluster commands.

Every parser and subparser uses `HelpFormatter`, so each ``--help`` shows the
defaults (``(default: X)``) without each help string repeating them; options
whose default depends on other options say so in their own help text, with
``(default: …)``, and the formatter leaves those alone.
"""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter", "add_deprecated_alias"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`argparse.ArgumentDefaultsHelpFormatter` that skips uninformative defaults.

    No ``(default: None)`` (the help says what happens instead), no
    ``(default: False)`` on flags, and nothing added to a help string that
    already states its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "(default" in text:
            return text
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction, argparse._VersionAction)):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"
        return text


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, *, dest: str, type=None) -> None:  # noqa: A002
    """A hidden spelling ``old`` of an option (same ``dest``), kept so that old scripts still run.

    It is absent from ``--help`` (``argparse.SUPPRESS``) and has no default of
    its own (``SUPPRESS``), so it never overwrites the canonical option's default.
    """
    parser.add_argument(old, dest=dest, type=type, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
