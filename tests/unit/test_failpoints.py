import threading

import pytest

from spark_jobs.streaming.failpoints import ENV, armed, reach


def test_only_the_armed_point_fires_with_its_delay():
    env = {ENV: "bronze_write:0.25"}
    assert armed("bronze_write", env) == 0.25
    assert armed("redis_apply", env) is None
    assert armed("redis_apply", {ENV: "redis_apply"}) == 0.0
    assert armed("redis_apply", {}) is None


def test_a_misspelt_point_or_delay_is_an_error_not_a_silent_no_op():
    with pytest.raises(ValueError, match="unknown point 'bronze'; known: bronze_write, redis_apply"):
        armed("bronze_write", {ENV: "bronze"})
    with pytest.raises(ValueError, match="the delay after ':' must be seconds"):
        armed("bronze_write", {ENV: "bronze_write:soon"})


def test_reach_kills_at_once_or_from_a_timer():
    kills = []
    assert reach("redis_apply", {ENV: "redis_apply"}, kill=lambda: kills.append("now")) is True
    assert kills == ["now"]
    assert reach("bronze_write", {ENV: "redis_apply"}, kill=lambda: kills.append("never")) is False
    fired = threading.Event()
    assert reach("bronze_write", {ENV: "bronze_write:0.05"}, kill=fired.set) is True
    assert not fired.is_set()  # the job carries on until the timer fires
    assert fired.wait(5.0)
    assert kills == ["now"]
