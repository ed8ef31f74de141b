"""``python -m numbanorm``: the same command line as the ``numbanorm`` script."""

from numbanorm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
