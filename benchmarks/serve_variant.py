"""`lambdarec serve` with some of serving's optimizations switched off (serving.tuning.ServingSwitches),
so a benchmark can measure what each one buys.

    python -m benchmarks.serve_variant --off fast_redis [--off orjson ...] --port 8123 [--workers 1] [--log-level info]

Runs the function `lambdarec serve` runs (lambdarec.commands.serve.serve), with the switches; settings
come from the LAMBDAREC_* environment as for `lambdarec serve`. Who calls it: benchmarks.bench_serving
(through lambdarec.testing.start_server's `command`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace


def command(off: tuple[str, ...]) -> list[str]:
    """The launcher's command line up to the options it shares with `lambdarec serve`."""
    return [
        sys.executable,
        "-m",
        "benchmarks.serve_variant",
        *[arg for name in off for arg in ("--off", name)],
    ]


def main(argv: list[str] | None = None) -> int:
    from lambdarec.commands.serve import ServeRefused, serve
    from serving.tuning import ServingSwitches

    names = [f.name for f in fields(ServingSwitches)]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_variant", description=__doc__)
    parser.add_argument("--off", action="append", default=[], choices=names, help="a switch to turn off")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    options = parser.parse_args(argv)
    switches = replace(ServingSwitches(), **dict.fromkeys(options.off, False))
    try:
        serve(
            host=options.host,
            port=options.port,
            workers=options.workers,
            log_level=options.log_level,
            switches=switches,
        )
    except ServeRefused as exc:
        print(f"serve_variant: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
