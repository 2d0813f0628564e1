import sys

from orchestration.cli import main

# The guard matters: the run queue's spawned workers import this module again.
if __name__ == "__main__":
    sys.exit(main())
