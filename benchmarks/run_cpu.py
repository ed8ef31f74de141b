#!/usr/bin/env python
"""Run numbanorm's full CPU benchmark suite and keep the results.

Writes ``benchmarks/results/cpu-<machine>.json``, ``.png`` and ``.md`` (the
headline table: large float32; then the medium sizes against ONNX Runtime,
PyTorch and the copy floor, idle and busy; the small inputs against ONNX
Runtime; the scalers' per-call times) (``<machine>`` is the CPU model and
core count, e.g. ``amd-epyc-2c``), where ``--out-dir`` and ``--name`` change
the directory and the name.  Every section of ``numbanorm bench`` runs, with
``--busy`` (a busy neighbour for the medium and small-input sections) unless
``--no-busy`` is given.  Every other option is passed to ``numbanorm bench``
(see ``benchmarks/README.md``), e.g.::

    python benchmarks/run_cpu.py                   # all ops, sizes, dtypes, sections
    python benchmarks/run_cpu.py --threads 1,2     # and thread scaling
    python benchmarks/run_cpu.py --quick --out-dir /tmp/bench
    python benchmarks/run_cpu.py --no-busy --sections suite,medium

Run it on a quiet machine: parallel kernels wait for their slowest thread,
so any other load distorts the numbers (the JSON records the load average).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"), help="where to write")
    p.add_argument("--name", help="file stem (default: cpu-<cpu model>-<cores>c)")
    p.add_argument("--no-busy", dest="busy", action="store_false", help="no busy-neighbour measurement")
    args, rest = p.parse_known_args(argv)
    if any(
        a in ("--json", "--plot", "--device") or a.startswith(("--json=", "--plot=", "--device="))
        for a in rest
    ):
        p.error("--json, --plot and --device are set by this script (use numbanorm bench directly)")
    # a source checkout need not be installed: numbanorm from ROOT, the suite
    # (numbanorm_bench) from this script's directory (on sys.path as the script's)
    sys.path.insert(0, str(ROOT))
    from numbanorm_bench import cli, machine, medium, report

    stem = args.name or "cpu-" + machine.host_slug(machine.machine_info(None))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    busy = ["--busy"] if args.busy and "--busy" not in rest and not _suite_only(rest) else []
    status = cli.main([*rest, *busy, "--json", str(out / f"{stem}.json"), "--plot", str(out / f"{stem}.png")])
    if not (out / f"{stem}.json").exists():
        return status
    res = json.loads((out / f"{stem}.json").read_text())
    table = "\n".join(t for t in (report.markdown_table(res), medium.report_markdown(res)) if t)
    if table:
        (out / f"{stem}.md").write_text(table)
        print(f"wrote {out / f'{stem}.md'}")
    return status


def _suite_only(rest: list[str]) -> bool:
    """Whether --sections leaves out both sections that --busy applies to."""
    for i, a in enumerate(rest):
        value = a.split("=", 1)[1] if a.startswith("--sections=") else None
        if a == "--sections" and i + 1 < len(rest):
            value = rest[i + 1]
        if value is not None:
            return not {"medium", "small-ort"} & {v.strip() for v in value.split(",")}
    return False


if __name__ == "__main__":
    raise SystemExit(main())
