import sys

from local.stack.cli import main

if __name__ == "__main__":
    sys.exit(main())
