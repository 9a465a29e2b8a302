"""The Redis breaker of serving.recommender: an error opens it at once, time-outs only in a row."""

from __future__ import annotations

from serving.recommender import RedisBreaker


def test_an_error_opens_the_breaker_at_once():
    breaker = RedisBreaker(retry_s=60, timeouts_to_open=3)
    breaker.failed()
    assert (breaker.allows(), breaker.failures) == (False, 1)
    breaker.succeeded()
    assert breaker.allows() is True


def test_time_outs_open_it_only_in_a_row():
    breaker = RedisBreaker(retry_s=60, timeouts_to_open=3)
    breaker.failed(timed_out=True)
    breaker.failed(timed_out=True)
    assert breaker.allows() is True  # two late answers: the next request still tries Redis
    breaker.succeeded()
    breaker.failed(timed_out=True)
    breaker.failed(timed_out=True)
    assert breaker.allows() is True  # the success in between reset the count
    breaker.failed(timed_out=True)
    assert (breaker.allows(), breaker.failures, breaker.timeouts_in_a_row) == (False, 5, 3)


def test_one_time_out_opens_it_when_so_configured():
    breaker = RedisBreaker(retry_s=60, timeouts_to_open=1)
    breaker.failed(timed_out=True)
    assert breaker.allows() is False
