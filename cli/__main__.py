"""`python -m cli ...` runs the `mss` command (the tests use it from a checkout)."""

from cli import main

main(prog_name="mss")
