"""Placeholder: filled in by the tess training work."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise SystemExit("skystream train tess is not implemented yet")
