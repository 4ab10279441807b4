"""The Python module, from Python: the promises of the C++ API as a Python
program sees them, with real processes (os.fork, SIGKILL). Run by
`./dev test` through pytest (tests/meson.build puts the module on
PYTHONPATH)."""
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

import locktable


@pytest.fixture
def table(tmp_path):
    t = locktable.open(str(tmp_path / "t"))
    yield t
    t.close()


def holder_child(t, name, mode_shared=False):
    """Forks a child that holds `name` until killed; returns its pid once it holds it."""
    lock = t.lock(name)  # before the fork: a child may use Locks, not the Table
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            ok = lock.acquire(shared=mode_shared)
            os.write(w, b"y" if ok else b"n")
            signal.pause()
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"y"
    os.close(r)
    return pid


def test_acquire_release_and_the_context_manager(table):
    lock = table.lock("orders")
    assert lock.name == "orders"
    assert lock.acquire() is True
    assert lock.token > 0
    with pytest.raises(locktable.Error) as e:
        lock.acquire(timeout=0)
    assert e.value.code == "already_held"
    assert "orders" in str(e.value)
    lock.release()
    with pytest.raises(locktable.Error) as e:
        lock.release()
    assert e.value.code == "not_owner"
    with table.lock("orders") as l:
        assert l.abandoned is False
        assert l.token > 0
    assert table.lock("orders").acquire(timeout=0) is True  # released by the with block
    table.lock("orders").release()


def test_a_held_lock_times_out_in_another_process(table):
    pid = holder_child(table, "busy")
    try:
        lock = table.lock("busy")
        assert lock.acquire(timeout=0) is False
        start = time.monotonic()
        assert lock.acquire(timeout=0.05) is False
        assert time.monotonic() - start >= 0.045
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_an_infinite_timeout_waits_and_a_nan_timeout_is_refused(table):
    pid = holder_child(table, "forever")
    lock = table.lock("forever")
    try:
        result = []

        def wait_for_ever():
            result.append(lock.acquire(timeout=float("inf")))
            result.append(lock.abandoned)  # this thread holds it
            lock.mark_consistent()
            lock.release()

        waiter = threading.Thread(target=wait_for_ever)
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()  # waiting, not timed out at once
        with pytest.raises(locktable.Error, match="timeout") as e:
            lock.acquire(timeout=float("nan"))
        assert e.value.code == "invalid_argument"
        with pytest.raises(locktable.Error, match="timeout"):
            table.acquire_all([(table.lock("other"), False)], timeout=float("nan"))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    waiter.join(10)
    assert result == [True, True]  # held, taken over from the killed holder
    assert lock.acquire(timeout=0) is True
    lock.release()


def test_a_holder_killed_is_reported_abandoned_until_marked_consistent(table):
    pid = holder_child(table, "jobs")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    lock = table.lock("jobs")
    assert lock.acquire(timeout=5) is True
    assert lock.abandoned is True
    lock.mark_consistent()
    assert lock.abandoned is False
    lock.release()
    with table.lock("jobs") as l:
        assert l.abandoned is False
    events = table.history(name="jobs", kind="recovered")
    assert len(events) == 1
    assert events[0]["dead_owner"]["pid"] == pid


def test_the_context_manager_hands_an_abandoned_lock_to_its_body(table):
    pid = holder_child(table, "repair")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with table.lock("repair") as l:
        assert l.abandoned
        l.mark_consistent()


def test_shared_holders_together_writers_kept_out(table):
    pid = holder_child(table, "config", mode_shared=True)
    try:
        lock = table.lock("config")
        assert lock.acquire(shared=True, timeout=0) is True
        lock.release(shared=True)
        assert lock.acquire(timeout=0) is False
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_hold_is_a_context_manager_in_either_mode_with_a_timeout(table):
    pid = holder_child(table, "config", mode_shared=True)
    try:
        lock = table.lock("config")
        with lock.hold(shared=True, timeout=1) as held:  # shared beside the other process's reader
            assert held is lock
            with pytest.raises(locktable.Error) as again:
                lock.acquire(shared=True, timeout=0)
            assert again.value.code == "already_held"  # this thread holds it
        assert lock.acquire(shared=True, timeout=0) is True  # released on exit
        lock.release(shared=True)
        with pytest.raises(locktable.Error) as e:
            with lock.hold(timeout=0.05):  # exclusive: kept out by the reader
                pytest.fail("entered a lock held shared by another process")
        assert e.value.code == "timed_out"
        assert "config" in str(e.value)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with lock.hold() as held:  # the reader died: this writer is told
        assert held.abandoned
        held.mark_consistent()
    assert lock.acquire(timeout=0) is True  # released on exit
    lock.release()


def test_a_downgrade_lets_readers_in_and_keeps_writers_out(table):
    lock = table.lock("doc")
    assert lock.acquire() is True
    token = lock.token
    lock.downgrade()
    assert lock.token == token
    with pytest.raises(locktable.Error, match="not held exclusive"):
        lock.downgrade()
    pid = os.fork()
    if pid == 0:
        ok = lock.acquire(shared=True, timeout=0) and (lock.release(shared=True) or True)
        ok = ok and lock.acquire(timeout=0) is False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    lock.release(shared=True)


def ticks_while(wait):
    """Calls wait() while another thread counts millisecond ticks; returns (wait's result, the ticks)."""
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    th = threading.Thread(target=ticker)
    th.start()
    try:
        return wait(), len(ticks)
    finally:
        stop.set()
        th.join()


def test_ctrl_c_ends_a_waiting_acquire_with_keyboard_interrupt(table, tmp_path):
    pid = holder_child(table, "busy")
    waiter = tmp_path / "waiter.py"
    waiter.write_text(
        "import locktable, threading\n"
        f"t = locktable.open({str(tmp_path / 't')!r})\n"
        "lock = t.lock('busy')\n"
        "print('waiting', flush=True)\n"
        "for how in ('acquire', 'with', 'acquire_all'):\n"
        "    try:\n"
        "        if how == 'acquire': lock.acquire()\n"
        "        elif how == 'with':\n"
        "            with lock: pass\n"
        "        else: t.acquire_all([(lock, True)])\n"
        "        print(how, 'acquired', flush=True)\n"
        "    except KeyboardInterrupt:\n"
        "        print(how, 'interrupted', lock.acquire(timeout=0), flush=True)\n"
        "    input()\n"  # the next SIGINT comes after this line is answered
        # A thread other than the main one does not run Python's handlers: it times out.
        "r = []\n"
        "th = threading.Thread(target=lambda: r.append(lock.acquire(timeout=0.3)))\n"
        "th.start(); th.join()\n"
        "print('thread', r, flush=True)\n"
    )
    p = subprocess.Popen([sys.executable, str(waiter)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"waiting\n"
        lines = []
        for how in ("acquire", "with", "acquire_all"):
            time.sleep(0.3)  # asleep in the acquire by now
            sent = time.monotonic()
            p.send_signal(signal.SIGINT)
            # Within about 50 ms; without the interruption never (the holder never releases).
            assert select.select([p.stdout], [], [], 5)[0], f"{how}: still waiting 5 s after SIGINT"
            lines.append(p.stdout.readline())
            assert time.monotonic() - sent < 5
            p.stdin.write(b"\n")
            p.stdin.flush()
        out, _ = p.communicate(timeout=10)
        assert lines == [b"acquire interrupted False\n", b"with interrupted False\n", b"acquire_all interrupted False\n"]
        assert out == b"thread [False]\n"
        assert p.returncode == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_waiting_releases_the_gil(table):
    pid = holder_child(table, "slow")
    try:
        acquired, ticks = ticks_while(lambda: table.lock("slow").acquire(timeout=0.2))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert acquired is False
    assert ticks >= 20  # the other thread ran while this one waited


def test_list_and_history_have_the_cli_json_keys(table, tmp_path):
    cli = os.environ.get("LOCKTABLE_CLI")
    held = table.lock("held")
    assert held.acquire()
    free = table.lock("free")
    for _ in range(2):
        assert free.acquire(shared=True)
        free.release(shared=True)
    rows = {r["name"]: r for r in table.list()}
    assert rows["held"]["state"] == "held"
    assert rows["held"]["owner"]["pid"] == os.getpid()
    assert rows["free"]["state"] == "free"
    assert rows["free"]["counters"]["shared_acquisitions"] == 2
    assert rows["held"]["counters"]["exclusive_acquisitions"] == 1
    assert [r["name"] for r in table.list(busy=True)] == ["held"]
    events = table.history()
    assert [e["event"] for e in events if e["name"] == "held"] == ["created", "acquired"]
    if cli:  # the same keys as the command line's --json
        out = subprocess.run([cli, "ls", table.location, "--json"], check=True, capture_output=True, text=True)
        cli_rows = {r["name"]: r for r in json.loads(out.stdout)}
        assert set(cli_rows["held"]) == set(rows["held"])
        out = subprocess.run([cli, "history", table.location, "--json"], check=True, capture_output=True, text=True)
        cli_events = [json.loads(line) for line in out.stdout.splitlines()]
        assert set(cli_events[0]) == set(events[0])
    held.release()


def test_history_filters_as_the_cli_does(table):
    a = table.lock("a")
    with a:
        pass
    between = time.time()
    time.sleep(0.02)  # past the coarse clock's tick
    with a:
        pass
    pid = os.fork()
    if pid == 0:
        try:
            with a:  # the parent's Lock, taken by the child: its events carry the child's pid
                pass
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    everything = table.history()
    seqs = [e["seq"] for e in everything]
    assert [e["seq"] for e in table.history(newest_first=True)] == seqs[::-1]
    assert [e["seq"] for e in table.history(after_seq=seqs[2])] == seqs[3:]
    later = table.history(since=between)
    assert later and all(e["seq"] > seqs[2] for e in later)
    assert [e["seq"] for e in table.history(until=between)] == seqs[:3]  # created, acquired, released
    assert {e["pid"] for e in table.history(pid=pid)} == {pid}
    assert [e["seq"] for e in table.history(newest_first=True, limit=2)] == seqs[:-3:-1]
    for bad in ({"since": -1.0}, {"until": float("nan")}):
        with pytest.raises(locktable.Error) as e:
            table.history(**bad)
        assert e.value.code == "invalid_argument"


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(locktable.Error) as e:
        locktable.open(str(tmp_path / "missing"), create=False)
    assert e.value.code == "not_found"
    assert "missing" in str(e.value)
    with pytest.raises(locktable.Error) as e:
        locktable.open("foo://x")
    assert e.value.code == "unsupported"
    with pytest.raises(locktable.Error) as e:
        locktable.open(str(tmp_path / "t"), history="sometimes")
    assert e.value.code == "invalid_argument"
    t = locktable.open(str(tmp_path / "t"))
    with pytest.raises(locktable.Error) as e:
        t.lock("")
    assert e.value.code == "invalid_argument"
    with pytest.raises(locktable.Error) as e:
        t.lock("nobody", create=False)
    assert e.value.code == "not_found"
    lock = t.lock("gone")
    t.remove("gone")
    with pytest.raises(locktable.Error) as e:
        lock.acquire()
    assert e.value.code == "stale_handle"
    assert repr(t) == f"<locktable.Table '{tmp_path / 't'}'>"
    assert repr(t.lock("orders")) == f"<locktable.Lock 'orders' slot {t.lock('orders').slot}>"
    for name in ("caf\u00e9", "esc\x1b[2J\nape"):  # as repr(str) shows it: readable, control bytes escaped
        assert repr(t.lock(name)) == f"<locktable.Lock {name!r} slot {t.lock(name).slot}>"
    t.close()
    assert repr(t) == "<locktable.Table (closed)>"
    with pytest.raises(locktable.Error) as e:
        t.lock("x")
    assert e.value.code == "invalid_argument"


def test_open_takes_a_path_as_str_bytes_or_pathlib_path(tmp_path):
    folder = tmp_path / "by-path"
    with locktable.open(folder) as t:  # a pathlib.Path, as the os module's calls take it
        with t.lock("x"):
            pass
    for same in (str(folder), os.fsencode(folder)):
        with locktable.open(same, create=False) as t:
            assert [l["name"] for l in t.list()] == ["x"]
    with pytest.raises(TypeError):
        locktable.open(42)


def test_open_takes_every_option_and_history_settings_change_later(tmp_path):
    for bad in ({"deadlock_timeout": -1}, {"drain_interval": float("nan")}, {"retention_age": -5}):
        with pytest.raises(locktable.Error) as e:
            locktable.open(str(tmp_path / "bad"), **bad)
        assert e.value.code == "invalid_argument"
        assert next(iter(bad)) in str(e.value)
    assert not (tmp_path / "bad").exists()  # refused before anything is created
    with pytest.raises(locktable.Error) as e:
        locktable.open(str(tmp_path / "bad"), max_slots=1 << 31)
    assert e.value.code == "invalid_argument" and "max_slots" in str(e.value)
    t = locktable.open(str(tmp_path / "t"), initial_slots=8, max_slots=8, retention_count=3, retention_age=0,
                       history="persisted")
    for i in range(8):
        t.lock(f"n{i}")
    with pytest.raises(locktable.Error) as e:
        t.lock("one-too-many")  # max_slots reached
    assert e.value.code == "capacity"
    lock = t.lock("n0")
    for _ in range(5):
        assert lock.acquire() is True
        lock.release()
    t.drain_history()
    assert len(t.history()) == 3  # retention_count
    t.set_retention(count=0, age=0)  # unlimited from now on
    t.set_history_level("off")
    assert lock.acquire() is True
    lock.release()
    t.set_history_level("persisted")
    for _ in range(3):
        assert lock.acquire() is True
        lock.release()
    t.drain_history()
    events = t.history()
    assert len(events) == 3 + 6  # none while off; none dropped since
    with pytest.raises(locktable.Error) as e:
        t.set_history_level("loud")
    assert e.value.code == "invalid_argument"
    with pytest.raises(locktable.Error) as e:
        t.set_retention(count=1, age=-1)
    assert e.value.code == "invalid_argument"
    t.close()


def test_stats_recover_and_check(table):
    table.lock("a")
    st = table.stats()
    assert st["slots"]["used"] == 1
    assert st["history"]["level"] == "persisted"
    assert table.recover(dry_run=True) == []
    assert table.check() == []


def test_acquire_all_and_a_deadlock_between_two_threads(tmp_path):
    t = locktable.open(str(tmp_path / "t"), deadlock_timeout=0.2)
    a, b = t.lock("a"), t.lock("b")
    got = t.acquire_all([(b, False), (a, True)])
    assert got["abandoned"] == [] and all(token > 0 for token in got["tokens"])
    t.release_all([(b, False), (a, True)])
    # Two threads, each holding one and wanting the other: one is told deadlock.
    results, ready = [], threading.Barrier(2)

    def worker(first, second):
        first.acquire()
        ready.wait()
        try:
            results.append(second.acquire(timeout=10))
            second.release()
        except locktable.Error as e:
            results.append(e.code)
        finally:
            first.release()

    threads = [threading.Thread(target=worker, args=(a, b)), threading.Thread(target=worker, args=(b, a))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert sorted(map(str, results)) == ["True", "deadlock"]
    t.close()


def free_loopback_ports(count):
    """`count` consecutive loopback ports nothing is bound to, below the ephemeral range."""
    import random
    import socket
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for _ in range(200):
        base = random.randrange(10000, max(low, 11000) - count)
        try:
            socks = []
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free loopback ports")


@pytest.fixture(scope="module")
def etcd_endpoint(tmp_path_factory):
    """A single-member etcd of this module's own (Debian's etcd-server, which ./dev installs)."""
    import shutil
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    for _ in range(3):
        port = free_loopback_ports(2)
        data = tmp_path_factory.mktemp("etcd")
        client, peer = f"127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
        proc = subprocess.Popen(
            ["etcd", "--data-dir", str(data / "data"), "--name", "py", "--listen-client-urls", "http://" + client,
             "--advertise-client-urls", "http://" + client, "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", "py=" + peer],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 15
        while time.time() < deadline and proc.poll() is None:
            try:
                locktable.open(f"etcd://{client}/ready").close()
                break
            except locktable.Error:
                time.sleep(0.1)
        if proc.poll() is None and time.time() < deadline:
            yield client
            proc.terminate()
            proc.wait()
            return
        proc.kill()
        proc.wait()
    pytest.fail("etcd did not start")


def test_an_etcd_table_from_python_waits_without_the_gil_and_reports_a_killed_holder(etcd_endpoint):
    url = f"etcd://{etcd_endpoint}/py?ttl=2"
    t = locktable.open(url)
    # A holder in another process (it opens the table itself, as after any fork).
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import locktable, signal, sys\n"
         f"l = locktable.open({url!r}).lock('job')\n"
         "assert l.acquire()\n"
         "print('held', flush=True)\n"
         "signal.pause()\n"],
        stdout=subprocess.PIPE, env=os.environ.copy())
    try:
        assert holder.stdout.readline() == b"held\n"
        acquired, ticks = ticks_while(lambda: t.lock("job").acquire(timeout=0.5))  # waits on etcd
        assert acquired is False
        assert ticks >= 20  # the other thread ran while this one waited on etcd
    finally:
        holder.kill()
        holder.wait()
    lock = t.lock("job")
    assert lock.acquire(timeout=10) is True  # after the dead holder's lease ran out
    assert lock.abandoned is True
    assert lock.token > 0
    lock.mark_consistent()
    lock.release()
    with pytest.raises(locktable.Error) as e:
        locktable.open("etcd://127.0.0.1:1/py")
    assert e.value.code == "io_error"
    assert "127.0.0.1:1" in str(e.value)
    with pytest.raises(locktable.Error) as e:
        locktable.open(f"etcds://{etcd_endpoint}/py?cacert=/nonexistent/ca.pem")
    assert e.value.code == "not_found"
    assert "/nonexistent/ca.pem" in str(e.value)
    t.close()
