"""Placeholder: filled in by the smass training work."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise SystemExit("skystream train smass is not implemented yet")
