"""The class load test's full report (issue 11): 30 simulated students against one roster server
on loopback, 3 of them flooding with 50 jobs each, the null engine at 0.2 s a job, 2 workers.

Prints each quiet student's median and worst wait (submit -> IN_PROGRESS, in job-times), the
throughput shares and Jain's index (quiet students and overall), 429 counts, the server's RSS and
how many cross-student reads succeeded (must be 0). The simulator is ``tests/server/loadsim.py``,
which ``tests/server/test_class_load.py`` asserts on.

    python benchmarks/class_load.py [--traffic 25] [--quiet 27] [--floods 3] [--think 1 3]
        [--fifo] [--max-queued 1000]   # the 'before': FIFO order, no per-person cap

Not part of the test suite: it prints measured numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server.loadsim import LoadConfig, run_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = LoadConfig()
    parser.add_argument("--traffic", type=float, default=default.traffic_s, help="seconds of traffic")
    parser.add_argument("--quiet", type=int, default=default.quiet)
    parser.add_argument("--floods", type=int, default=default.floods)
    parser.add_argument("--flood-jobs", type=int, default=default.flood_jobs)
    parser.add_argument("--think", type=float, nargs=2, default=default.think, metavar=("MIN", "MAX"))
    parser.add_argument("--job-time", type=float, default=default.job_time)
    parser.add_argument("--workers", type=int, default=default.workers)
    parser.add_argument("--max-queued", type=int, default=None,
                        help="jobs one person may have waiting (default: the server's, 4)")
    parser.add_argument("--fifo", action="store_true",
                        help="first-come-first-served order instead of fair turns (the 'before')")
    parser.add_argument("--per-student", action="store_true", help="print every quiet student's waits")
    args = parser.parse_args()
    report = run_load(LoadConfig(quiet=args.quiet, floods=args.floods, flood_jobs=args.flood_jobs,
                                 think=tuple(args.think), job_time=args.job_time,
                                 workers=args.workers, traffic_s=args.traffic,
                                 max_queued=args.max_queued,
                                 scheduler="fifo" if args.fifo else "fair"))
    print(report.text())
    if args.per_student:
        for name, waits in report.quiet_waits.items():
            print(f"  {name}: {len(waits)} jobs, median {report.quiet_medians.get(name, 0):.2f}, "
                  f"worst {max(waits, default=0):.2f} job-times")


if __name__ == "__main__":
    main()
