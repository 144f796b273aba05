"""The class load test's full report (issue 11): 30 simulated students against one roster server
on loopback, 3 of them flooding with 50 jobs each, the null engine at 0.2 s a job.

By default it runs five scenarios and prints them side by side, then each full report: the
issue's parameters (2 workers) in the server's fair order, in fair queuing without the idle
credit ("sfq", the order before it) and first-come-first-served with no per-person cap (the
"before"); the quiet students alone (no flooder: what capacity alone allows); and the nearest
feasible load for the issue's goal (4 workers). Figures: each quiet student's median and worst
wait (submit -> IN_PROGRESS, in job-times), the mean wait a fair share allows, throughput shares
and Jain's index, 429 counts, the server's RSS and how many cross-student reads succeeded (must
be 0). The simulator is ``tests/server/loadsim.py``; ``tests/server/test_class_load.py`` asserts.

    python benchmarks/class_load.py [--traffic 25]
    python benchmarks/class_load.py --custom [--quiet 27] [--floods 3] [--think 1 3] [--workers 2]
        [--scheduler fair|sfq|fifo] [--max-queued N] [--per-student]

Not part of the test suite: it prints measured numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server.loadsim import LoadConfig, LoadReport, fair_share_wait, run_load  # noqa: E402


def _scenarios(traffic: float) -> dict[str, LoadConfig]:
    issue = LoadConfig(traffic_s=traffic)
    return {
        "issue, fair": issue,
        "issue, sfq": replace(issue, scheduler="sfq"),
        "issue, FIFO no cap": replace(issue, scheduler="fifo", max_queued=1000),
        "no flooders": replace(issue, floods=0),
        "4 workers, fair": replace(issue, workers=4),
    }


def _row(report: LoadReport) -> dict[str, str]:
    waits = sorted(x for w in report.quiet_waits.values() for x in w)
    worsts = [max(w) for w in report.quiet_waits.values() if w]
    shares = report.flooder_shares
    flooders = list(shares)
    return {
        "quiet jobs": str(len(waits)),
        "quiet median wait": f"{report.quiet_median:.2f}",
        "quiet p95 wait": f"{waits[min(len(waits) - 1, int(0.95 * len(waits)))]:.2f}",
        "quiet worst wait": f"{report.quiet_worst:.2f}",
        "per-student worst (median)": f"{statistics.median(worsts):.2f}",
        "fair-share mean bound": f"{fair_share_wait(report.config):.2f}",
        "flooder shares": " ".join(f"{s:.0%}" for s in shares.values()) or "-",
        "Jain quiet / all": f"{report.jain_quiet:.3f} / {report.jain_all:.3f}",
        "429 flooders / quiet": f"{sum(report.too_many[k] for k in flooders)} / "
                                f"{sum(report.too_many[k] for k in report.quiet_waits)}",
        "cross reads ok / tried": f"{len(report.cross_read_leaks)} / {report.cross_reads}",
        "RSS peak MB": f"{report.rss_peak_mb:.0f}",
        "client errors": str(len(report.errors)),
    }


def _table(reports: dict[str, LoadReport]) -> str:
    rows = {name: _row(r) for name, r in reports.items()}
    labels = list(next(iter(rows.values())))
    width = max(map(len, labels))
    cols = [max(len(name), *(len(v) for v in row.values())) for name, row in rows.items()]
    lines = [" " * width + " | " + " | ".join(n.rjust(c) for n, c in zip(rows, cols, strict=True))]
    lines += [label.ljust(width) + " | " + " | ".join(
        row[label].rjust(c) for row, c in zip(rows.values(), cols, strict=True)) for label in labels]
    return "waits in job-times (0.2 s)\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = LoadConfig()
    parser.add_argument("--traffic", type=float, default=default.traffic_s, help="seconds of traffic")
    parser.add_argument("--custom", action="store_true", help="one run with the options below")
    parser.add_argument("--quiet", type=int, default=default.quiet)
    parser.add_argument("--floods", type=int, default=default.floods)
    parser.add_argument("--flood-jobs", type=int, default=default.flood_jobs)
    parser.add_argument("--think", type=float, nargs=2, default=default.think, metavar=("MIN", "MAX"))
    parser.add_argument("--job-time", type=float, default=default.job_time)
    parser.add_argument("--workers", type=int, default=default.workers)
    parser.add_argument("--max-queued", type=int, default=None,
                        help="jobs one person may have waiting (default: the server's, 4)")
    parser.add_argument("--scheduler", choices=("fair", "sfq", "fifo"), default="fair")
    parser.add_argument("--per-student", action="store_true", help="print every quiet student's waits")
    args = parser.parse_args()
    if args.custom:
        configs = {"custom": LoadConfig(
            quiet=args.quiet, floods=args.floods, flood_jobs=args.flood_jobs,
            think=tuple(args.think), job_time=args.job_time, workers=args.workers,
            traffic_s=args.traffic, max_queued=args.max_queued, scheduler=args.scheduler)}
    else:
        configs = _scenarios(args.traffic)
    reports = {}
    for name, config in configs.items():
        print(f"running: {name} ...", file=sys.stderr, flush=True)
        reports[name] = run_load(config)
    print(_table(reports))
    for name, report in reports.items():
        print(f"\n== {name}\n{report.text()}")
        if args.per_student:
            for student, waits in report.quiet_waits.items():
                print(f"  {student}: {len(waits)} jobs, median "
                      f"{report.quiet_medians.get(student, 0):.2f}, worst "
                      f"{max(waits, default=0):.2f} job-times")


if __name__ == "__main__":
    main()
