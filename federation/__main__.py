"""`python -m federation` is the same as the `federation` command."""

from federation.cli.main import run

run()
