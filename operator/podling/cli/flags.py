"""Argument types shared by the ``podling`` subcommands: a bad value is argparse's exit 2 naming the flag."""

from __future__ import annotations

import argparse


def seconds(value: str) -> float:
    """A positive number of seconds."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value!r}")
    return number
