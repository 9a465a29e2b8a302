import gc
import os
import time

if os.environ.get("GC_PROBE"):
    _f = open(f"/work/exp/gc-{os.getpid()}.log", "a")
    _t = [0.0, 0]

    def _cb(phase, info):
        if phase == "start":
            _t[0] = time.perf_counter()
        else:
            d = (time.perf_counter() - _t[0]) * 1000
            if info["generation"] == 2:
                _t[1] += 1
                n = len(gc.get_objects(2))
                _f.write(f"{time.time():.3f} gen2 {d:.2f}ms collected={info['collected']} objects={n}\n")
                if _t[1] in (30, 60):
                    from collections import Counter

                    c = Counter(type(o).__name__ for o in gc.get_objects(2))
                    _f.write(repr(c.most_common(20)) + "\n")
                _f.flush()
            elif d > 2:
                _f.write(
                    f"{time.time():.3f} gen{info['generation']} {d:.2f}ms collected={info['collected']}\n"
                )

    gc.callbacks.append(_cb)
