"""Subcommands of this area are registered here (placeholder until the area lands)."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Adds no subcommand yet."""
