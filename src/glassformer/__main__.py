"""`python -m glassformer` runs the command line."""

from glassformer.cli import main

main()
