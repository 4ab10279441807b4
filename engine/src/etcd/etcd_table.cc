#include "etcd_table.h"

#include <unistd.h>

#include <algorithm>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "clock.h"
#include "etcd_requests.h"
#include "locktable/names.h"
#include "proc_thread.h"

namespace locktable::detail {

using namespace etcd;

Status open_etcd_table(const std::string& location, const Options& options, std::shared_ptr<Backend>* out) {
  EtcdLocation where;
  if (Status s = parse_etcd_location(location, &where); !s.ok()) return s;
  std::shared_ptr<EtcdTable> t(new EtcdTable());
  t->location_ = location;
  if (Status s = t->open(where, options); !s.ok()) return s;
  *out = std::move(t);
  return Status::OK();
}

EtcdTable::EtcdTable() : Backend(BackendKind::other) {}

EtcdTable::~EtcdTable() {
  {
    std::lock_guard<std::mutex> guard(lease_mu_);
    stopping_ = true;
  }
  lease_cv_.notify_all();
  if (keeper_.joinable()) keeper_.join();
  if (::getpid() == open_pid_ && lease_.load() != 0) {
    json out;
    (void)client_->call("lease/revoke", json{{"ID", std::to_string(lease_.load())}}, &out, std::chrono::seconds(2));
  }
}

Status EtcdTable::open(const EtcdLocation& where, const Options& options) {
  if (options.deadlock_timeout.count() < 0) {
    return Status(Code::invalid_argument, fmt::format("{}: negative deadlock_timeout", location_));
  }
  deadlock_timeout_ = options.deadlock_timeout;
  prefix_ = where.prefix;
  ttl_ = where.ttl;
  open_pid_ = ::getpid();
  writer_nonce_ = (uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) host_ = host;
  client_ = std::make_unique<EtcdClient>(location_, where, std::chrono::milliseconds(1000));
  if (Status s = client_->check_files(); !s.ok()) return s;

  // The table marker: there, create it, or refuse a prefix that holds something else.
  json out;
  if (Status s = client_->call("kv/range", range_op(meta("table"))["request_range"], &out); !s.ok()) return s;
  std::vector<Kv> marker = kvs_of(out);
  if (marker.empty()) {
    const Status foreign(Code::corrupt, fmt::format("{}: the prefix '{}/' holds keys that are not a locktable table "
                                                    "(create a table on an empty prefix)",
                                                    location_, prefix_));
    if (!options.create_if_missing) {
      json count{{"key", base64_encode(prefix_ + "/")}, {"range_end", base64_encode(prefix_end(prefix_ + "/"))},
                 {"count_only", true}};
      if (Status s = client_->call("kv/range", count, &out); !s.ok()) return s;
      if (json_int(out, "count") > 0) return foreign;
      return Status(Code::not_found, fmt::format("{}: no table", location_));
    }
    // Created only on an empty prefix and outside every other table, in one
    // transaction: another process opening the same new table at the same
    // moment creates it or finds it. A table at a/b inside the table at a
    // would put its keys in the queue of a's lock b, which would then wait
    // for ever (the table at a, created after, is refused as not empty).
    const json settings{{"format", kFormat},
                        {"history", int(options.history)},
                        {"retention_count", options.retention_count},
                        {"retention_age_s", uint64_t(options.retention_age.count())},
                        {"created_ns", realtime_ns()}};
    json compares = json::array({create_is(prefix_ + "/", "EQUAL", 0, true)});
    json on_failure = json::array({range_op(meta("table"))});
    std::vector<std::string> ancestors;
    for (size_t slash = prefix_.find('/'); slash != std::string::npos; slash = prefix_.find('/', slash + 1)) {
      if (slash == 0) continue;
      ancestors.push_back(prefix_.substr(0, slash));
      compares.push_back(create_is(ancestors.back() + "/.locktable/table", "EQUAL", 0));
      on_failure.push_back(range_op(ancestors.back() + "/.locktable/table"));
    }
    if (Status s = txn(compares, json::array({put_op(meta("table"), settings), range_op(meta("table"))}), on_failure,
                       &out);
        !s.ok()) {
      return s;
    }
    const bool created = out.value("succeeded", false);
    marker = kvs_of(response(out, created ? 1 : 0, "response_range"));
    for (size_t i = 0; !created && marker.empty() && i < ancestors.size(); ++i) {
      if (!kvs_of(response(out, i + 1, "response_range")).empty()) {
        const std::string_view inner = std::string_view(prefix_).substr(ancestors[i].size() + 1);
        return Status(Code::invalid_argument,
                      fmt::format("{}: the prefix '{}' lies inside the table at '{}' (its lock '{}' would wait "
                                  "for ever behind this table's keys): choose a prefix outside it",
                                  location_, prefix_, ancestors[i], inner.substr(0, inner.find('/'))));
      }
    }
    if (marker.empty()) return foreign;
  }
  if (marker.empty() || !marker[0].value.is_object() || marker[0].value.value("format", 0) != kFormat) {
    return Status(marker.empty() || !marker[0].value.is_object() ? Code::corrupt : Code::version_mismatch,
                  fmt::format("{}: {} is not a locktable table marker of format {}", location_, meta("table"),
                              kFormat));
  }
  history_level_ = HistoryLevel(std::clamp(marker[0].value.value("history", 2), 0, 2));
  retention_count_ = marker[0].value.value("retention_count", uint64_t{1'000'000});
  retention_age_s_ = marker[0].value.value("retention_age_s", uint64_t{0});
  // etcd grants no lease while its space quota is used up; the table opens
  // for reading (ls, stat, history, check) all the same, and a lease is asked
  // for again by the lease thread and by the first acquire.
  if (Status s = replace_lease(0); !s.ok() && s.code() != Code::capacity) return s;
  keeper_ = std::thread([this] { keep_alive(); });
  return Status::OK();
}

Status EtcdTable::replace_lease(int64_t old) {
  if (lease_.load() != old) return Status::OK();  // another thread replaced it first
  const uint64_t asked = monotonic_ns();
  json out;
  if (Status s = client_->call("lease/grant", json{{"TTL", std::to_string(ttl_.count())}}, &out); !s.ok()) return s;
  const int64_t id = json_int(out, "ID");
  if (id == 0) return Status(Code::io_error, fmt::format("{}: etcd granted no lease ({})", location_, out.dump()));
  if (int64_t expected = old; !lease_.compare_exchange_strong(expected, id)) {
    // Another thread's grant landed first: this one is not needed.
    (void)client_->call("lease/revoke", json{{"ID", std::to_string(id)}}, &out, std::chrono::seconds(2));
    return Status::OK();
  }
  lease_until_ns_.store(asked + uint64_t(std::max<int64_t>(json_int(out, "TTL"), 0)) * 1'000'000'000);
  return Status::OK();
}

bool EtcdTable::renew(int64_t lease) {
  const uint64_t asked = monotonic_ns();
  json out;
  if (!client_->call("lease/keepalive", json{{"ID", std::to_string(lease)}}, &out,
                     std::chrono::milliseconds(ttl_) / 3)
           .ok()) {
    return false;
  }
  const json& result = out.contains("result") ? out["result"] : out;
  const int64_t ttl = json_int(result, "TTL");
  if (ttl <= 0) {
    (void)replace_lease(lease);  // etcd no longer has it: its holds are lost
  } else if (lease_.load() == lease) {
    lease_until_ns_.store(asked + uint64_t(ttl) * 1'000'000'000);
  }
  return true;
}

// Renews the lease every third of its TTL. A lease found expired (the
// process was stopped, or etcd unreachable, past the TTL) is replaced: the
// holds under the old one are lost, and their releases say so.
void EtcdTable::keep_alive() {
  // In milliseconds: a third of a TTL of 1 or 2 s is not 0 s.
  const auto every = std::chrono::milliseconds(ttl_) / 3;
  std::unique_lock<std::mutex> guard(lease_mu_);
  while (!lease_cv_.wait_for(guard, every, [this] { return stopping_; })) {
    guard.unlock();
    const int64_t lease = lease_.load();
    if (lease == 0) {
      (void)replace_lease(0);  // none granted yet (etcd was out of space)
    } else if (renew(lease)) {
      delete_orphans();
    }
    guard.lock();
  }
}

void EtcdTable::withdraw(const std::string& key) {
  json out;
  if (txn(json::array(), json::array({delete_op(key)}), json::array(), &out).ok()) return;
  std::lock_guard<std::mutex> guard(lease_mu_);
  orphans_.push_back(key);
}

void EtcdTable::delete_orphans() {
  std::vector<std::string> keys;
  {
    std::lock_guard<std::mutex> guard(lease_mu_);
    keys.swap(orphans_);
  }
  for (const std::string& key : keys) withdraw(key);
}

Status EtcdTable::check_process() const {
  return ::getpid() == open_pid_ ? Status::OK() : used_after_fork(location_, open_pid_);
}

std::string EtcdTable::queue_key(const NameState& l, int64_t lease, uint32_t tid, Mode mode) const {
  return fmt::format("{}{:x}_{}{}", queue_prefix(l), uint64_t(lease), tid, mode == Mode::shared ? "_r" : "");
}

std::string EtcdTable::reader_key(const NameState& l, const std::string& queue) const {
  return readers_prefix(l) + queue.substr(queue_prefix(l).size());
}

Status EtcdTable::txn(const json& compare, const json& success, const json& failure, json* out) {
  return client_->call("kv/txn", json{{"compare", compare}, {"success", success}, {"failure", failure}}, out);
}

json EtcdTable::owner_value() const {
  const ThreadIdentity& me = calling_thread();
  return json{{"pid", me.pid}, {"tid", me.tid}, {"start", me.start}, {"host", host_}, {"comm", me.comm}};
}

json EtcdTable::event_put(EventKind kind, Mode mode, const std::string& name, const json& extra) {
  json e = owner_value();
  e["kind"] = int(kind);
  e["mode"] = int(mode);
  e.update(name_fields(name));
  e["time_ns"] = realtime_ns();
  e.update(extra);
  const int64_t lease = lease_.load();
  return put_op(meta(fmt::format("history/{:016x}_{:x}", uint64_t(lease != 0 ? lease : writer_nonce_),
                                 event_counter_.fetch_add(1))),
                e);
}

json EtcdTable::dead_value(const Hold& hold) {
  return json{{"pid", hold.dead.pid}, {"tid", hold.dead.tid}, {"start", hold.dead.start_time}, {"host", hold.dead_host}};
}

json EtcdTable::marker_after(const Hold& hold) {
  json marker = free_marker();
  if (hold.abandoned) {
    marker["abandoned"] = true;
    marker["dead"] = dead_value(hold);
  }
  return marker;
}

EtcdTable::Hold* EtcdTable::find_hold(const NameState* l) {
  auto it = holds_.find({current_tid(), l});
  return it == holds_.end() ? nullptr : &it->second;
}

bool EtcdTable::still_held(const Hold* hold) const {
  return hold != nullptr && hold->lease == lease_.load() && monotonic_ns() < lease_until_ns_.load();
}

// ---------------------------------------------------------------------------
// Names.
// ---------------------------------------------------------------------------
Status EtcdTable::lookup(const std::shared_ptr<Backend>& self, std::string_view name, Lookup mode, Lock* out) {
  if (Status s = check_process(); !s.ok()) return s;
  if (Status s = validate_name(name); !s.ok()) return s;
  const std::string segment = encode_name_segment(name);
  const std::string key = meta("names/" + segment);
  json out_json;
  int64_t incarnation = 0;
  if (mode == Lookup::existing) {
    if (Status s = client_->call("kv/range", range_op(key)["request_range"], &out_json); !s.ok()) return s;
    std::vector<Kv> kv = kvs_of(out_json);
    if (kv.empty()) return Status(Code::not_found, fmt::format("{}: no lock named {}", location_, quote_name(name)));
    incarnation = kv[0].create;
  } else {
    // A new name's holder marker says free, so that its first acquire can take the uncontended path.
    json ops = json::array({put_op(key, json{{"created_ns", realtime_ns()}}), put_op(holder_key_of(segment), free_marker())});
    if (history_on()) ops.push_back(event_put(EventKind::created, Mode::exclusive, std::string(name), json::object()));
    if (Status s = txn(json::array({create_is(key, "EQUAL", 0)}), ops, json::array({range_op(key)}), &out_json);
        !s.ok()) {
      return s;
    }
    if (out_json.value("succeeded", false)) {
      incarnation = json_int(out_json["header"], "revision");
    } else {
      std::vector<Kv> kv = kvs_of(response(out_json, 0, "response_range"));
      if (kv.empty()) return Status(Code::io_error, fmt::format("{}: name {} vanished", location_, quote_name(name)));
      incarnation = kv[0].create;
    }
  }
  NameState* state;
  {
    std::lock_guard<std::mutex> guard(mu_);
    auto& slot = states_[{std::string(name), incarnation}];
    if (!slot) slot.reset(new NameState{std::string(name), segment, incarnation});
    state = slot.get();
  }
  LockAccess::fill(out, {self, state, nullptr, 0, uint32_t(incarnation), std::string(name)});
  return Status::OK();
}

Status EtcdTable::lookup_many(const std::shared_ptr<Backend>& self, const std::vector<std::string>& names,
                              Lookup mode, std::vector<Lock>* out) {
  out->assign(names.size(), Lock());
  for (size_t i = 0; i < names.size(); ++i) {
    if (Status s = lookup(self, names[i], mode, &(*out)[i]); !s.ok()) return s;
  }
  return Status::OK();
}

Status EtcdTable::remove(std::string_view name) {
  if (Status s = check_process(); !s.ok()) return s;
  if (Status s = validate_name(name); !s.ok()) return s;
  NameState l{std::string(name), encode_name_segment(name), 0};
  const std::string key = meta("names/" + l.segment);
  json ops = json::array({delete_op(key), delete_op(holder_key(l)), delete_op(readers_prefix(l), true)});
  if (history_on()) ops.push_back(event_put(EventKind::removed, Mode::exclusive, l.name, json::object()));
  json out;
  if (Status s = txn(json::array({create_is(key, "GREATER", 0), create_is(queue_prefix(l), "EQUAL", 0, true)}), ops,
                     json::array({range_op(key)}), &out);
      !s.ok()) {
    return s;
  }
  if (out.value("succeeded", false)) return Status::OK();
  if (kvs_of(response(out, 0, "response_range")).empty()) {
    return Status(Code::not_found, fmt::format("{}: no lock named {}", location_, quote_name(name)));
  }
  return Status(Code::busy, fmt::format("{}: lock {} is held or waited for", location_, quote_name(name)));
}

// ---------------------------------------------------------------------------
// Locks.
// ---------------------------------------------------------------------------
AcquireResult EtcdTable::acquire(Lock& lock, Mode mode, const Deadline& deadline) {
  if (Status s = check_process(); !s.ok()) return AcquireResult{s, {}};
  auto* l = static_cast<NameState*>(LockAccess::state(lock));
  {
    std::lock_guard<std::mutex> guard(mu_);
    if (find_hold(l) != nullptr) {
      return AcquireResult{Status(Code::already_held, fmt::format("lock {}: already held by this thread",
                                                                  quote_name(l->name))),
                           {}};
    }
  }
  if (lease_.load() == 0) {
    if (Status s = replace_lease(0); !s.ok()) return AcquireResult{s, {}};
  } else if (const int64_t lease = lease_.load(); monotonic_ns() >= lease_until_ns_.load()) {
    (void)renew(lease);  // unrenewed for a TTL (etcd out of reach, or this process stopped): ask before holding
  }
  Hold hold;
  hold.mode = mode;
  AcquireResult r = acquire_slow(*l, mode, deadline, &hold);
  if (r.held()) {
    std::lock_guard<std::mutex> guard(mu_);
    holds_[{current_tid(), l}] = hold;
  }
  return r;
}

AcquireResult EtcdTable::acquire_slow(NameState& l, Mode mode, const Deadline& deadline, Hold* hold) {
  const std::string name_key = meta("names/" + l.segment);
  const int64_t lease = lease_.load();
  hold->key = queue_key(l, lease, current_tid(), mode);
  hold->lease = lease;
  const uint64_t started = monotonic_ns();
  auto stale = [&] {
    return AcquireResult{Status(Code::stale_handle, fmt::format("lock {}: removed (or re-created) since this handle "
                                                                "was made; look it up again",
                                                                quote_name(l.name))),
                         {}};
  };
  auto lost = [&](const char* when) {
    return AcquireResult{Status(Code::lock_lost, fmt::format("lock {}: this process's etcd lease ran out {} (more "
                                                             "than {} s without renewal)",
                                                             quote_name(l.name), when, ttl_.count())),
                         {}};
  };
  const json owner = owner_value();
  json out;
  // Uncontended: one transaction queues, takes ownership and records the
  // event, if the queue is empty and the predecessors left nothing to settle
  // (the holder marker says free and consistent; for a writer, no reader's
  // marker is left). Those are compares, not reads: a compare costs etcd
  // less than a read whose answer travels back. Anything else goes the
  // contended way, whose ownership transaction reads them.
  {
    Ownership o = ownership_ops(l, *hold, owner, 0, /*read_predecessors=*/false);
    json ops = json::array({put_op(hold->key, owner, lease)});
    for (json& op : o.ops) ops.push_back(std::move(op));
    json compare = json::array({create_is(name_key, "EQUAL", l.incarnation), create_is(queue_prefix(l), "EQUAL", 0, true),
                                value_is(holder_key(l), free_marker())});
    if (mode == Mode::exclusive) compare.push_back(create_is(readers_prefix(l), "EQUAL", 0, true));
    Status s = txn(compare, ops, json::array({range_op(name_key)}), &out);
    if (!s.ok()) {
      withdraw(hold->key);  // an answer lost on the way may have queued it
      return AcquireResult{s, {}};
    }
    if (out.value("succeeded", false)) {
      // The queue was empty, so the key is new: its create revision is the transaction's.
      hold->revision = json_int(out["header"], "revision");
      return acquired(l, *hold);
    }
    std::vector<Kv> name = kvs_of(response(out, 0, "response_range"));
    if (name.empty() || name[0].create != l.incarnation) return stale();
  }
  // Contended: queue up, wait until nothing ahead blocks this thread. The key
  // may exist already (a transaction whose answer was lost, retried): its
  // place in the queue is its create revision, read back, not this put's.
  Status s = txn(json::array({create_is(name_key, "EQUAL", l.incarnation)}),
                 json::array({put_op(hold->key, owner, lease), range_op(hold->key), range_op(queue_prefix(l), true, true)}),
                 json::array(), &out);
  if (!s.ok()) {
    withdraw(hold->key);
    return AcquireResult{s, {}};
  }
  if (!out.value("succeeded", false)) return stale();
  {
    std::vector<Kv> mine = kvs_of(response(out, 1, "response_range"));
    hold->revision = mine.empty() ? json_int(out["header"], "revision") : mine[0].create;
  }
  json queue = response(out, 2, "response_range");
  int64_t poll_ms = 1;
  uint64_t failing_since = 0;  // monotonic ns of the first failed poll in a row
  DeadlockWatch watch;
  uint64_t next_deadlock_look = started + uint64_t(std::chrono::nanoseconds(deadlock_timeout_).count());
  uint64_t look_every_ns = 100'000'000;
  for (;;) {
    bool mine = false, blocked = false;
    for (const Kv& kv : kvs_of(queue)) {
      if (kv.key == hold->key) mine = true;
      else if (kv.create < hold->revision && (mode == Mode::exclusive || !is_reader_entry(kv))) blocked = true;
    }
    if (!mine) return lost("while it waited");
    if (!blocked) break;
    const auto now = Deadline::clock::now();
    // Asked once a round (rounds are 1 ms apart at least); a wait given up
    // early is recorded as a timeout.
    const bool interrupted = !deadline.is_now() && deadline.interrupt() != nullptr && deadline.interrupt()->requested();
    if (interrupted || deadline.is_now() || (!deadline.is_never() && now >= deadline.when())) {
      json ops = json::array({delete_op(hold->key)});
      if (history_on()) ops.push_back(event_put(EventKind::timeout, mode, l.name, json{{"wait_ns", monotonic_ns() - started}}));
      if (!txn(json::array(), ops, json::array(), &out).ok()) withdraw(hold->key);
      return AcquireResult{interrupted ? Status(Code::interrupted, fmt::format("lock {}: wait interrupted", quote_name(l.name)))
                                       : Status(Code::timed_out, fmt::format("lock {}: timed out", quote_name(l.name))),
                           {}};
    }
    if (deadlock_timeout_.count() > 0 && monotonic_ns() >= next_deadlock_look) {
      // Then every 100 ms, backing off to every second (each look reads every queue).
      next_deadlock_look = monotonic_ns() + look_every_ns;
      look_every_ns = std::min<uint64_t>(look_every_ns * 2, 1'000'000'000);
      std::string message;
      if (deadlocked(hold->key, &watch, &message)) {
        json ops = json::array({delete_op(hold->key)});
        if (history_on()) {
          ops.push_back(event_put(EventKind::deadlock, mode, l.name, json{{"wait_ns", monotonic_ns() - started}}));
        }
        if (!txn(json::array(), ops, json::array(), &out).ok()) withdraw(hold->key);
        return AcquireResult{Status(Code::deadlock, message), {}};
      }
    }
    // WAITING. A few quick polls (1 to 16 ms: a short wait ends soonest so),
    // then a watch on the queue until a key leaves it (at most a second, and
    // not past the deadline or the next deadlock look), then a fresh read. A
    // watch that fails is a poll of 20 ms instead.
    auto nap = std::chrono::milliseconds(poll_ms);
    const bool watching = poll_ms >= 20;
    if (watching) {
      nap = std::chrono::milliseconds(1000);
      if (deadlock_timeout_.count() > 0) {
        const uint64_t t = monotonic_ns();
        nap = std::min(nap, std::chrono::milliseconds(next_deadlock_look > t ? (next_deadlock_look - t) / 1'000'000 + 1 : 1));
      }
    }
    if (!deadline.is_never()) {
      nap = std::min(nap, std::chrono::duration_cast<std::chrono::milliseconds>(deadline.when() - now) +
                              std::chrono::milliseconds(1));
    }
    if (deadline.interrupt() != nullptr) nap = std::min(nap, std::chrono::milliseconds(100));
    bool slept = false;
    if (watching) {
      const json& header = queue.contains("header") ? queue["header"] : json::object();
      bool deleted = false;
      slept = client_->watch_for_delete(base64_encode(queue_prefix(l)), base64_encode(prefix_end(queue_prefix(l))),
                                        json_int(header, "revision"), nap, &deleted)
                  .ok();
    }
    if (!slept) std::this_thread::sleep_for(watching ? std::min(nap, std::chrono::milliseconds(20)) : nap);
    poll_ms = std::min<int64_t>(poll_ms * 2, 20);
    json range = range_op(queue_prefix(l), true, true)["request_range"];
    range["max_create_revision"] = std::to_string(hold->revision);
    // A cluster in trouble (an election, a member going away) is waited
    // out for as long as the lease would be: the old answer stands meanwhile.
    json fresh;
    if (s = client_->call("kv/range", range, &fresh); s.ok()) {
      queue = std::move(fresh);
      failing_since = 0;
    } else if (failing_since == 0) {
      failing_since = monotonic_ns();
    } else if (monotonic_ns() - failing_since > uint64_t(std::chrono::nanoseconds(ttl_).count())) {
      withdraw(hold->key);
      return AcquireResult{s, {}};
    }
  }
  Ownership o = ownership_ops(l, *hold, owner, monotonic_ns() - started, /*read_predecessors=*/true);
  s = txn(json::array({create_is(hold->key, "EQUAL", hold->revision)}), o.ops, json::array(), &out);
  if (!s.ok()) {
    withdraw(hold->key);
    return AcquireResult{s, {}};
  }
  if (!out.value("succeeded", false)) return lost("as it acquired");
  settle_ownership(l, hold, out, 0, o);
  return acquired(l, *hold);
}

AcquireResult EtcdTable::acquired(const NameState& l, Hold& hold) {
  hold.since_ns = realtime_ns();
  if (!hold.abandoned) return AcquireResult{Status::OK(), {}, uint64_t(hold.revision)};
  return AcquireResult{Status(Code::abandoned, fmt::format("lock {}: previous holder (host {}, pid {}, tid {}) died "
                                                           "holding it (or lost its lease); repair, then "
                                                           "mark_consistent()",
                                                           quote_name(l.name), hold.dead_host.empty() ? "?" : hold.dead_host,
                                                           hold.dead.pid, hold.dead.tid)),
                       hold.dead, uint64_t(hold.revision)};
}

EtcdTable::Ownership EtcdTable::ownership_ops(const NameState& l, const Hold& hold, const json& owner,
                                              uint64_t waited_ns, bool read_predecessors) {
  Ownership o;
  o.ops = json::array();
  if (read_predecessors) o.ops = json::array({range_op(holder_key(l)), range_op(readers_prefix(l), true)});
  // The markers carry when the hold began, for `held for` in listings.
  json marker = owner;
  marker["since_ns"] = realtime_ns();
  if (hold.mode == Mode::exclusive) {
    marker["state"] = "held";
    o.ops.push_back(put_op(holder_key(l), marker));
  } else {
    o.ops.push_back(put_op(reader_key(l, hold.key), marker));
  }
  if (history_on()) {
    // The token is the queue key's create revision: the transaction's own
    // revision when it puts the key too, so the event's sequence number.
    json extra{{"wait_ns", waited_ns}, {"abandoned", false}};
    if (hold.revision != 0) extra["token"] = hold.revision;
    else extra["token_is_seq"] = true;
    o.event = event_put(EventKind::acquired, hold.mode, l.name, extra);
    o.ops.push_back(o.event);
  }
  return o;
}

// What the ownership transaction read (its responses from `first` on: the
// holder marker, the readers' markers): a predecessor that never released
// makes this hold abandoned. Rare, so the fix-ups are extra transactions.
//
// EXACTLY ONCE. Each takeover is recorded (a `recovered` event) by one
// holder: the one that finds the dead writer's `held` marker or a dead
// reader's marker. An exclusive owner is alone (its ownership transaction
// overwrote the marker); readers that take over together race to change the
// marker, and only the one whose change lands records the takeover. Holders
// after it, while the lock is not marked consistent, are told abandoned too
// but record nothing new.
void EtcdTable::settle_ownership(const NameState& l, Hold* hold, const json& out, size_t first, const Ownership& o) {
  std::vector<Kv> marker = kvs_of(response(out, first, "response_range"));
  json before = marker.empty() ? json(nullptr) : marker[0].value;
  // This thread's own record: an earlier attempt of this acquire whose answer was lost.
  if (before.is_object() && before.value("pid", 0u) == uint32_t(::getpid()) && before.value("tid", 0u) == current_tid() &&
      before.value("state", "") == "held") {
    before = json(nullptr);
  }
  bool takeover = false;  // this hold is the one that found the dead (not one after it)
  if (before.is_object() && before.value("state", "") == "held") {
    hold->abandoned = true;  // its holder never released: its lease ran out
    takeover = true;
    hold->dead = owner_of(before);
    hold->dead_host = before.value("host", "");
  } else if (before.is_object() && before.value("abandoned", false)) {
    hold->abandoned = true;  // carried on: not marked consistent yet
    const json dead = before.value("dead", json::object());
    hold->dead = owner_of(dead);
    hold->dead_host = dead.is_object() ? dead.value("host", "") : "";
  }
  json fix = json::array();
  if (hold->mode == Mode::exclusive) {
    for (const Kv& r : kvs_of(response(out, first + 1, "response_range"))) {
      fix.push_back(delete_op(r.key));  // a reader that left its marker behind died
      if (!takeover) {
        hold->dead = owner_of(r.value);
        hold->dead_host = r.value.is_object() ? r.value.value("host", "") : "";
      }
      hold->abandoned = true;  // a reader that never left
      takeover = true;
    }
  }
  json ignored;
  if (!hold->abandoned) {
    if (!fix.empty()) (void)txn(json::array(), fix, json::array(), &ignored);
    return;
  }
  json compare = json::array();
  if (hold->mode == Mode::shared && takeover) {
    // A reader took over from a dead writer: later holders are told too.
    compare.push_back(modified_at(holder_key(l), marker[0].mod));
    fix.push_back(put_op(holder_key(l), json{{"state", "free"}, {"abandoned", true}, {"dead", before}}));
  }
  json relabel = json::array();
  if (!o.event.is_null()) {
    // The event said "not abandoned": the same key again (its sequence number stays).
    json event = o.event;
    std::string raw;
    (void)base64_decode(event["request_put"]["value"].get<std::string>(), &raw);
    json value = json::parse(raw, nullptr, false);
    if (value.is_object()) {
      value["abandoned"] = true;
      event["request_put"]["value"] = base64_encode(dump_value(value));
      relabel.push_back(event);
    }
  }
  for (const json& op : relabel) fix.push_back(op);
  if (takeover && history_on()) {
    fix.push_back(event_put(EventKind::recovered, hold->mode, l.name, json{{"dead", dead_value(*hold)}}));
  }
  // Failure: another reader's takeover landed first; this one is after it.
  if (!fix.empty()) (void)txn(compare, fix, relabel, &ignored);
}

Status EtcdTable::release(Lock& lock, Mode mode) {
  if (Status s = check_process(); !s.ok()) return s;
  auto* l = static_cast<NameState*>(LockAccess::state(lock));
  Hold hold;
  {
    std::lock_guard<std::mutex> guard(mu_);
    Hold* h = find_hold(l);
    if (h == nullptr || h->mode != mode) {
      return Status(Code::not_owner, fmt::format("lock {}: not held {}by this thread", quote_name(l->name),
                                                 mode == Mode::shared ? "shared " : ""));
    }
    hold = *h;
    holds_.erase({current_tid(), l});
  }
  json ops = json::array({delete_op(hold.key)});
  if (mode == Mode::exclusive) {
    ops.push_back(put_op(holder_key(*l), marker_after(hold)));
  } else {
    ops.push_back(delete_op(reader_key(*l, hold.key)));
  }
  if (history_on()) {
    const uint64_t now = realtime_ns();
    ops.push_back(event_put(EventKind::released, mode, l->name,
                            json{{"hold_ns", now > hold.since_ns ? now - hold.since_ns : 0},
                                 {"abandoned", hold.abandoned},
                                 {"token", hold.revision}}));
  }
  // A transport failure is retried for as long as the lease would live; an
  // attempt whose answer was lost may have released already.
  json out;
  bool retried = false;
  bool deletions_only = false;
  const uint64_t until = monotonic_ns() + uint64_t(std::chrono::nanoseconds(ttl_).count());
  for (;;) {
    Status s = txn(json::array({create_is(hold.key, "EQUAL", hold.revision)}), ops,
                   json::array({delete_op(mode == Mode::shared ? reader_key(*l, hold.key) : hold.key)}), &out);
    if (s.ok()) break;
    if (s.code() == Code::capacity && !deletions_only) {
      // etcd's space quota is used up: it takes deletions only. Release by
      // deleting this hold's keys, so that the lock is free and no later
      // holder takes this live one for a dead one (a marker that is not
      // there reads as free). An abandoned hold not marked consistent keeps
      // its `held` marker: the next holder is told abandoned too. The
      // `released` event is not recorded.
      deletions_only = true;
      ops = json::array({delete_op(hold.key)});
      if (mode == Mode::shared) ops.push_back(delete_op(reader_key(*l, hold.key)));
      else if (!hold.abandoned) ops.push_back(delete_op(holder_key(*l)));
      continue;
    }
    if (s.code() != Code::io_error || monotonic_ns() > until) {
      withdraw(hold.key);
      if (mode == Mode::shared) withdraw(reader_key(*l, hold.key));
      return s;
    }
    retried = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!out.value("succeeded", false) && retried) return Status::OK();
  if (!out.value("succeeded", false)) {
    return Status(Code::lock_lost, fmt::format("lock {}: lost before this release: this process's etcd lease ran out "
                                               "(more than {} s without renewal) and another holder may have had it",
                                               quote_name(l->name), ttl_.count()));
  }
  return Status::OK();
}

bool EtcdTable::holds_abandoned(const Lock& lock) {
  std::lock_guard<std::mutex> guard(mu_);
  Hold* h = find_hold(static_cast<const NameState*>(LockAccess::state(lock)));
  return still_held(h) && h->abandoned;
}

Status EtcdTable::mark_consistent(Lock& lock) {
  auto* l = static_cast<NameState*>(LockAccess::state(lock));
  bool shared = false;
  {
    std::lock_guard<std::mutex> guard(mu_);
    Hold* h = find_hold(l);
    if (h == nullptr) return Status(Code::not_owner, fmt::format("lock {}: not held by this thread", quote_name(l->name)));
    if (!h->abandoned) return Status::OK();
    h->abandoned = false;
    shared = h->mode == Mode::shared;
  }
  if (!shared) return Status::OK();  // the release writes the marker
  json out;
  return txn(json::array(), json::array({put_op(holder_key(*l), free_marker())}),
             json::array(), &out);
}

// DOWNGRADE. One transaction, while the queue key is still this hold's: the
// key's value says `shared` (its create revision, its place in the queue,
// stays, so the writers queued behind it still wait and the readers behind
// them too, while readers right behind it get in), a reader's marker is put
// and the holder marker says free (or still abandoned).
Status EtcdTable::downgrade(Lock& lock) {
  if (Status s = check_process(); !s.ok()) return s;
  auto* l = static_cast<NameState*>(LockAccess::state(lock));
  Hold hold;
  {
    std::lock_guard<std::mutex> guard(mu_);
    Hold* h = find_hold(l);
    if (h == nullptr || h->mode != Mode::exclusive) {
      return Status(Code::not_owner, fmt::format("lock {}: not held exclusive by this thread", quote_name(l->name)));
    }
    hold = *h;
  }
  const json owner = owner_value();
  json shared = owner;
  shared["mode"] = "shared";
  json reader = owner;
  reader["since_ns"] = hold.since_ns;  // one hold, exclusive and then shared
  json ops = json::array({put_op(hold.key, shared, hold.lease), put_op(reader_key(*l, hold.key), reader),
                          put_op(holder_key(*l), marker_after(hold))});
  if (history_on()) ops.push_back(event_put(EventKind::downgraded, Mode::shared, l->name, json{{"token", hold.revision}}));
  json out;
  if (Status s = txn(json::array({create_is(hold.key, "EQUAL", hold.revision)}), ops, json::array(), &out); !s.ok()) {
    return s;
  }
  if (!out.value("succeeded", false)) {
    std::lock_guard<std::mutex> guard(mu_);
    holds_.erase({current_tid(), l});  // never told it still holds
    return Status(Code::lock_lost, fmt::format("lock {}: lost before this downgrade: this process's etcd lease ran out "
                                               "(more than {} s without renewal)",
                                               quote_name(l->name), ttl_.count()));
  }
  std::lock_guard<std::mutex> guard(mu_);
  if (Hold* h = find_hold(l)) h->mode = Mode::shared;
  return Status::OK();
}

uint64_t EtcdTable::token(const Lock& lock) {
  std::lock_guard<std::mutex> guard(mu_);
  Hold* h = find_hold(static_cast<const NameState*>(LockAccess::state(lock)));
  return still_held(h) ? uint64_t(h->revision) : 0;
}


}  // namespace locktable::detail
