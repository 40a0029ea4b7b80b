"""The `skystream` command line: one module per command group; parsing and printing only."""

from stream.cli.entry import main

__all__ = ["main"]
