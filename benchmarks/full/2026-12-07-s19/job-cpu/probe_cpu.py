"""CPU of a process tree over an interval, per process and per thread (names from /proc comm).
Usage: probe_cpu.py PID SECONDS"""

import sys
import time
from pathlib import Path

import psutil

pid, secs = int(sys.argv[1]), float(sys.argv[2])
tick = 100.0


def snapshot():
    root = psutil.Process(pid)
    out = {}
    for p in [root, *root.children(recursive=True)]:
        try:
            name = " ".join(p.cmdline())[:90]
        except psutil.Error:
            continue
        for task in Path(f"/proc/{p.pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
                comm = (task / "comm").read_text().strip()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            out[(p.pid, name, int(task.name), comm)] = (int(fields[11]) + int(fields[12])) / tick
    return out


a = snapshot()
time.sleep(secs)
b = snapshot()
per_thread = {k: b[k] - a.get(k, 0.0) for k in b}
per_proc = {}
for (ppid, name, _tid, _comm), v in per_thread.items():
    per_proc[(ppid, name)] = per_proc.get((ppid, name), 0.0) + v
by_comm = {}
for (ppid, _name, _tid, comm), v in per_thread.items():
    key = (ppid, comm.rstrip("0123456789"))
    by_comm[key] = by_comm.get(key, 0.0) + v
print("cores per process:")
for (ppid, name), v in sorted(per_proc.items(), key=lambda x: -x[1]):
    print(f"  {v / secs:5.2f}  {ppid} {name}")
print("cores per thread group:")
for (ppid, comm), v in sorted(by_comm.items(), key=lambda x: -x[1])[:20]:
    print(f"  {v / secs:5.2f}  {ppid} {comm}")
