"""Shared `argparse` conventions of the jaxcluster commands.

Every parser and subparser uses `HelpFormatter`, so each ``--help`` shows the
defaults (``(default: X)``) without each help string repeating them; options
whose default depends on other options say so in their own help text, with
``(default: …)``, and the formatter leaves those alone.
"""

from __future__ import annotations

import argparse

__all__ = ["odd_positive", "HelpFormatter", "add_deprecated_alias", "seed_type", "SEED_RANGE", "add_memory_check"]

# a PRNG seed is one uint32 word of `jax.random.key`: larger or negative values alias (2**32 ≡ 0, −1 ≡ 2**32 − 1)
SEED_RANGE = (0, 2**32)


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


def seed_type(text: str) -> int:
    """`argparse` type of every ``--seed``: an integer in [0, 2**32).

    `jax.random.key` keeps a seed's low 32 bits only (without x64), so
    ``--seed 4294967296`` would silently give the same key as ``--seed 0`` and
    ``--seed -1`` the same as ``--seed 4294967295``; both are refused.
    """
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer in [0, 2**32), got {text!r}") from None
    if not SEED_RANGE[0] <= value < SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"seed = {value} is outside its allowed range [0, 2**32 = {2**32}) "
                                         "(larger or negative seeds alias smaller ones)")
    return value


def add_memory_check(parser) -> None:
    """The ``--no-memory-check`` flag of the commands that check their memory estimate up front
    (`jaxcluster.engines.memory.check_memory`)."""
    parser.add_argument("--no-memory-check", action="store_true",
                        help="run even if the up-front memory estimate exceeds the memory available "
                        "(the estimate is rough; see jaxcluster.engines.memory)")


def odd_positive(text: str) -> int:
    """`argparse` type of an odd integer ≥ 1 (e.g. a stride that must keep a particle grid symmetric)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an odd integer >= 1, got {text!r}") from None
    if value < 1 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"{value} is outside its allowed range: an odd integer >= 1")
    return value
