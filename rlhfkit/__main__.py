"""`python -m rlhfkit <command>`: the same as the `rlhfkit` command."""
import sys

from rlhfkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
