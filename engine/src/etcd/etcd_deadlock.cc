// DEADLOCKS on an etcd table. The waits-for graph is in the queues: a key
// P/N/<lease>_<tid>[_r] names its thread (etcdctl's P/N/<lease> a session),
// and a key waits for every key before it in its queue that blocks it (a
// writer: every one; a reader: every writer). One transaction reads every
// queue at one revision, so the graph is one consistent picture: a cycle in
// it is a deadlock at that revision, since a queue moves only when a key
// leaves (a release, a timeout, a lease that runs out).
//
// NO FALSE POSITIVES. A member that died keeps its keys until its lease runs
// out, so a cycle counts only once every member is seen alive after the
// cycle was first seen: its lease renewed since then (its remaining TTL has
// not just counted down), and, for a member on this host, its thread still
// running. Until then, and if the cycle changes, the waiter keeps waiting.
//
// ONE VICTIM. The locktable thread of the cycle whose waiting key is newest
// (the largest create revision) gives up; every member that looks computes
// the same one. It leaves its queue, records a `deadlock` event and is told
// Code::deadlock. etcdctl sessions are never picked (they cannot be told).
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include <fmt/format.h>

#include "clock.h"
#include "etcd_requests.h"
#include "etcd_table.h"
#include "locktable/names.h"
#include "proc_thread.h"

namespace locktable::detail {

using namespace etcd;

namespace {

// A queue key's thread: the key's last segment without `_r`.
std::string member_of(std::string_view entry) {
  if (is_reader_key(entry)) entry.remove_suffix(2);
  return std::string(entry);
}

// The lease of a member (<lease hex>[_<tid>]); 0 if it does not parse.
int64_t lease_of(const std::string& member) {
  const std::string hex = member.substr(0, member.find('_'));
  try {
    return int64_t(std::stoull(hex, nullptr, 16));
  } catch (const std::exception&) {
    return 0;
  }
}

bool is_thread(const std::string& member) { return member.find('_') != std::string::npos; }

}  // namespace

Status EtcdTable::read_wait_graph(WaitGraph* g) {
  g->edges.clear();
  g->owners.clear();
  // Every queue, at one revision: the keys before P/.locktable/ and after it
  // (a name's segment never starts with `.`).
  const std::string all = prefix_ + "/", meta_prefix = meta("");
  json before{{"key", base64_encode(all)}, {"range_end", base64_encode(meta_prefix)}};
  json after{{"key", base64_encode(prefix_end(meta_prefix))}, {"range_end", base64_encode(prefix_end(all))}};
  json out;
  if (Status s = txn(json::array(), json::array({json{{"request_range", before}}, json{{"request_range", after}}}),
                     json::array(), &out);
      !s.ok()) {
    return s;
  }
  std::map<std::string, std::vector<Kv>> queues;  // by segment
  for (size_t r = 0; r < 2; ++r) {
    for (Kv& kv : kvs_of(response(out, r, "response_range"))) {
      const std::string_view rest = std::string_view(kv.key).substr(all.size());
      const size_t slash = rest.find('/');
      if (slash == std::string_view::npos) continue;
      queues[std::string(rest.substr(0, slash))].push_back(std::move(kv));
    }
  }
  for (auto& [segment, keys] : queues) {
    std::sort(keys.begin(), keys.end(), [](const Kv& a, const Kv& b) { return a.create < b.create; });
    std::string name;
    if (!decode_name_segment(segment, &name)) name = segment;
    for (size_t i = 0; i < keys.size(); ++i) {
      const std::string waiter = member_of(std::string_view(keys[i].key).substr(all.size() + segment.size() + 1));
      const bool reader = is_reader_entry(keys[i]);
      if (keys[i].value.is_object()) g->owners[waiter] = keys[i].value;
      for (size_t j = 0; j < i; ++j) {
        if (reader && is_reader_entry(keys[j])) continue;  // readers do not wait for readers
        const std::string holder = member_of(std::string_view(keys[j].key).substr(all.size() + segment.size() + 1));
        if (holder == waiter) continue;
        g->edges[waiter].push_back(WaitGraph::Edge{holder, name, reader ? Mode::shared : Mode::exclusive, keys[i].create});
      }
    }
  }
  return Status::OK();
}

// A cycle through `me`: the edges from me back to me (depth first).
std::vector<EtcdTable::WaitGraph::Edge> EtcdTable::cycle_through(const WaitGraph& g, const std::string& me) {
  std::vector<WaitGraph::Edge> path;
  std::set<std::string> visited;
  std::function<bool(const std::string&)> walk = [&](const std::string& at) {
    auto it = g.edges.find(at);
    if (it == g.edges.end()) return false;
    for (const WaitGraph::Edge& e : it->second) {
      path.push_back(e);
      if (e.holder == me) return true;
      if (visited.insert(e.holder).second && walk(e.holder)) return true;
      path.pop_back();
    }
    return false;
  };
  visited.insert(me);
  return walk(me) ? path : std::vector<WaitGraph::Edge>{};
}

// The waiting thread's check (acquire_slow calls it after deadlock_timeout):
// true when this thread is the victim of a deadlock, with the message.
bool EtcdTable::deadlocked(const std::string& my_key, DeadlockWatch* watch, std::string* message) {
  WaitGraph g;
  if (!read_wait_graph(&g).ok()) return false;
  const std::string me = member_of(std::string_view(my_key).substr(my_key.rfind('/') + 1));
  std::vector<WaitGraph::Edge> cycle = cycle_through(g, me);
  if (cycle.empty()) {
    watch->signature.clear();
    return false;
  }
  // The victim: the thread (not an etcdctl session) whose waiting key is newest.
  // Edge i is the wait of cycle[i-1].holder (of me for i = 0).
  std::string victim;
  int64_t newest = -1;
  std::string signature;
  for (size_t i = 0; i < cycle.size(); ++i) {
    const std::string& waiter = i == 0 ? me : cycle[i - 1].holder;
    signature += fmt::format("{}@{};", waiter, cycle[i].revision);
    if (is_thread(waiter) && cycle[i].revision > newest) {
      newest = cycle[i].revision;
      victim = waiter;
    }
  }
  // Liveness: every member's lease renewed since the cycle was first seen.
  const uint64_t now = monotonic_ns();
  if (signature != watch->signature) {
    watch->signature = signature;
    watch->first_seen_ns = now;
    watch->ttl_at_first.clear();
  }
  bool all_alive = true;
  for (size_t i = 0; i < cycle.size(); ++i) {
    const std::string& member = i == 0 ? me : cycle[i - 1].holder;
    if (member == me) continue;
    const json& owner = g.owners.count(member) ? g.owners[member] : json();
    if (owner.is_object() && owner.value("host", "") == host_) {
      uint64_t start = 0;
      char state = 0;
      if (!read_thread_stat(owner.value("pid", 0u), owner.value("tid", 0u), &start, &state) ||
          uint32_t(start) != owner.value("start", 0u) || state == 'Z' || state == 'X') {
        return false;  // a dead member: its lease will run out and the queue move on
      }
    }
    const int64_t lease = lease_of(member);
    json out;
    if (lease == 0 || !client_->call("lease/timetolive", json{{"ID", std::to_string(lease)}}, &out).ok()) return false;
    const int64_t ttl = json_int(out, "TTL");
    if (ttl <= 0) return false;  // gone: the queue moves on
    auto [it, first] = watch->ttl_at_first.emplace(member, ttl);
    // Not renewed, a lease counts down with the time (etcd says whole
    // seconds, rounded down): renewed, it is above that by more than the
    // rounding.
    const double elapsed = double(now - watch->first_seen_ns) / 1e9;
    if (first || double(ttl) <= double(it->second) - elapsed + 1.0) all_alive = false;
  }
  if (!all_alive || victim != me) return false;
  auto who = [&](const std::string& member) {
    const json& o = g.owners.count(member) ? g.owners[member] : json();
    if (!o.is_object()) return fmt::format("etcd session {}", member);
    return fmt::format("host {} pid {} tid {}", o.value("host", "?"), o.value("pid", 0u), o.value("tid", 0u));
  };
  std::string text = fmt::format("deadlock: this thread ({})", who(me));
  for (size_t i = 0; i < cycle.size(); ++i) {
    const WaitGraph::Edge& e = cycle[i];
    text += fmt::format("{} waits for lock {} ({}), held by {}", i == 0 ? "" : ", which", quote_name(e.lock),
                        e.mode == Mode::shared ? "shared" : "exclusive", e.holder == me ? "this thread" : who(e.holder));
  }
  *message = text + "; this thread was picked to give up: release what it holds and try again";
  return true;
}

}  // namespace locktable::detail
