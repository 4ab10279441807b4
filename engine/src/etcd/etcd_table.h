// EtcdTable: the etcd backend. A table is a key prefix P in an etcd v3
// cluster; its locks are etcd's own lock recipe, so that `etcdctl lock P/N`
// and locktable's lock N exclude each other.
//
// KEYS (N is the name as one key segment, etcd_location.h):
//   P/N/<lease>_<tid>[_r]         the lock's queue: one key per waiting or holding
//                                 thread, attached to the table's lease (`_r`: a
//                                 reader; so is a key whose value has "mode":
//                                 "shared", a downgraded writer). etcdctl's own
//                                 keys, P/N/<lease>, are writers in the same queue.
//   P/.locktable/table            the table marker: format, history settings
//   P/.locktable/names/N          a name (its create revision is the handle's incarnation)
//   P/.locktable/holder/N         who holds N exclusive, or `free` (+ still abandoned?)
//   P/.locktable/readers/N/<key>  one per reader holding N
//   P/.locktable/history/<lease>_<n>  one event (its create revision is its sequence number;
//                                 a random id stands for the lease while the table has none)
//
// ACQUIRE. A thread puts its queue key (create revision R, its fencing token)
// and waits until no key in the queue with a lower create revision blocks it:
// for a writer every one, for a reader every writer (so a waiting writer keeps
// later readers out). That is etcd's Mutex: every holder's key is the lowest
// of the queue that it waits behind, so there is never more than one writer,
// or a writer with readers, at any revision. Uncontended, one transaction does
// it all: if the queue is empty, the name's incarnation unchanged and the
// predecessors' markers say nothing is left to settle, put the key, write the
// holder marker and append the event. A downgrade rewrites the holder's key
// as a reader's in place (the create revision, its place, stays).
//
// DEATH. A process that dies stops renewing its lease; after the TTL etcd
// deletes its keys, and the queue moves on. The holder marker is not on a
// lease: a new owner that finds it `held` (by a key no longer there), or
// readers' markers left behind, knows its predecessor never released: it is
// told `abandoned`, with the dead owner. One holder records each takeover: a
// writer is alone (its ownership transaction replaced the marker), and of
// readers taking over together only the one whose change of the marker
// lands (a compare on its revision) records it; holders after it, until the
// lock is marked consistent, are told `abandoned` and record nothing new.
// A holder whose lease ran out while it lived
// (stopped, partitioned) finds its key gone at release: `lock_lost`; from a
// TTL after the last renewal etcd answered it is no longer told it holds
// (token() 0), since etcd may have let the lease run out meanwhile. A
// release that etcd refuses for want of space (its quota used up: it then
// takes deletions only) deletes the hold's keys alone, the holder marker
// with them unless the hold is still abandoned: no marker reads as free, so
// a live holder is never taken for a dead one.
//
// Waiting polls the queue a few times (1 to 16 ms), then watches it (a watch
// from the revision of the last read, until a key is deleted, at most a
// second at a time) and reads it again; fork() children open the
// table again (the lease, its keep-alive thread and the HTTP pool stay with
// the parent).
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "backend.h"
#include "etcd_client.h"
#include "etcd_location.h"

namespace locktable::detail {

Status open_etcd_table(const std::string& location, const Options& options, std::shared_ptr<Backend>* out);

class EtcdTable final : public Backend {
 public:
  ~EtcdTable() override;

  const std::string& location() const override { return location_; }

  Status lookup(const std::shared_ptr<Backend>& self, std::string_view name, Lookup mode, Lock* out) override;
  Status lookup_many(const std::shared_ptr<Backend>& self, const std::vector<std::string>& names, Lookup mode,
                     std::vector<Lock>* out) override;
  Status remove(std::string_view name) override;

  AcquireResult acquire(Lock& lock, Mode mode, const Deadline& deadline) override;
  Status release(Lock& lock, Mode mode) override;
  bool holds_abandoned(const Lock& lock) override;
  Status mark_consistent(Lock& lock) override;
  Status downgrade(Lock& lock) override;
  uint64_t token(const Lock& lock) override;

  Status list_each(const LockVisitor& visit, ListScope scope, std::string_view prefix) override;
  Status stats(TableStats* stats) override;
  Status recover(bool dry_run, std::vector<Recovery>* actions) override;
  Status check(std::vector<std::string>* problems) override;

  Status drain_history(uint64_t* drained) override;
  Status history(const HistoryQuery& query, std::vector<Event>* events) override;
  Status set_history_level(HistoryLevel level) override;
  Status set_retention(uint64_t count, std::chrono::seconds age) override;

 private:
  friend Status open_etcd_table(const std::string&, const Options&, std::shared_ptr<Backend>*);
  EtcdTable();

  // A name's handle state (Lock::state_), owned by the table.
  struct NameState {
    std::string name;
    std::string segment;     // encode_name_segment(name)
    int64_t incarnation = 0; // create revision of its names/ key
  };
  // A hold of the calling thread.
  struct Hold {
    Mode mode = Mode::exclusive;
    std::string key;         // its queue key
    int64_t revision = 0;    // the key's create revision: the token
    bool abandoned = false;  // taken over, not yet marked consistent
    Owner dead;
    std::string dead_host;
    uint64_t since_ns = 0;
    int64_t lease = 0;       // the lease its key is on (a hold under an expired lease is lost)
  };
  // The operations that make a queued thread the owner, and its event.
  struct Ownership {
    nlohmann::json ops;
    nlohmann::json event;    // the `acquired` put, or null (history off)
  };

  Status open(const EtcdLocation& where, const Options& options);
  Status check_process() const;  // not in a child after fork()
  void keep_alive();             // the lease thread
  // Grants a new lease in place of `old` (0: none yet), unless another
  // thread already replaced it: holds under the old one are lost.
  Status replace_lease(int64_t old);
  // Renews `lease` once (a lease etcd no longer has is replaced) and moves
  // lease_until_ns_ on. False if etcd did not answer.
  bool renew(int64_t lease);
  // Merges `changes` into the table marker's settings (read, then put).
  Status update_settings(const nlohmann::json& changes);
  // Deletes a key of this process (a waiter that gave up, a release that
  // failed), or keeps it for the lease thread to delete once etcd answers
  // again: a key left on a live lease would block its queue for ever.
  void withdraw(const std::string& key);
  void delete_orphans();

  // Keys.
  std::string meta(std::string_view what) const { return prefix_ + "/.locktable/" + std::string(what); }
  std::string queue_prefix(const NameState& l) const { return prefix_ + "/" + l.segment + "/"; }
  std::string queue_key(const NameState& l, int64_t lease, uint32_t tid, Mode mode) const;
  std::string holder_key(const NameState& l) const { return holder_key_of(l.segment); }
  std::string holder_key_of(const std::string& segment) const { return meta("holder/" + segment); }
  std::string readers_prefix(const NameState& l) const { return meta("readers/" + l.segment + "/"); }
  std::string reader_key(const NameState& l, const std::string& queue) const;

  // Transactions (the JSON of /v3/kv/txn).
  Status txn(const nlohmann::json& compare, const nlohmann::json& success, const nlohmann::json& failure,
             nlohmann::json* out);
  nlohmann::json event_put(EventKind kind, Mode mode, const std::string& name, const nlohmann::json& extra);
  nlohmann::json owner_value() const;

  AcquireResult acquire_slow(NameState& l, Mode mode, const Deadline& deadline, Hold* hold);
  // As the new owner: read what the previous holders left, write this thread
  // in, record the event (REQUIRES: nothing ahead in the queue blocks it).
  // `read_predecessors`: read the holder and readers' markers (for
  // settle_ownership); the uncontended path compares them instead.
  Ownership ownership_ops(const NameState& l, const Hold& hold, const nlohmann::json& owner, uint64_t waited_ns,
                          bool read_predecessors);
  void settle_ownership(const NameState& l, Hold* hold, const nlohmann::json& out, size_t first, const Ownership& o);
  AcquireResult acquired(const NameState& l, Hold& hold);
  bool history_on() const { return history_level_.load() != HistoryLevel::off; }
  Hold* find_hold(const NameState* l);
  // The holder marker once `hold` stops being an exclusive one (a release, a
  // downgrade): free, and still abandoned if it was taken so and not repaired.
  static nlohmann::json marker_after(const Hold& hold);
  // The dead holder a hold was taken from, as markers and events store it
  // (owner_of reads it back, start time included).
  static nlohmann::json dead_value(const Hold& hold);
  // False once the lease the hold's key is on has expired, or may have (no
  // renewal for a TTL: lease_until_ns_): it is lost (its release says so, or
  // finds the key and releases it), and the thread is never told it still
  // holds.
  bool still_held(const Hold* hold) const;
  // A lock's row from its queue, holder marker and readers' markers (one read).
  LockInfo describe(const NameState& l, const nlohmann::json& queue, const nlohmann::json& holder,
                    const nlohmann::json& readers);

  // The waits-for graph read from every queue at one revision (etcd_deadlock.cc).
  struct WaitGraph {
    struct Edge {
      std::string holder;  // the member waited for (<lease>_<tid>, or an etcdctl session's <lease>)
      std::string lock;    // the name
      Mode mode;           // the waiter's
      int64_t revision;    // the waiter's queue key's create revision
    };
    std::map<std::string, std::vector<Edge>> edges;  // by waiting member
    std::map<std::string, nlohmann::json> owners;    // a member's owner value (pid, tid, start, host)
  };
  // What a waiter remembers between two looks at a cycle.
  struct DeadlockWatch {
    std::string signature;                   // the cycle's members and keys, as last seen
    uint64_t first_seen_ns = 0;
    std::map<std::string, int64_t> ttl_at_first;  // each member's lease TTL when first seen
  };
  Status read_wait_graph(WaitGraph* g);
  static std::vector<WaitGraph::Edge> cycle_through(const WaitGraph& g, const std::string& me);
  // True when the thread whose queue key is `my_key` is the victim of a
  // deadlock every member of which is alive; *message names the cycle.
  bool deadlocked(const std::string& my_key, DeadlockWatch* watch, std::string* message);

  std::string location_;
  std::string prefix_;
  std::chrono::milliseconds deadlock_timeout_{1000};  // Options::deadlock_timeout (0: never look)
  std::unique_ptr<EtcdClient> client_;
  std::chrono::seconds ttl_{10};
  pid_t open_pid_ = 0;
  std::string host_;
  std::atomic<int64_t> lease_{0};  // 0 while etcd grants none (out of space)
  // Monotonic ns until which lease_ surely lives: the time its grant or last
  // renewal was asked for, plus the TTL etcd answered (etcd counts from when
  // it received the request, later). Past it, with etcd out of reach, the
  // lease may have run out and another process may hold this one's locks:
  // its holds count as lost (still_held) until a renewal says otherwise.
  std::atomic<uint64_t> lease_until_ns_{0};
  uint64_t writer_nonce_ = 0;      // names this process's history keys while it has no lease
  std::atomic<uint64_t> event_counter_{0};
  std::atomic<HistoryLevel> history_level_{HistoryLevel::persisted};
  std::atomic<uint64_t> retention_count_{1'000'000};
  std::atomic<uint64_t> retention_age_s_{0};

  std::mutex mu_;                 // guards states_, holds_ (a leaf lock)
  std::map<std::pair<std::string, int64_t>, std::unique_ptr<NameState>> states_;
  std::map<std::pair<uint32_t, const NameState*>, Hold> holds_;  // by (tid, lock)

  std::mutex lease_mu_;           // with lease_cv_: the keep-alive thread's sleep; guards orphans_
  std::condition_variable lease_cv_;
  std::vector<std::string> orphans_;  // keys withdraw() could not delete yet
  bool stopping_ = false;
  std::thread keeper_;
};

}  // namespace locktable::detail
