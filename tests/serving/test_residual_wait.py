"""The ingress's wait for the residual: long enough on a machine slow for everyone, the floor for a hang."""

from __future__ import annotations

import pytest

from stef_ray.serving.residual_wait import ResidualWait


def test_residual_wait__a_cold_replica_waits_longer_until_its_first_answer_or_timeout():
    wait = ResidualWait(floor_s=1.0, factor=10)
    assert wait.timeout() == 10.0  # first calls pay first-call costs
    wait.timed_out()
    assert wait.timeout() == 1.0  # hung from the start: the longer wait is paid once


def test_residual_wait__the_first_answer_sets_the_estimate():
    wait = ResidualWait(floor_s=1.0, factor=10)
    wait.answered(0.4)
    assert wait.timeout() == pytest.approx(4.0)


def test_residual_wait__a_busy_machine_is_believed_fast_and_forgotten_slowly():
    wait = ResidualWait(floor_s=1.0, factor=10)
    wait.answered(0.02)  # idle: the floor applies
    assert wait.timeout() == 1.0
    wait.answered(0.8)  # another job starts: one slow answer raises the wait above what it took
    assert wait.timeout() > 2.0
    raised = wait.timeout()
    wait.answered(0.02)  # one quick answer does not undo it
    assert wait.timeout() > 0.9 * raised


def test_residual_wait__timeouts_do_not_move_the_estimate():
    wait = ResidualWait(floor_s=1.0, factor=10)
    wait.answered(0.05)
    for _ in range(5):
        wait.timed_out()  # a hung replica
    assert wait.timeout() == 1.0
