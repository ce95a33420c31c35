"""Argument types shared by the local commands (`local.stack`, `local.klarna_simulator`)."""

from __future__ import annotations

import argparse


def key_value(text: str) -> tuple[str, str]:
    """`NAME=VALUE` -> (NAME, VALUE)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value.strip()


def seconds_range(text: str) -> tuple[float, float]:
    """`MIN:MAX` (or one number for both) -> (MIN, MAX)."""
    low, _, high = text.partition(":")
    try:
        return float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX in seconds, got {text!r}") from None
