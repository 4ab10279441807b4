// The etcd backend's listing, statistics, check and history (etcd_table.h).
#include <algorithm>

#include <fmt/format.h>

#include "clock.h"
#include "etcd_requests.h"
#include "etcd_table.h"
#include "locktable/names.h"

namespace locktable::detail {

using namespace etcd;

// ---------------------------------------------------------------------------
// Inspection.
// ---------------------------------------------------------------------------
// The queue in create order: the first key holds; readers right behind a
// reading first key hold with it; everyone after the first waiter waits.
LockInfo EtcdTable::describe(const NameState& l, const json& queue, const json& holder, const json& readers) {
  LockInfo info;
  info.name = l.name;
  info.incarnation = uint32_t(l.incarnation);
  std::vector<Kv> marker = kvs_of(holder);
  const std::vector<Kv> reader_markers = kvs_of(readers);
  // How long a holder has held, from the marker its ownership put (by the
  // holder's clock: another machine's may be ahead).
  const uint64_t now = realtime_ns();
  auto held_for = [&](const json& m, HolderInfo* h) {
    if (!m.is_object() || !m.contains("since_ns") || !m["since_ns"].is_number_unsigned()) return;
    const uint64_t since = m["since_ns"].get<uint64_t>();
    h->held_for_ms = now > since ? (now - since) / 1'000'000 : 0;
  };
  bool holding = true;
  for (const Kv& kv : kvs_of(queue)) {
    const bool reader = is_reader_entry(kv);
    // A key that is not locktable's (no JSON owner) is an etcdctl or Go
    // clientv3 session's, named by its lease (P/N/<lease hex>): say so, where
    // a thread name goes, since it has no pid to show.
    const std::string comm = kv.value.is_object() ? kv.value.value("comm", "")
                                                  : "etcd session " + kv.key.substr(kv.key.rfind('/') + 1);
    if (holding && (info.holders.empty() || (reader && info.mode == Mode::shared))) {
      HolderInfo h;
      h.owner = owner_of(kv.value);
      h.comm = comm;
      h.alive = true;  // its lease is alive, or the key would be gone
      h.token = uint64_t(kv.create);
      if (reader) {
        const std::string key = reader_key(l, kv.key);
        for (const Kv& r : reader_markers) {
          if (r.key == key) held_for(r.value, &h);
        }
      } else if (!marker.empty() && marker[0].value.is_object() && marker[0].value.value("state", "") == "held" &&
                 owner_of(marker[0].value) == h.owner) {
        held_for(marker[0].value, &h);
      }
      info.holders.push_back(h);
      info.mode = reader ? Mode::shared : Mode::exclusive;
      info.state = reader ? locktable::LockState::shared : locktable::LockState::held;
      continue;
    }
    holding = false;
    WaiterInfo w;
    w.owner = owner_of(kv.value);
    w.comm = comm;
    w.mode = reader ? Mode::shared : Mode::exclusive;
    info.waiting.push_back(w);
    ++info.waiters;
  }
  if (!marker.empty() && marker[0].value.is_object()) {
    info.abandoned = marker[0].value.value("abandoned", false) ||
                     (info.holders.empty() && marker[0].value.value("state", "") == "held");
  }
  return info;
}

// etcd has no cheaper way to the busy locks than reading every name's queue:
// ListScope::busy filters the full listing. A prefix is a key range: the
// name encoding maps each byte alone, so a name's prefix encodes to a
// prefix of its key.
Status EtcdTable::list_each(const LockVisitor& visit, ListScope scope, std::string_view prefix) {
  if (Status s = check_process(); !s.ok()) return s;
  json names;
  const std::string range = meta("names/") + encode_name_segment(prefix);
  if (Status s = client_->call("kv/range", range_op(range, true)["request_range"], &names); !s.ok()) return s;
  for (const Kv& kv : kvs_of(names)) {
    std::string name;
    if (!decode_name_segment(std::string_view(kv.key).substr(meta("names/").size()), &name) ||
        !std::string_view(name).starts_with(prefix)) {
      continue;
    }
    NameState l{name, encode_name_segment(name), kv.create};
    json out;
    if (Status s = txn(json::array(),
                       json::array({range_op(queue_prefix(l), true, true), range_op(holder_key(l)),
                                    range_op(readers_prefix(l), true)}),
                       json::array(), &out);
        !s.ok()) {
      return s;
    }
    const LockInfo info = describe(l, response(out, 0, "response_range"), response(out, 1, "response_range"),
                                   response(out, 2, "response_range"));
    if (scope == ListScope::busy && !info.busy()) continue;
    if (Status s = visit(info); !s.ok()) return s;
  }
  return Status::OK();
}

Status EtcdTable::stats(TableStats* st) {
  if (Status s = check_process(); !s.ok()) return s;
  *st = TableStats{};
  st->dir = location_;
  st->backend = "etcd";
  st->time_resolution_ns = 1;  // events are stamped with the real-time clock
  st->format_version = kFormat;
  st->history_level = history_level_.load();
  st->retention_count = retention_count_.load();
  st->retention_age_s = retention_age_s_.load();
  json out;
  auto count = [&](const std::string& prefix, uint64_t* n) {
    json r = range_op(prefix, true)["request_range"];
    r["count_only"] = true;
    Status s = client_->call("kv/range", r, &out);
    if (s.ok()) *n = uint64_t(json_int(out, "count"));
    return s;
  };
  if (Status s = count(meta("names/"), &st->slots_used); !s.ok()) return s;
  return count(meta("history/"), &st->history_records);
}

Status EtcdTable::recover(bool, std::vector<Recovery>* actions) {
  actions->clear();  // etcd removes a dead process's keys when its lease runs out
  return check_process();
}

Status EtcdTable::check(std::vector<std::string>* problems) {
  problems->clear();
  if (Status s = check_process(); !s.ok()) return s;
  json names;
  if (Status s = client_->call("kv/range", range_op(meta("names/"), true)["request_range"], &names); !s.ok()) return s;
  for (const Kv& kv : kvs_of(names)) {
    std::string name;
    if (!decode_name_segment(std::string_view(kv.key).substr(meta("names/").size()), &name) ||
        !validate_name(name).ok()) {
      problems->push_back(fmt::format("{}: key {} does not name a lock", location_, quote_name(kv.key)));
    }
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------
// History: every event is a key, written in the same transaction as the
// change it describes where there is one; its create revision orders it.
// ---------------------------------------------------------------------------
Status EtcdTable::drain_history(uint64_t* drained) {
  if (drained != nullptr) *drained = 0;  // nothing to drain: events go to etcd directly
  return check_process();
}

Status EtcdTable::history(const HistoryQuery& q, std::vector<Event>* events) {
  events->clear();
  if (Status s = check_process(); !s.ok()) return s;
  json out;
  if (Status s = client_->call("kv/range", range_op(meta("history/"), true, true)["request_range"], &out); !s.ok()) {
    return s;
  }
  std::vector<Kv> all = kvs_of(out);
  // Retention: the oldest beyond the count, and those older than the age, go
  // (at most 128 per call: one transaction).
  const uint64_t keep = retention_count_.load();
  const uint64_t cutoff = retention_cutoff_ns(realtime_ns(), retention_age_s_.load());
  size_t expired = 0;
  while (expired < all.size() && expired < 128 &&
         ((keep != 0 && all.size() - expired > keep) ||
          (cutoff != 0 && all[expired].value.is_object() &&
           all[expired].value.value("time_ns", uint64_t{0}) < cutoff))) {
    ++expired;
  }
  if (expired > 0) {
    json ops = json::array();
    for (size_t i = 0; i < expired; ++i) ops.push_back(delete_op(all[i].key));
    json ignored;
    (void)txn(json::array(), ops, json::array(), &ignored);
    all.erase(all.begin(), all.begin() + std::ptrdiff_t(expired));
  }
  for (const Kv& kv : all) {
    if (!kv.value.is_object()) continue;
    const json& v = kv.value;
    Event e;
    e.seq = uint64_t(kv.create);
    e.time_ns = v.value("time_ns", uint64_t{0});
    e.kind = EventKind(v.value("kind", 0));
    e.mode = Mode(v.value("mode", 0));
    e.abandoned = v.value("abandoned", false);
    e.pid = v.value("pid", 0u);
    e.tid = v.value("tid", 0u);
    e.comm = v.value("comm", "");
    e.name = name_of(v);
    e.wait_ns = v.value("wait_ns", uint64_t{0});
    e.hold_ns = v.value("hold_ns", uint64_t{0});
    e.token = v.value("token_is_seq", false) ? e.seq : v.value("token", uint64_t{0});
    if (v.contains("dead") && v["dead"].is_object()) e.dead_owner = owner_of(v["dead"]);
    if (q.name && e.name != *q.name) continue;
    if (q.kind && e.kind != *q.kind) continue;
    if (q.pid && e.pid != *q.pid) continue;
    if (e.time_ns < q.since_ns || e.time_ns >= q.until_ns || e.seq <= q.after_seq) continue;
    events->push_back(std::move(e));
  }
  if (q.limit != 0 && events->size() > q.limit) events->erase(events->begin(), events->end() - std::ptrdiff_t(q.limit));
  if (q.newest_first) std::reverse(events->begin(), events->end());
  return Status::OK();
}

Status EtcdTable::update_settings(const json& changes) {
  if (Status s = check_process(); !s.ok()) return s;
  json out;
  if (Status s = client_->call("kv/range", range_op(meta("table"))["request_range"], &out); !s.ok()) return s;
  std::vector<Kv> marker = kvs_of(out);
  if (marker.empty() || !marker[0].value.is_object()) return Status(Code::corrupt, fmt::format("{}: no table marker", location_));
  json settings = marker[0].value;
  settings.update(changes);
  return txn(json::array(), json::array({put_op(meta("table"), settings)}), json::array(), &out);
}

Status EtcdTable::set_history_level(HistoryLevel level) {
  Status s = update_settings(json{{"history", int(level)}});
  if (s.ok()) history_level_ = level;
  return s;
}

Status EtcdTable::set_retention(uint64_t count, std::chrono::seconds age) {
  Status s = update_settings(json{{"retention_count", count}, {"retention_age_s", uint64_t(age.count())}});
  if (s.ok()) {
    retention_count_ = count;
    retention_age_s_ = uint64_t(age.count());
  }
  return s;
}

}  // namespace locktable::detail

