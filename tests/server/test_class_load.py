"""The class load test (issue 11, "Tests and measurements"), bounded in time, on loopback: 30
simulated students (3 flooding with 50 jobs each, backing off on 429 per Retry-After; the rest one
job at a time, thinking 1-3 s from the end of each job) against one roster server, null engine at
0.2 s a job. Two scenarios, each run once (a module fixture) and shared by the tests below:

``ISSUE`` -- the issue's parameters, 2 workers. The arithmetic: 2 workers / 0.2 s = 10 jobs/s,
while 27 students on a cycle of (wait + 0.2 s job + 2 s mean think) offer 27 / 2.2 = 12.3 jobs/s
at zero wait: more than the server does, so the quiet students queue behind *each other*
whatever the order. With no flooder at all the mean wait is 27 / 10 - 2.2 = 0.5 s = 2.5
job-times (measured: median 2.3, worst about 5); with each flooder getting one person's share
the quiet students get 27/30 of 10 jobs/s and the mean wait is 30 / 10 - 2.2 = 0.8 s = 4
job-times (:func:`~tests.server.loadsim.fair_share_wait`). "Worst wait <= 3 job-times" cannot
hold there; asserted instead: the quiet median within one job-time of that fair-share bound
(first-come-first-served order measures about 16-33, fair queuing without the idle credit about
7), the worst within 3x the bound, Jain's index over everyone's throughput at least 0.85 (fair
queuing without the credit: 0.75, FIFO: 0.23) with each flooder still served, 429s for the
flooders, and no cross-student read.

Waits are asserted on the server's own records (submitted -> started): 30 clients and the server
share one Python process on 2 cores shared with other work, and on a busy machine the simulator
itself lags by up to several job-times on the way in and out (``client_lag``, in the report),
which is not time spent in the queue (it only lengthens the students' cycle, so the bound holds).
The client view (SSE) is in the report.

``GOAL`` -- the nearest feasible load for the issue's goal: the same 30 students and flood with
4 workers (20 jobs/s; the quiet students offer 12.3 jobs/s at zero wait and the flooders take
the rest), where a quiet student's worst wait must be at most 3 job-times (measured 1.4-1.7; fair
queuing without the idle credit: about 3.5 in a discrete-event model of the same scenario).

Figures go to the report ``benchmarks/class_load.py`` prints; here they are in assertion messages.
"""

from __future__ import annotations

import pytest

from .loadsim import LoadConfig, LoadReport, fair_share_wait, run_load

pytestmark = pytest.mark.slow

ISSUE = LoadConfig(traffic_s=18.0)
GOAL = LoadConfig(workers=4, traffic_s=14.0)
#: The issue's goal: a quiet student's worst wait (submit -> IN_PROGRESS), in job-times.
WORST_WAIT_GOAL = 3.0


@pytest.fixture(scope="module")
def issue_load() -> LoadReport:
    return run_load(ISSUE)


@pytest.fixture(scope="module")
def goal_load() -> LoadReport:
    return run_load(GOAL)


def _flooders(report: LoadReport) -> list[str]:
    return [k for k in report.completed if k not in report.quiet_waits]


def test_no_cross_student_read_succeeds(issue_load: LoadReport) -> None:
    assert issue_load.cross_reads >= 3 * 30, issue_load.text()  # each tried another's ids
    assert issue_load.cross_read_leaks == [], issue_load.text()


def test_the_run_is_bounded_and_the_per_person_cap_answers_429(issue_load: LoadReport) -> None:
    report = issue_load
    assert report.duration_s < ISSUE.traffic_s + 15, report.text()
    assert report.errors == [], report.text()
    assert all(report.quiet_waits.values()), report.text()  # every quiet student got turns
    assert all(report.too_many[k] > 0 for k in _flooders(report)), report.text()
    assert not any(report.too_many[k] for k in report.quiet_waits), report.text()


def test_quiet_students_wait_about_what_a_fair_share_of_the_capacity_allows(
        issue_load: LoadReport) -> None:
    bound = fair_share_wait(ISSUE)  # 4.0 job-times: see the module docstring
    assert issue_load.quiet_median_server <= bound + 1.0, issue_load.text()
    assert issue_load.quiet_worst_server <= 3 * bound, issue_load.text()
    assert issue_load.jain_quiet > 0.9, issue_load.text()  # the quiet students share evenly


def test_throughput_is_shared_per_person_and_each_flooder_still_progresses(
        issue_load: LoadReport) -> None:
    shares = issue_load.flooder_shares  # one person's share is 1/30; FIFO gives each 22%
    assert len(shares) == ISSUE.floods, issue_load.text()
    assert all(0 < share <= 3 / 30 for share in shares.values()), issue_load.text()
    assert issue_load.jain_all >= 0.85, issue_load.text()  # per-person throughput, everyone


def test_a_quiet_students_worst_wait_is_at_most_3_job_times_with_4_workers(
        goal_load: LoadReport) -> None:
    report = goal_load
    assert report.errors == [] and report.cross_read_leaks == [], report.text()
    assert all(report.quiet_waits.values()), report.text()
    flooders = _flooders(report)  # the flood was there: capped and still running
    assert all(report.too_many[k] > 0 and report.completed[k] > 0 for k in flooders), report.text()
    assert report.quiet_worst_server <= WORST_WAIT_GOAL, report.text()
