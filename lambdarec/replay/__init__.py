"""Replay evaluation: does merging the speed layer with the nightly batch model pay?

`lambdarec replay` (lambdarec/commands/replay.py) and benchmarks/bench_replay.py call
`lambdarec.replay.runner.run_replay`. The batch layer is trained on everything before a cut-off T, the
events after T are replayed in time order through the real event bus and streaming job, and the real
serving code is asked for each sampled held-out event's user before that event. Modules:

- `dataset`: event files / ratings CSV -> time-ordered events, the cut-off, the pre-T input of the batch;
- `protocol`: which held-out events are asked about, rounds (publish, wait, ask), pacing, catch-up;
- `scoring`: hit/rank bookkeeping per model and the baselines that are not the serving code;
- `runner`: the wiring (private Redis, Spark batch, streaming query, in-process serving apps).
"""
