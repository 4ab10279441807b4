// The C API (locktable/c.h) over the C++ API: handles wrap the C++ objects,
// codes are locktable::Code's numbers, and every entry point catches what
// the C++ side may throw (std::bad_alloc, mostly) so that nothing crosses.
#include "locktable/c.h"

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "locktable/locktable.h"
#include "locktable/version.h"

using namespace locktable;

struct lt_table {
  std::unique_ptr<Table> table;
};

struct lt_lock {
  Lock lock;
};

struct lt_options {
  Options options;
};

namespace {

static_assert(LT_OK == int(Code::ok) && LT_ABANDONED == int(Code::abandoned) && LT_TIMED_OUT == int(Code::timed_out));
static_assert(LT_ALREADY_HELD == int(Code::already_held) && LT_NOT_OWNER == int(Code::not_owner));
static_assert(LT_NOT_FOUND == int(Code::not_found) && LT_BUSY == int(Code::busy));
static_assert(LT_STALE_HANDLE == int(Code::stale_handle) && LT_INVALID_ARGUMENT == int(Code::invalid_argument));
static_assert(LT_CORRUPT == int(Code::corrupt) && LT_VERSION_MISMATCH == int(Code::version_mismatch));
static_assert(LT_UNSUPPORTED == int(Code::unsupported) && LT_PERMISSION_DENIED == int(Code::permission_denied));
static_assert(LT_CAPACITY == int(Code::capacity) && LT_IO_ERROR == int(Code::io_error) &&
              LT_DEADLOCK == int(Code::deadlock) && LT_LOCK_LOST == int(Code::lock_lost) &&
              LT_INTERRUPTED == int(Code::interrupted));
static_assert(LT_SHARED == int(Mode::shared) && LT_HISTORY_PERSISTED == int(HistoryLevel::persisted));
static_assert(LT_STATE_DEAD_OWNER == int(LockState::dead_owner) && LT_EVENT_DOWNGRADED == int(EventKind::downgraded));

thread_local std::string last_error;

// Records a failing status's message; returns its code.
int report(const Status& s) {
  if (!s.ok() && s.code() != Code::abandoned) last_error = s.message();
  return int(s.code());
}

int fail(Code code, const char* message) {
  last_error = message;
  return int(code);
}

// Runs `body`, turning any exception into LT_IO_ERROR with its message.
template <class F>
int guarded(F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return fail(Code::io_error, e.what());
  } catch (...) {
    return fail(Code::io_error, "unknown C++ exception");
  }
}

Deadline deadline_of(int64_t timeout_ns) {
  if (timeout_ns < 0) return Deadline::never();
  return Deadline::after(std::chrono::nanoseconds(timeout_ns));
}

// A retention age in whole seconds, a u64 in C: beyond INT64_MAX it is as
// long as the clock's range allows (longer than any record's age).
std::chrono::seconds age_of(uint64_t age_s) { return std::chrono::seconds(int64_t(std::min<uint64_t>(age_s, INT64_MAX))); }

lt_owner to_c(const Owner& o) { return lt_owner{o.pid, o.tid, o.start_time}; }
lt_counters to_c(const LockCounters& c) {
  return lt_counters{c.exclusive_acquisitions, c.shared_acquisitions, c.contended,  c.timeouts,
                     c.abandoned,              c.wait_total_ns,       c.wait_max_ns};
}

// lt_acquire_interruptible's stop(arg) as a WaitInterrupt.
class CallbackInterrupt final : public WaitInterrupt {
 public:
  CallbackInterrupt(int (*stop)(void*), void* arg) : stop_(stop), arg_(arg) {}
  bool requested() override { return stop_(arg_) != 0; }

 private:
  int (*stop_)(void*);
  void* arg_;
};

// reqs[0..n) as the C++ API's requests; false (and *error, the code, set) on a NULL lock.
bool to_requests(const char* call, const lt_request* reqs, size_t n, std::vector<LockRequest>* out, int* error) {
  for (size_t i = 0; i < n; ++i) {
    if (reqs[i].lock == nullptr) {
      const std::string message = std::string(call) + ": the lock of request " + std::to_string(i) + " is NULL";
      *error = fail(Code::invalid_argument, message.c_str());
      return false;
    }
    out->push_back(LockRequest{&reqs[i].lock->lock, reqs[i].shared ? Mode::shared : Mode::exclusive});
  }
  return true;
}

}  // namespace

extern "C" {

const char* lt_code_name(int code) {
  if (code < int(Code::ok) || code > int(Code::interrupted)) return "unknown";
  return code_name(Code(code));
}

const char* lt_event_kind_name(int kind) {
  if (kind < int(EventKind::created) || kind > int(EventKind::downgraded)) return "unknown";
  return event_kind_name(EventKind(kind));
}

const char* lt_last_error(void) { return last_error.c_str(); }

const char* lt_version(void) { return LOCKTABLE_VERSION; }

lt_options* lt_options_create(void) {
  try {
    return new lt_options{};
  } catch (...) {
    return nullptr;
  }
}
void lt_options_destroy(lt_options* o) { delete o; }
void lt_options_set_create_if_missing(lt_options* o, int v) { o->options.create_if_missing = v != 0; }
void lt_options_set_allow_network_fs(lt_options* o, int v) { o->options.allow_network_fs = v != 0; }
void lt_options_set_lmdb_map_size(lt_options* o, size_t v) { o->options.lmdb_map_size = v; }
void lt_options_set_drain_interval_ms(lt_options* o, int64_t ms) {
  o->options.drain_interval = std::chrono::milliseconds(ms < 0 ? 0 : ms);
}
void lt_options_set_deadlock_timeout_ms(lt_options* o, int64_t ms) {
  o->options.deadlock_timeout = std::chrono::milliseconds(ms < 0 ? 0 : ms);
}
void lt_options_set_initial_slots(lt_options* o, uint32_t v) { o->options.initial_slots = v; }
void lt_options_set_max_slots(lt_options* o, uint64_t v) { o->options.max_slots = v; }
void lt_options_set_ring_entries(lt_options* o, uint32_t v) { o->options.ring_entries = v; }
// An unknown level is kept as given: Table::open refuses it with invalid_argument.
void lt_options_set_history(lt_options* o, int level) { o->options.history = HistoryLevel(level); }
void lt_options_set_retention(lt_options* o, uint64_t count, uint64_t age_s) {
  o->options.retention_count = count;
  o->options.retention_age = age_of(age_s);
}

int lt_table_open(const char* location, lt_table** table) { return lt_table_open_with(location, nullptr, table); }

int lt_table_open_with(const char* location, const lt_options* options, lt_table** table) {
  if (table == nullptr) return fail(Code::invalid_argument, "lt_table_open: table is NULL");
  *table = nullptr;
  if (location == nullptr) return fail(Code::invalid_argument, "lt_table_open: location is NULL");
  return guarded([&]() -> int {
    auto t = std::make_unique<lt_table>();
    Status s = Table::open(location, options != nullptr ? options->options : Options{}, &t->table);
    if (!s.ok()) return report(s);
    *table = t.release();
    return LT_OK;
  });
}

void lt_table_close(lt_table* table) {
  try {
    delete table;
  } catch (...) {
  }
}

const char* lt_table_location(const lt_table* table) { return table == nullptr ? "" : table->table->dir().c_str(); }

int lt_lookup(lt_table* table, const char* name, lt_lock** lock) {
  if (name == nullptr) return fail(Code::invalid_argument, "lt_lookup: name is NULL");
  return lt_lookup_n(table, name, std::char_traits<char>::length(name), 1, lock);
}

int lt_lookup_n(lt_table* table, const char* name, size_t len, int create, lt_lock** lock) {
  if (lock == nullptr) return fail(Code::invalid_argument, "lt_lookup: lock is NULL");
  *lock = nullptr;
  if (table == nullptr || name == nullptr) return fail(Code::invalid_argument, "lt_lookup: table or name is NULL");
  return guarded([&]() -> int {
    auto l = std::make_unique<lt_lock>();
    Status s = table->table->lookup(std::string_view(name, len), &l->lock,
                                    create ? Lookup::create_if_missing : Lookup::existing);
    if (!s.ok()) return report(s);
    *lock = l.release();
    return LT_OK;
  });
}

int lt_remove(lt_table* table, const char* name) {
  if (table == nullptr || name == nullptr) return fail(Code::invalid_argument, "lt_remove: table or name is NULL");
  return guarded([&]() -> int { return report(table->table->remove(name)); });
}

void lt_lock_free(lt_lock* lock) {
  try {
    delete lock;
  } catch (...) {
  }
}

const char* lt_lock_name(const lt_lock* lock) { return lock == nullptr ? "" : lock->lock.name().c_str(); }

int lt_acquire(lt_lock* lock, int shared, int64_t timeout_ns) { return lt_acquire_info(lock, shared, timeout_ns, nullptr); }

int lt_acquire_info(lt_lock* lock, int shared, int64_t timeout_ns, lt_acquired* info) {
  return lt_acquire_interruptible(lock, shared, timeout_ns, nullptr, nullptr, info);
}

int lt_acquire_interruptible(lt_lock* lock, int shared, int64_t timeout_ns, int (*stop)(void* arg), void* arg,
                             lt_acquired* info) {
  if (lock == nullptr) return fail(Code::invalid_argument, "lt_acquire: lock is NULL");
  return guarded([&]() -> int {
    CallbackInterrupt interrupt{stop, arg};
    const Deadline deadline = deadline_of(timeout_ns);
    AcquireResult r = lock->lock.acquire(shared ? Mode::shared : Mode::exclusive,
                                         stop != nullptr ? deadline.interruptible_by(&interrupt) : deadline);
    if (r.held() && info != nullptr) *info = lt_acquired{r.token, to_c(r.dead_owner)};
    return report(r.status);
  });
}

int lt_acquire_all(lt_table* table, lt_request* reqs, size_t n, int64_t timeout_ns) {
  if (table == nullptr || (reqs == nullptr && n != 0)) {
    return fail(Code::invalid_argument, "lt_acquire_all: table or requests is NULL");
  }
  return guarded([&]() -> int {
    std::vector<LockRequest> requests;
    if (int error = 0; !to_requests("lt_acquire_all", reqs, n, &requests, &error)) return error;
    AcquireAllResult r = table->table->acquire_all(requests, deadline_of(timeout_ns));
    if (r.held()) {
      for (size_t i = 0; i < n; ++i) {
        reqs[i].token = r.tokens[i];
        reqs[i].abandoned = 0;
        reqs[i].dead_owner = lt_owner{0, 0, 0};
      }
      for (size_t k = 0; k < r.abandoned.size(); ++k) {
        reqs[r.abandoned[k]].abandoned = 1;
        reqs[r.abandoned[k]].dead_owner = to_c(r.dead_owners[k]);
      }
    }
    return report(r.status);
  });
}

int lt_release_all(lt_table* table, const lt_request* reqs, size_t n) {
  if (table == nullptr || (reqs == nullptr && n != 0)) {
    return fail(Code::invalid_argument, "lt_release_all: table or requests is NULL");
  }
  return guarded([&]() -> int {
    std::vector<LockRequest> requests;
    if (int error = 0; !to_requests("lt_release_all", reqs, n, &requests, &error)) return error;
    return report(table->table->release_all(requests));
  });
}

int lt_release(lt_lock* lock, int shared) {
  if (lock == nullptr) return fail(Code::invalid_argument, "lt_release: lock is NULL");
  return guarded([&]() -> int { return report(lock->lock.release(shared ? Mode::shared : Mode::exclusive)); });
}

int lt_mark_consistent(lt_lock* lock) {
  if (lock == nullptr) return fail(Code::invalid_argument, "lt_mark_consistent: lock is NULL");
  return guarded([&]() -> int { return report(lock->lock.mark_consistent()); });
}

int lt_abandoned(const lt_lock* lock) { return lock != nullptr && lock->lock.abandoned() ? 1 : 0; }

uint64_t lt_token(const lt_lock* lock) { return lock == nullptr ? 0 : lock->lock.token(); }

int lt_downgrade(lt_lock* lock) {
  if (lock == nullptr) return fail(Code::invalid_argument, "lt_downgrade: lock is NULL");
  return guarded([&]() -> int { return report(lock->lock.downgrade()); });
}

namespace {

int list_scope(lt_table* table, lt_lock_visitor visit, void* context, ListScope scope, std::string_view prefix = {}) {
  if (table == nullptr || visit == nullptr) return fail(Code::invalid_argument, "lt_list: table or visit is NULL");
  return guarded([&]() -> int {
    std::vector<lt_holder> holders;
    std::vector<lt_waiter> waiting;
    bool stopped = false;
    Status s = table->table->list([&](const LockInfo& l) {
      holders.clear();
      for (const HolderInfo& h : l.holders) {
        holders.push_back(lt_holder{to_c(h.owner), h.comm.c_str(), h.alive ? 1 : 0,
                                    h.held_for_ms ? int64_t(*h.held_for_ms) : -1, h.token});
      }
      waiting.clear();
      for (const WaiterInfo& w : l.waiting) {
        waiting.push_back(lt_waiter{to_c(w.owner), w.comm.c_str(), int(w.mode), w.waiting_ms});
      }
      lt_lock_info info{l.name.data(),   l.name.size(), l.slot,           int(l.state), int(l.mode), holders.data(),
                        holders.size(),  l.waiters,     l.abandoned ? 1 : 0, to_c(l.counters), waiting.data(),
                        waiting.size()};
      if (visit(context, &info) != 0) {
        stopped = true;
        return Status(Code::busy, "stopped by the visitor");
      }
      return Status::OK();
    }, scope, prefix);
    return stopped ? LT_OK : report(s);
  });
}

}  // namespace

int lt_list(lt_table* table, lt_lock_visitor visit, void* context) {
  return list_scope(table, visit, context, ListScope::all);
}

int lt_list_busy(lt_table* table, lt_lock_visitor visit, void* context) {
  return list_scope(table, visit, context, ListScope::busy);
}

int lt_list_prefix(lt_table* table, const char* prefix, size_t len, int busy, lt_lock_visitor visit, void* context) {
  if (prefix == nullptr && len != 0) return fail(Code::invalid_argument, "lt_list_prefix: prefix is NULL");
  return list_scope(table, visit, context, busy ? ListScope::busy : ListScope::all,
                    prefix == nullptr ? std::string_view() : std::string_view(prefix, len));
}

int lt_stats_get(lt_table* table, lt_stats* out) {
  if (table == nullptr || out == nullptr) return fail(Code::invalid_argument, "lt_stats_get: table or stats is NULL");
  return guarded([&]() -> int {
    TableStats st;
    if (Status s = table->table->stats(&st); !s.ok()) return report(s);
    *out = lt_stats{st.format_version,    st.slot_capacity,        st.max_slots,       st.slots_used,
                    st.reader_capacity,   st.readers_used,         st.extents,         st.table_file_bytes,
                    st.lmdb_file_bytes,   st.reset_count,          int(st.history_level), st.ring_entries,
                    st.ring_segments,     st.ring_segments_in_use, st.ring_appended,   st.ring_accounted,
                    st.history_records,   st.history_lost,         st.retention_count, st.retention_age_s,
                    {},                   {},                      st.time_resolution_ns, to_c(st.counters)};
    std::snprintf(out->backend, sizeof out->backend, "%s", st.backend.c_str());
    std::snprintf(out->boot_id, sizeof out->boot_id, "%s", st.boot_id.c_str());
    return LT_OK;
  });
}

int lt_history(lt_table* table, const lt_history_query* query, lt_event_visitor visit, void* context) {
  if (table == nullptr || visit == nullptr) return fail(Code::invalid_argument, "lt_history: table or visit is NULL");
  return guarded([&]() -> int {
    HistoryQuery q;
    if (query != nullptr) {
      if (query->name != nullptr) q.name = query->name;
      if (query->kind != 0) {
        if (query->kind < int(EventKind::created) || query->kind > int(EventKind::downgraded)) {
          return fail(Code::invalid_argument, "lt_history: unknown event kind");
        }
        q.kind = EventKind(query->kind);
      }
      if (query->pid != 0) q.pid = query->pid;
      q.since_ns = query->since_ns;
      if (query->until_ns != 0) q.until_ns = query->until_ns;
      q.after_seq = query->after_seq;
      q.limit = query->limit;
      q.newest_first = query->newest_first != 0;
    }
    std::vector<Event> events;
    if (Status s = table->table->history(q, &events); !s.ok()) return report(s);
    for (const Event& e : events) {
      lt_event c{e.seq,        e.time_ns,       int(e.kind), int(e.mode), e.abandoned ? 1 : 0, e.pid,
                 e.tid,        e.comm.c_str(),  e.name.data(), e.name.size(), e.slot,          e.wait_ns,
                 e.hold_ns,    to_c(e.dead_owner), e.count, e.token};
      if (visit(context, &c) != 0) break;
    }
    return LT_OK;
  });
}

int lt_drain_history(lt_table* table, uint64_t* drained) {
  if (table == nullptr) return fail(Code::invalid_argument, "lt_drain_history: table is NULL");
  return guarded([&]() -> int { return report(table->table->drain_history(drained)); });
}

int lt_set_history_level(lt_table* table, int level) {
  if (table == nullptr) return fail(Code::invalid_argument, "lt_set_history_level: table is NULL");
  if (level < LT_HISTORY_OFF || level > LT_HISTORY_PERSISTED) {
    return fail(Code::invalid_argument, "lt_set_history_level: level must be 0 (off), 1 (ring) or 2 (persisted)");
  }
  return guarded([&]() -> int { return report(table->table->set_history_level(HistoryLevel(level))); });
}

int lt_set_retention(lt_table* table, uint64_t count, uint64_t age_s) {
  if (table == nullptr) return fail(Code::invalid_argument, "lt_set_retention: table is NULL");
  return guarded([&]() -> int { return report(table->table->set_retention(count, age_of(age_s))); });
}

int lt_recover(lt_table* table, int dry_run, lt_recovery_visitor visit, void* context) {
  if (table == nullptr) return fail(Code::invalid_argument, "lt_recover: table is NULL");
  return guarded([&]() -> int {
    std::vector<Recovery> actions;
    if (Status s = table->table->recover(dry_run != 0, &actions); !s.ok()) return report(s);
    for (const Recovery& a : actions) {
      lt_recovery r{a.name.c_str(), a.slot, int(a.mode), to_c(a.dead_owner), a.action.c_str()};
      if (visit != nullptr && visit(context, &r) != 0) break;
    }
    return LT_OK;
  });
}

int lt_check(lt_table* table, lt_problem_visitor visit, void* context, size_t* problems) {
  if (table == nullptr) return fail(Code::invalid_argument, "lt_check: table is NULL");
  return guarded([&]() -> int {
    std::vector<std::string> found;
    if (Status s = table->table->check(&found); !s.ok()) return report(s);
    if (problems != nullptr) *problems = found.size();
    for (const std::string& p : found) {
      if (visit != nullptr && visit(context, p.c_str()) != 0) break;
    }
    return LT_OK;
  });
}

}  // extern "C"
