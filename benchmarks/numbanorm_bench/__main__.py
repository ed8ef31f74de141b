"""``python -m numbanorm_bench [...]``: ``numbanorm bench [...]`` with full
tracebacks (the ``numbanorm`` command shortens an unexpected error to a line)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
