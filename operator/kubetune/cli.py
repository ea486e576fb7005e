"""`kubetune`: the user's command line."""

from __future__ import annotations

import argparse

from kubetune import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubetune", description="kubetune command line")
    parser.add_argument("--version", action="version", version=f"kubetune {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0
