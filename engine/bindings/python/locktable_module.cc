// The Python module `locktable`: the C++ API through pybind11.
//
//   import locktable
//   t = locktable.open("/srv/locks")             # a Table (creates it when missing)
//   lock = t.lock("orders")                      # a Lock (creates the name)
//   lock.acquire(shared=False, timeout=None)     # True; False on timeout (timeout=0: try once)
//   lock.abandoned                               # held abandoned by this thread, not yet repaired
//   lock.mark_consistent(); lock.release()
//   with t.lock("orders") as l: ...              # exclusive, released on exit
//   with lock.hold(shared=True, timeout=5): ...  # either mode, with a timeout
//   t.list(), t.history(name=None, limit=None)   # lists of dicts: `ls --json`, `history --json`
//
// Errors raise locktable.Error; its `code` is the code's name ("busy",
// "stale_handle", ...) and its message names the lock or file. Waiting
// releases the GIL, so other Python threads run meanwhile, and a signal's
// handler ends it: Ctrl-C raises KeyboardInterrupt from a waiting acquire,
// as from threading.Lock.acquire, within about 50 ms (100 ms on etcd).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <optional>
#include <string>

#include "locktable/locktable.h"
#include "locktable/version.h"
#include "locktable_json.h"

namespace py = pybind11;
using namespace locktable;

namespace {

PyObject* error_type = nullptr;

[[noreturn]] void raise(const Status& s) {
  py::object type = py::reinterpret_borrow<py::object>(error_type);
  py::object exc = type(s.message());
  exc.attr("code") = code_name(s.code());
  PyErr_SetObject(error_type, exc.ptr());
  throw py::error_already_set();
}

void check(const Status& s) {
  if (!s.ok()) raise(s);
}

py::object to_python(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return py::none();
    case nlohmann::json::value_t::boolean: return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return py::int_(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return py::int_(j.get<uint64_t>());
    case nlohmann::json::value_t::number_float: return py::float_(j.get<double>());
    case nlohmann::json::value_t::string: return py::str(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      py::list out;
      for (const auto& v : j) out.append(to_python(v));
      return out;
    }
    case nlohmann::json::value_t::object: {
      py::dict out;
      for (const auto& [k, v] : j.items()) out[py::str(k)] = to_python(v);
      return out;
    }
    default: return py::none();
  }
}

Deadline deadline_of(const std::optional<double>& timeout_s) {
  if (!timeout_s) return Deadline::never();
  if (std::isnan(*timeout_s)) {
    raise(Status(Code::invalid_argument, "timeout must be a number of seconds (None or inf: for ever), not nan"));
  }
  return Deadline::after(std::chrono::duration<double>(*timeout_s));  // 0 or less: now()
}

// A Table shared by the Locks made from it (a Lock keeps its table open).
struct PyTable {
  std::shared_ptr<Table> table;
  int time_digits = -1;  // of history times, from stats() once (it adds up every lock's counters)
};

Table& table_of(PyTable& t) {
  if (t.table == nullptr) raise(Status(Code::invalid_argument, "the table is closed"));
  return *t.table;
}

// A wait that Python's signal handlers may end: Ctrl-C (KeyboardInterrupt),
// or any handler that raises. Only the main thread runs Python's handlers, so
// only its waits get one (interruptible() below), and it takes the GIL to
// check them at most every kAskEvery, not at every ask of the library.
// REQUIRES: made with the GIL held; asked without it, on the waiting thread.
class PythonSignals final : public WaitInterrupt {
 public:
  bool requested() override {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return false;
    next_ = now + kAskEvery;
    py::gil_scoped_acquire held;
    return PyErr_CheckSignals() != 0;  // the handler's exception stays set for after the wait
  }

 private:
  static constexpr std::chrono::milliseconds kAskEvery{20};
  std::chrono::steady_clock::time_point next_{};
};

unsigned long main_thread_ident = 0;  // threading.main_thread().ident, at import

Deadline interruptible(const Deadline& d, PythonSignals* signals) {
  return PyThread_get_thread_ident() == main_thread_ident ? d.interruptible_by(signals) : d;
}

// After a wait given up for a signal: the handler's exception (with the GIL).
void raise_if_interrupted(const Status& s) {
  if (s.code() == Code::interrupted && PyErr_Occurred() != nullptr) throw py::error_already_set();
}

// What Lock.hold() returns: a context manager that acquires on entry (or
// raises locktable.Error, code "timed_out", when `timeout` passes) and
// releases on exit, in its mode.
struct Hold {
  Lock* lock;
  bool shared;
  std::optional<double> timeout_s;
};

bool acquire(Lock& lock, bool shared, const std::optional<double>& timeout_s);

Lock& enter(Hold& h) {
  if (!acquire(*h.lock, h.shared, h.timeout_s)) {
    raise(Status(Code::timed_out, "lock " + quote_name(h.lock->name()) + ": timed out"));
  }
  return *h.lock;
}

bool acquire(Lock& lock, bool shared, const std::optional<double>& timeout_s) {
  AcquireResult r;
  PythonSignals signals;
  const Deadline deadline = interruptible(deadline_of(timeout_s), &signals);  // may raise: with the GIL
  {
    py::gil_scoped_release unlocked;
    r = lock.acquire(shared ? Mode::shared : Mode::exclusive, deadline);
  }
  if (r.held()) return true;
  if (r.status.code() == Code::timed_out) return false;
  raise_if_interrupted(r.status);
  raise(r.status);
}

// acquire_all from Python: [(lock, shared), ...] -> the tokens and the names
// taken over from dead holders; False on timeout; raises on any other error.
py::object acquire_all(PyTable& t, std::vector<std::pair<Lock*, bool>> requests, const std::optional<double>& timeout_s) {
  Table& table = table_of(t);
  std::vector<LockRequest> reqs;
  for (const auto& [lock, shared] : requests) reqs.push_back(LockRequest{lock, shared ? Mode::shared : Mode::exclusive});
  AcquireAllResult r;
  PythonSignals signals;
  const Deadline deadline = interruptible(deadline_of(timeout_s), &signals);  // may raise: with the GIL
  {
    py::gil_scoped_release unlocked;
    r = table.acquire_all(reqs, deadline);
  }
  if (r.status.code() == Code::timed_out) return py::bool_(false);
  raise_if_interrupted(r.status);
  if (!r.held()) raise(r.status);
  py::dict out;
  py::list abandoned;
  for (size_t i : r.abandoned) abandoned.append(py::bytes(reqs[i].lock->name()).attr("decode")("utf-8", "replace"));
  out["abandoned"] = abandoned;
  out["tokens"] = r.tokens;
  return out;
}

// A time option in seconds: refuses a negative, NaN or absurd one, naming it.
void check_seconds(const char* name, double seconds) {
  if (!(seconds >= 0 && seconds < 1e9)) {
    raise(Status(Code::invalid_argument, std::string(name) + " must be a number of seconds from 0 to 1e9, not " +
                                             py::str(py::float_(seconds)).cast<std::string>()));
  }
}

// A time as time.time() gives it (seconds since the epoch) in nanoseconds;
// past 2^64 ns (the year 2554), the last one.
uint64_t epoch_ns(const char* name, double seconds) {
  if (!(seconds >= 0)) {
    raise(Status(Code::invalid_argument, std::string(name) + " must be seconds since the epoch (time.time()), not " +
                                             py::str(py::float_(seconds)).cast<std::string>()));
  }
  return seconds * 1e9 >= 18446744073709551615.0 ? UINT64_MAX : uint64_t(seconds * 1e9);
}

std::optional<HistoryLevel> level_from(const std::optional<std::string>& name) {
  if (!name) return std::nullopt;
  if (*name == "off") return HistoryLevel::off;
  if (*name == "ring") return HistoryLevel::ring;
  if (*name == "persisted") return HistoryLevel::persisted;
  raise(Status(Code::invalid_argument, "history must be 'off', 'ring' or 'persisted', not '" + *name + "'"));
}

}  // namespace

PYBIND11_MODULE(locktable, m) {
  m.doc() = "Named interprocess locks that survive their holders' crashes (locktable).";
  error_type = PyErr_NewException("locktable.Error", PyExc_Exception, nullptr);
  m.attr("Error") = py::reinterpret_borrow<py::object>(error_type);
  m.attr("__version__") = LOCKTABLE_VERSION;
  main_thread_ident = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();

  // A name as Python shows it: decoded as UTF-8 (bad bytes U+FFFD; list()
  // and history() give them exactly in name_hex).
  auto name_of = [](const Lock& l) { return py::bytes(l.name()).attr("decode")("utf-8", "replace"); };
  py::class_<Lock>(m, "Lock", "A handle to one named lock; ownership is per thread.")
      .def_property_readonly("name", name_of)
      .def_property_readonly("slot", &Lock::slot)
      .def("__repr__",
           [name_of](const Lock& l) {
             // repr() of the name: 'café' as a str shows, control characters escaped.
             return "<locktable.Lock " + py::repr(name_of(l)).cast<std::string>() + " slot " +
                    std::to_string(l.slot()) + ">";
           })
      .def("acquire", &acquire, py::arg("shared") = false, py::arg("timeout") = py::none(),
           "Waits at most `timeout` seconds (None or inf: for ever, 0: try once). True when held (see "
           "`abandoned`), False on timeout.")
      .def(
          "release", [](Lock& l, bool shared) { check(l.release(shared ? Mode::shared : Mode::exclusive)); },
          py::arg("shared") = false)
      .def_property_readonly("abandoned", &Lock::abandoned,
                             "True while this thread holds the lock abandoned and has not marked it consistent.")
      .def("mark_consistent", [](Lock& l) { check(l.mark_consistent()); })
      .def_property_readonly("token", &Lock::token, "The fencing token of this thread's hold (0: none).")
      .def("downgrade", [](Lock& l) { check(l.downgrade()); },
           "Turns this thread's exclusive hold into a shared one, atomically; release it with "
           "release(shared=True).")
      .def("__enter__",
           [](Lock& l) -> Lock& {
             acquire(l, false, std::nullopt);
             return l;
           },
           py::return_value_policy::reference_internal)
      .def("__exit__", [](Lock& l, py::object, py::object, py::object) {
        check(l.release());
        return false;
      })
      .def(
          "hold", [](Lock& l, bool shared, std::optional<double> timeout) { return Hold{&l, shared, timeout}; },
          py::arg("shared") = false, py::arg("timeout") = py::none(), py::keep_alive<0, 1>(),
          "A context manager: `with lock.hold(shared=True, timeout=5) as l:` acquires in that mode on "
          "entry (raising locktable.Error, code 'timed_out', when the timeout passes) and releases on exit.");

  py::class_<Hold>(m, "Hold", "Lock.hold(): acquires on entry, releases on exit.")
      .def("__enter__", &enter, py::return_value_policy::reference)
      .def("__exit__", [](Hold& h, py::object, py::object, py::object) {
        check(h.lock->release(h.shared ? Mode::shared : Mode::exclusive));
        return false;
      });

  py::class_<PyTable>(m, "Table", "A table of named locks.")
      .def(
          "lock",
          [](PyTable& t, const std::string& name, bool create) {
            Lock l;
            check(table_of(t).lookup(name, &l, create ? Lookup::create_if_missing : Lookup::existing));
            return l;
          },
          py::arg("name"), py::arg("create") = true, "A handle for `name` (created unless create=False).")
      .def("remove", [](PyTable& t, const std::string& name) { check(table_of(t).remove(name)); })
      .def(
          "list",
          [](PyTable& t, bool busy, const std::string& prefix) {
            py::list out;
            check(table_of(t).list(
                [&](const LockInfo& l) {
                  out.append(to_python(json::lock_info(l)));
                  return Status::OK();
                },
                busy ? ListScope::busy : ListScope::all, prefix));
            return out;
          },
          py::arg("busy") = false, py::arg("prefix") = "",
          "Every lock as a dict (the keys of `locktable ls --json`); busy=True: only those held, abandoned or "
          "waited for; prefix: only the names that begin with it.")
      .def(
          "history",
          [](PyTable& t, std::optional<std::string> name, std::optional<size_t> limit, std::optional<std::string> kind,
             std::optional<uint32_t> pid, std::optional<double> since, std::optional<double> until, uint64_t after_seq,
             bool newest_first) {
            HistoryQuery q;
            q.name = std::move(name);
            q.limit = limit.value_or(0);
            q.pid = pid;
            if (since) q.since_ns = epoch_ns("since", *since);
            if (until) q.until_ns = epoch_ns("until", *until);
            q.after_seq = after_seq;
            q.newest_first = newest_first;
            if (kind) {
              q.kind = event_kind_from_name(*kind);
              if (!q.kind) raise(Status(Code::invalid_argument, "unknown event kind '" + *kind + "'"));
            }
            std::vector<Event> events;
            Table& table = table_of(t);
            Status s;
            {
              py::gil_scoped_release unlocked;
              s = table.history(q, &events);
            }
            check(s);
            if (t.time_digits < 0) {
              TableStats st;
              t.time_digits = table.stats(&st).ok() ? json::time_digits(st.time_resolution_ns) : 9;
            }
            py::list out;
            for (const Event& e : events) out.append(to_python(json::event(e, t.time_digits)));
            return out;
          },
          py::arg("name") = py::none(), py::arg("limit") = py::none(), py::arg("kind") = py::none(),
          py::arg("pid") = py::none(), py::arg("since") = py::none(), py::arg("until") = py::none(),
          py::arg("after_seq") = 0, py::arg("newest_first") = false,
          "Events as dicts with the keys of `locktable history --json`, oldest first (newest_first: the other way): "
          "only those of lock `name`, of `kind`, of process `pid`, at or after `since` and before `until` (seconds "
          "since the epoch, as time.time()), with a seq above `after_seq`; the newest `limit` of them.")
      .def("stats",
           [](PyTable& t) {
             TableStats st;
             check(table_of(t).stats(&st));
             return to_python(json::stats(st));
           })
      .def(
          "recover",
          [](PyTable& t, bool dry_run) {
            std::vector<Recovery> actions;
            check(table_of(t).recover(dry_run, &actions));
            py::list out;
            for (const Recovery& r : actions) out.append(to_python(json::recovery(r)));
            return out;
          },
          py::arg("dry_run") = false)
      .def("check",
           [](PyTable& t) {
             std::vector<std::string> problems;
             check(table_of(t).check(&problems));
             return problems;
           })
      .def("drain_history", [](PyTable& t) {
        uint64_t n = 0;
        check(table_of(t).drain_history(&n));
        return n;
      })
      .def("acquire_all", &acquire_all, py::arg("locks"), py::arg("timeout") = py::none(),
           "Takes every (lock, shared) of `locks`, all or none, in one canonical order. Returns "
           "{'abandoned': [names], 'tokens': [...]}, or False on timeout.")
      .def(
          "release_all",
          [](PyTable& t, std::vector<std::pair<Lock*, bool>> requests) {
            std::vector<LockRequest> reqs;
            for (const auto& [lock, shared] : requests) reqs.push_back(LockRequest{lock, shared ? Mode::shared : Mode::exclusive});
            check(table_of(t).release_all(reqs));
          },
          py::arg("locks"))
      .def(
          "set_history_level",
          [](PyTable& t, const std::string& level) {
            check(table_of(t).set_history_level(*level_from(std::optional<std::string>(level))));
          },
          py::arg("level"), "History from now on, for every process: 'off', 'ring' or 'persisted'.")
      .def(
          "set_retention",
          [](PyTable& t, uint64_t count, double age) {
            check_seconds("age", age);
            check(table_of(t).set_retention(count, std::chrono::seconds(int64_t(age))));
          },
          py::arg("count"), py::arg("age"), "History records kept: at most `count`, none older than `age` seconds (0: unlimited).")
      .def_property_readonly("location", [](PyTable& t) { return table_of(t).dir(); })
      .def("__repr__",
           [](const PyTable& t) {
             return t.table == nullptr ? std::string("<locktable.Table (closed)>")
                                       : "<locktable.Table '" + t.table->dir() + "'>";
           })
      .def("close", [](PyTable& t) { t.table.reset(); }, "Closes this handle (its Locks keep the table open).")
      .def("__enter__", [](PyTable& t) -> PyTable& { return t; }, py::return_value_policy::reference_internal)
      .def("__exit__", [](PyTable& t, py::object, py::object, py::object) {
        t.table.reset();
        return false;
      });

  m.def(
      "open",
      [](const py::object& where, bool create, std::optional<std::string> history,
         std::optional<uint32_t> initial_slots, std::optional<uint32_t> ring_entries,
         std::optional<double> drain_interval, std::optional<double> deadlock_timeout, std::optional<uint64_t> max_slots,
         std::optional<uint64_t> retention_count, std::optional<double> retention_age, bool allow_network_fs,
         std::optional<size_t> lmdb_map_size) {
        // A str, bytes or os.PathLike (pathlib.Path), as Python's own open()
        // takes a path: os.fsencode gives the bytes the system sees.
        const std::string location = py::bytes(py::module_::import("os").attr("fsencode")(where));
        Options o;
        o.create_if_missing = create;
        o.allow_network_fs = allow_network_fs;
        if (auto level = level_from(history)) o.history = *level;
        if (initial_slots) o.initial_slots = *initial_slots;
        if (max_slots) o.max_slots = *max_slots;
        if (ring_entries) o.ring_entries = *ring_entries;
        if (retention_count) o.retention_count = *retention_count;
        if (lmdb_map_size) o.lmdb_map_size = *lmdb_map_size;
        for (const auto& [name, seconds] : {std::pair{"drain_interval", drain_interval},
                                            std::pair{"deadlock_timeout", deadlock_timeout},
                                            std::pair{"retention_age", retention_age}}) {
          if (seconds) check_seconds(name, *seconds);
        }
        if (drain_interval) o.drain_interval = std::chrono::milliseconds(int64_t(*drain_interval * 1000));
        if (deadlock_timeout) o.deadlock_timeout = std::chrono::milliseconds(int64_t(*deadlock_timeout * 1000));
        if (retention_age) o.retention_age = std::chrono::seconds(int64_t(*retention_age));
        std::unique_ptr<Table> t;
        check(Table::open(location, o, &t));
        return PyTable{std::shared_ptr<Table>(std::move(t))};
      },
      py::arg("location"), py::arg("create") = true, py::arg("history") = py::none(),
      py::arg("initial_slots") = py::none(), py::arg("ring_entries") = py::none(),
      py::arg("drain_interval") = py::none(), py::arg("deadlock_timeout") = py::none(),
      py::arg("max_slots") = py::none(), py::arg("retention_count") = py::none(), py::arg("retention_age") = py::none(),
      py::arg("allow_network_fs") = false, py::arg("lmdb_map_size") = py::none(),
      "Opens (and unless create=False creates) the table at `location` (str, bytes or os.PathLike): a folder, a "
      "file:/// URL, or an "
      "etcd:// or etcds:// URL. The options are Options' (times in seconds): deadlock_timeout, how long a waiter "
      "waits before it looks for a cycle (0: never); drain_interval (0: no background drainer); lmdb_map_size "
      "(bytes) and allow_network_fs; on creation history ('off', 'ring', 'persisted'), initial_slots, max_slots, "
      "ring_entries, retention_count and retention_age (0: unlimited).");
}
