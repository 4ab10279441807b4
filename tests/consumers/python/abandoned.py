"""A Python script using an installed locktable module: a child takes a lock
and is SIGKILLed holding it; the parent is told it was abandoned.
Usage: python3 abandoned.py TABLE_DIR"""
import os
import signal
import sys

import locktable

table = locktable.open(sys.argv[1])
lock = table.lock("orders")
r, w = os.pipe()
kid = os.fork()
if kid == 0:
    os.write(w, b"y" if lock.acquire() else b"n")
    signal.pause()
    os._exit(0)
assert os.read(r, 1) == b"y"
os.kill(kid, signal.SIGKILL)
os.waitpid(kid, 0)
assert lock.acquire(timeout=5)
assert lock.abandoned, "expected the lock abandoned"
lock.mark_consistent()
lock.release()
print(f"python: abandoned by {kid}, as expected (module {locktable.__file__})")
