"""`python -m glassformer.cli` runs the command line."""

from glassformer.cli import main

main()
