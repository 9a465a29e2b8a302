from benchmarks.capacity_plan import Assumptions, Unit, markdown, plan

UNIT = Unit(
    batch_user_bytes=10_000,
    batch_item_bytes=1_000,
    speed_user_bytes=2_000,
    speed_item_bytes=5_000,
    memory_overhead=1.0,
    nightly_core_s_per_million_events=1_000,
    nightly_core_s_per_thousand_users=240,
    publish_core_s_per_million_keys=2_000,
    serving_cpu_ms_per_request=3.0,
    speed_job_events_per_s=1_000,
    bus_events_per_s_per_partition=5_000,
)


def test_a_million_users_scale_from_the_unit_costs_and_the_stated_assumptions():
    assert plan(1_000_000, UNIT, Assumptions()) == {
        "users": 1_000_000,
        "items": 100_000,
        # (300k served users x 10 kB + 100k items x 1 kB) x 4 versions; 200k x 2 kB + 100k x 5 kB
        "redis_gb": 13.3,
        "redis_batch_gb": 12.4,
        "redis_speed_gb": 0.9,
        "redis_shards": 1,
        "kafka_partitions": 84,  # one per speed job: 50k events/s over 600 each (1,000 at 60 %)
        "speed_jobs_2_cores": 84,
        # 1.44 B events a day (peak / 3) x 18 days x 1,000 core-s per million, in 2 h
        "nightly_cores": 3_600,
        "nightly_cores_by_users": 10,  # 300k served users x 0.24 core-s = 72,000 core-s in 7,200 s
        "publish_cores": 3,  # 2.1 M keys x 2,000 core-s per million = 4,200 core-s in 30 min
        "keys_published": 2_100_000,
        "api_cores": 50,  # 10k req/s x 3 ms at 60 %
        "api_replicas": 25,
    }


def test_the_table_shows_each_size_in_one_row():
    rows = [plan(users, UNIT, Assumptions()) for users in (1_000_000, 10_000_000)]
    table = markdown(rows).splitlines()
    assert table[0].startswith("| users | items | Redis GB (batch + speed) | Redis shards |")
    assert table[2] == "| 1,000,000 | 100,000 | 13.3 (12.4 + 0.9) | 1 | 84 | 84 | 10 | 3,600 | 3 | 25 |"
    assert (
        table[3] == "| 10,000,000 | 1,000,000 | 133.0 (124.0 + 9.0) | 6 | 84 | 84 | 100 | 3,600 | 24 | 25 |"
    )
