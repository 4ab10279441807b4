#include "history_store.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "clock.h"
#include "crash_point.h"
#include "liveness.h"
#include "lmdb_records.h"
#include "name_map.h"
#include "posix_error.h"

namespace locktable::detail {

namespace {

constexpr uint64_t kBatch = 8192;                           // events per write transaction, about
constexpr uint64_t kLateWindowNs = 10'000'000'000;          // see is_late

// ---------------------------------------------------------------------------
// Records.
// ---------------------------------------------------------------------------
uint64_t dead_identity(const format::RingEntry& e) { return (e.aux64 & 0xffffffff00000000u) | e.aux32; }

// Whether a `recovered` entry names a dead owner recently recovered from its
// slot (then it is a repeat), remembering it otherwise. A thread dies once,
// so an identity seen again on the slot is the same takeover, recorded twice.
Status first_recovery(Txn& txn, const format::RingEntry& e, bool* duplicate) {
  const std::string key = format::recent_recoveries_key(e.slot);
  std::string_view value;
  bool found = false;
  if (Status s = txn.get(txn.env().dbi().meta, key, &value, &found); !s.ok()) return s;
  format::RecentRecoveries recent;
  if (found) {
    if (Status s = format::decode_recent_recoveries(value, &recent, e.slot); !s.ok()) {
      return with_context(txn.env().path(), s);
    }
  }
  const uint64_t dead = dead_identity(e);
  *duplicate = std::find(recent.dead.begin(), recent.dead.end(), dead) != recent.dead.end();
  if (*duplicate) return Status::OK();
  recent.dead.push_back(dead);
  if (recent.dead.size() > format::kMaxRecentRecoveries) recent.dead.erase(recent.dead.begin());
  return txn.put(txn.env().dbi().meta, key, format::encode_recent_recoveries(recent));
}

Event to_event(uint64_t seq, const format::HistoryRecord& r) {
  Event e;
  e.seq = seq;
  e.time_ns = r.time_ns;
  e.kind = EventKind(r.kind);
  e.mode = Mode(r.mode);
  e.abandoned = (r.flags & format::kEventAbandoned) != 0;
  e.pid = r.pid;
  e.tid = r.tid;
  e.comm = r.comm;
  e.name = r.name;
  e.slot = r.slot;
  e.token = r.token;
  switch (r.kind) {
    case format::kEventAcquired:
    case format::kEventTimeout:
    case format::kEventDeadlock:
      e.wait_ns = r.aux64;
      break;
    case format::kEventReleased:
      e.hold_ns = r.aux64;
      break;
    case format::kEventRecovered:
      e.dead_owner = Owner{uint32_t(r.aux64 >> 32), r.aux32, uint32_t(r.aux64)};
      break;
    case format::kEventLost:
    case format::kEventGrown:
    case format::kEventReset:
      e.count = r.aux64;
      break;
    default:
      break;
  }
  return e;
}

format::HistoryRecord from_entry(const format::RingEntry& e, std::string comm, std::string name) {
  format::HistoryRecord r;
  r.kind = e.kind;
  r.mode = e.mode;
  r.flags = e.flags & format::kEventAbandoned;  // the order flags stay in the ring
  r.pid = e.pid;
  r.tid = e.tid;
  r.slot = e.slot;
  r.incarnation = e.incarnation;
  r.time_ns = e.time_ns;
  r.aux64 = e.aux64;
  r.aux32 = e.aux32;
  r.token = e.token;
  r.comm = std::move(comm);
  r.name = std::move(name);
  return r;
}

format::HistoryRecord lost_record(uint64_t count) {
  const ThreadSelf& me = thread_self();
  format::HistoryRecord r;
  r.kind = format::kEventLost;
  r.pid = me.pid;
  r.tid = me.tid;
  r.time_ns = realtime_ns();
  r.aux64 = count;
  r.comm.assign(me.comm, strnlen(me.comm, sizeof me.comm));
  return r;
}

bool names_a_lock(uint8_t kind) {
  return kind != format::kEventGrown && kind != format::kEventReset && kind != format::kEventLost;
}

bool matches(const HistoryQuery& q, const Event& e) {
  if (q.kind && e.kind != *q.kind) return false;
  if (q.pid && e.pid != *q.pid) return false;
  if (q.name && e.name != *q.name) return false;
  if (e.time_ns < q.since_ns || e.time_ns >= q.until_ns) return false;
  if (e.seq <= q.after_seq) return false;
  return true;
}

bool ordered(const format::RingEntry& e) { return (e.flags & format::kEventUnordered) == 0; }

// Generations and `ended` counts compare as serial numbers: a batch holds far
// fewer than 2^31 changes of one lock.
bool serial_before(uint32_t a, uint32_t b) { return int32_t(a - b) < 0; }

bool is_join(const format::RingEntry& e) { return e.kind == format::kEventAcquired && e.mode == format::kModeShared; }

// An event's place in its lock's order (ORDER IN HISTORY in
// lock_protocol.cc): the owner generation of its exclusive epoch, then the
// readers word's `ended`; at one place, a wait given up or a takeover after
// the others, a join after the leave that made `ended` what it saw, and joins
// in the order they counted themselves in.
struct OrderKey {
  uint32_t generation;
  uint32_t ended;
  bool after;
  bool join;
  uint32_t rank;
  bool operator<(const OrderKey& o) const {
    if (generation != o.generation) return serial_before(generation, o.generation);
    if (ended != o.ended) return serial_before(ended, o.ended);
    if (after != o.after) return !after;
    if (join != o.join) return !join;
    return rank < o.rank;
  }
};
OrderKey key_of(const format::RingEntry& e) {
  return {e.generation, e.ended, (e.flags & format::kEventAfterGeneration) != 0, is_join(e), is_join(e) ? e.aux32 : 0};
}

// ---------------------------------------------------------------------------
// The merge (see history_store.h).
// ---------------------------------------------------------------------------
struct Queued {
  format::RingEntry entry;
  uint32_t segment;
  uint64_t index;
};

class Merger {
 public:
  explicit Merger(uint32_t segments) : queues_(segments) {}

  void add(uint32_t segment, uint64_t index, const format::RingEntry& e) {
    queues_[segment].push_back(Queued{e, segment, index});
    if (ordered(e)) waiting_[e.slot].insert(key_of(e));
  }
  // An event not in this batch that events of its lock at or after `key` must follow.
  void barrier(uint32_t slot, OrderKey key) {
    auto [it, fresh] = barriers_.emplace(slot, key);
    if (!fresh && key < it->second) it->second = key;
  }

  // The next event in merged order, oldest first among those free to go.
  // False when none is (the batch is empty, or the rest wait for events of
  // a later batch).
  bool next(Queued* out) {
    int best = -1;
    for (size_t q = 0; q < queues_.size(); ++q) {
      if (queues_[q].empty()) continue;
      const format::RingEntry& e = queues_[q].front().entry;
      if (ordered(e) && !free_to_go(e)) continue;
      if (best < 0 || e.time_ns < queues_[size_t(best)].front().entry.time_ns) best = int(q);
    }
    return best >= 0 && pop(size_t(best), out);
  }

  // The oldest event at the front of a queue, free to go or not (to break a
  // tie that would otherwise stall the drain; see HistoryStore::drain).
  bool oldest(Queued* out) {
    int best = -1;
    for (size_t q = 0; q < queues_.size(); ++q) {
      if (queues_[q].empty()) continue;
      if (best < 0 || queues_[q].front().entry.time_ns < queues_[size_t(best)].front().entry.time_ns) best = int(q);
    }
    return best >= 0 && pop(size_t(best), out);
  }

  // The index of the first event of `segment` still queued, or `end`.
  uint64_t first_left(uint32_t segment, uint64_t end) const {
    return queues_[segment].empty() ? end : queues_[segment].front().index;
  }
  // How many events of `segment` below `index` are still queued.
  uint64_t left_below(uint32_t segment, uint64_t index) const {
    uint64_t n = 0;
    for (const Queued& q : queues_[segment]) n += q.index < index;
    return n;
  }

 private:
  bool pop(size_t q, Queued* out) {
    *out = queues_[q].front();
    queues_[q].pop_front();
    if (ordered(out->entry)) {
      std::multiset<OrderKey>& keys = waiting_[out->entry.slot];
      keys.erase(keys.find(key_of(out->entry)));
    }
    return true;
  }

  // Free to go: no event of its lock waiting in the batch, or barred by one
  // left for a later batch, must come first.
  bool free_to_go(const format::RingEntry& e) const {
    const OrderKey k = key_of(e);
    if (auto b = barriers_.find(e.slot); b != barriers_.end() && !(k < b->second)) return false;
    const std::multiset<OrderKey>& keys = waiting_.find(e.slot)->second;
    return !(*keys.begin() < k);
  }

  std::vector<std::deque<Queued>> queues_;
  std::unordered_map<uint32_t, std::multiset<OrderKey>> waiting_;  // slot -> keys of its queued events
  std::unordered_map<uint32_t, OrderKey> barriers_;
};

// Names of locks by (slot, incarnation), from the slot map or the graveyard,
// and thread names by segment, looked up once per batch.
class Names {
 public:
  explicit Names(const Txn& txn) : txn_(txn) {}
  Status lock(const format::RingEntry& e, std::string* name) {
    name->clear();
    if (!names_a_lock(e.kind)) return Status::OK();
    const uint64_t key = (uint64_t{e.slot} << 32) | e.incarnation;
    if (auto it = locks_.find(key); it != locks_.end()) {
      *name = it->second;
      return Status::OK();
    }
    if (Status s = name_of_slot(txn_, e.slot, e.incarnation, name); !s.ok()) return s;
    locks_.emplace(key, *name);
    return Status::OK();
  }
 private:
  const Txn& txn_;
  std::unordered_map<uint64_t, std::string> locks_;
};

// Retention: by count, then by age, oldest first, with the name index.
Status apply_retention(Txn& txn) {
  const Dbis& db = txn.env().dbi();
  uint64_t keep = 0, age_s = 0, count = 0;
  if (Status s = txn.get_u64(format::kMetaRetentionCount, &keep, 0); !s.ok()) return s;
  if (Status s = txn.get_u64(format::kMetaRetentionAge, &age_s, 0); !s.ok()) return s;
  if (Status s = txn.entries(db.history, &count); !s.ok()) return s;
  const uint64_t now = realtime_ns();
  const uint64_t cutoff = retention_cutoff_ns(now, age_s);
  Cursor cur(txn, db.history);
  for (bool more = cur.first(); more;) {
    format::HistoryRecord r;
    uint64_t seq = 0;
    format::decode_u64_key(cur.key(), &seq);
    const bool decodable = format::decode_history_record(cur.value(), &r, seq).ok();
    const bool over_count = keep != 0 && count > keep;
    const bool too_old = decodable && cutoff != 0 && r.time_ns < cutoff;
    if (!over_count && !too_old) break;
    if (decodable && !r.name.empty()) {
      std::string key(cur.key());
      std::string_view kv = key;
      if (Status s = txn.del(db.history_by_name, r.name, &kv); !s.ok()) return s;
    }
    more = cur.erase_and_next();
    --count;
  }
  return cur.status();
}

// Names of removed slots are kept until every event that may carry them has
// been drained: a grave older than the oldest undrained event goes.
Status prune_graveyard(Txn& txn, uint64_t oldest_undrained_ns) {
  Cursor cur(txn, txn.env().dbi().graveyard);
  for (bool more = cur.first(); more;) {
    format::GraveRecord g;
    bool stale = !format::decode_grave_record(cur.value(), &g).ok() || g.removed_ns < oldest_undrained_ns;
    more = stale ? cur.erase_and_next() : cur.next();
  }
  return cur.status();
}

Status read_state(const Txn& txn, uint32_t k, format::SegmentState* st) {
  std::string_view v;
  bool found = false;
  *st = format::SegmentState{};
  if (Status s = txn.get(txn.env().dbi().meta, format::segment_state_key(k), &v, &found); !s.ok() || !found) return s;
  return with_context(txn.env().path(), format::decode_segment_state(v, st, k));
}

// An ownership change (acquired, released, created, removed, downgraded) is
// at the exact place its own change made; a timeout or a recovery only at the
// one it saw.
bool ownership_change(const format::RingEntry& e) {
  return ordered(e) && (e.flags & format::kEventAfterGeneration) == 0;
}

// Late: a later ownership change of the same lock is stored already (joins
// at one place are not told apart here). A place far older in time than the
// stored one has wrapped around; it is not late.
bool is_late(const format::RingEntry& e, const format::SlotOrder& stored) {
  if (stored.time_ns == 0 || stored.incarnation != e.incarnation || e.time_ns + kLateWindowNs <= stored.time_ns) {
    return false;
  }
  if (e.generation != stored.generation) return serial_before(e.generation, stored.generation);
  return serial_before(e.ended, stored.ended);
}

}  // namespace

// ---------------------------------------------------------------------------
// Draining.
// ---------------------------------------------------------------------------
Status HistoryStore::lost_undrained(const Txn& txn, uint64_t* lost) {
  uint64_t seen = 0;
  if (Status s = txn.get_u64(format::kMetaUnsegmentedSeen, &seen, 0); !s.ok()) return s;
  *lost = std::atomic_ref<uint64_t>(file_.header()->unsegmented_lost).load(std::memory_order_relaxed) - seen;
  const uint64_t capacity = ring_.capacity();
  for (uint32_t k = 0; k < ring_.segment_count(); ++k) {
    format::SegmentState st;
    if (Status s = read_state(txn, k, &st); !s.ok()) return s;
    const uint64_t head = ring_.head(k);
    if (head > st.drained + capacity) *lost += head - capacity - st.drained;
  }
  return Status::OK();
}

Status HistoryStore::drain(uint64_t* drained) {
  *drained = 0;
  if (ring_.level() != format::kHistoryPersisted) return Status::OK();
  std::lock_guard<std::mutex> guard(drain_mu_);
  // A pass drains up to the heads it sees first, never chasing appends made
  // during it: under a tight locking loop a chasing drainer runs for as long as
  // the appends come, keeping a core (and the ring's cache lines) busy.
  auto current_heads = [&] {
    std::vector<uint64_t> heads(ring_.segment_count());
    for (uint32_t k = 0; k < ring_.segment_count(); ++k) heads[k] = ring_.head(k);
    return heads;
  };
  std::vector<uint64_t> heads = current_heads();
  bool force = false;
  for (;;) {
    bool done = false, stuck = false;
    if (Status s = drain_batch(heads, force, drained, &done, &stuck); !s.ok() || done) return s;
    // A batch that could take nothing: its events wait for events of their
    // locks appended after this pass read the heads (a thread descheduled
    // between its CAS and its append). Take those in. If there are none, the
    // events contradict each other (they never do unless a bug wrote them):
    // the next batch breaks the tie at the oldest event rather than stall.
    force = false;
    if (stuck) {
      std::vector<uint64_t> now = current_heads();
      force = now == heads;
      heads = std::move(now);
    }
  }
}

Status HistoryStore::drain_batch(const std::vector<uint64_t>& pass_heads, bool force, uint64_t* drained_out, bool* done,
                                 bool* stuck) {
  *stuck = false;
  const Dbis& db = lmdb_.dbi();
  const uint32_t segments = ring_.segment_count();
  const uint64_t capacity = ring_.capacity();
  Txn txn(lmdb_, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  uint64_t next_seq = 1, accounted = 0, lost_total = 0, unsegmented_seen = 0;
  if (s = txn.get_u64(format::kMetaNextSeq, &next_seq, 1); !s.ok()) return s;
  if (s = txn.get_u64(format::kMetaAccounted, &accounted, 0); !s.ok()) return s;
  if (s = txn.get_u64(format::kMetaLostTotal, &lost_total, 0); !s.ok()) return s;
  if (s = txn.get_u64(format::kMetaUnsegmentedSeen, &unsegmented_seen, 0); !s.ok()) return s;

  // Lost: lapped (overwritten before being read), overwritten while being
  // read, late, or appended by threads without a segment.
  std::vector<format::SegmentState> states(segments);
  std::vector<uint64_t> heads(segments);
  uint64_t lost = 0, active = 0, lapped = 0;
  for (uint32_t k = 0; k < segments; ++k) {
    if (s = read_state(txn, k, &states[k]); !s.ok()) return s;
    // Another drainer may have gone past the heads this pass started from.
    heads[k] = std::max(pass_heads[k], states[k].drained);
    if (heads[k] - states[k].drained > capacity) {
      lapped += heads[k] - capacity - states[k].drained;
      states[k].drained = heads[k] - capacity;
    }
    active += heads[k] > states[k].drained;
  }
  const uint64_t unsegmented =
      std::atomic_ref<uint64_t>(file_.header()->unsegmented_lost).load(std::memory_order_relaxed);
  lost += lapped + (unsegmented - unsegmented_seen);
  if (active == 0 && lost == 0) {
    *done = true;
    return Status::OK();
  }

  // This batch takes up to `cap` events of each segment. Everything after
  // them bars later events of the same locks (Merger::barrier): what the cap
  // leaves behind, and what was appended since the pass read its heads. The
  // second matters because the heads are read one after another: a segment
  // read early can miss an event whose successor in its lock, in a segment
  // read later, made it. Reading on to each segment's current head, after all
  // heads were read, finds such an event unless its thread was descheduled
  // between its CAS and its append; then it arrives late (is_late).
  const uint64_t cap = std::max<uint64_t>(256, kBatch / std::max<uint64_t>(active, 1));
  Merger merger(segments);
  std::vector<uint64_t> ends(segments);
  std::vector<uint64_t> failed(segments, 0);   // 1 + the last index overwritten while being read
  std::vector<uint64_t> nfailed(segments, 0);  // how many were
  for (uint32_t k = 0; k < segments; ++k) {
    ends[k] = std::min(heads[k], states[k].drained + cap);
    const uint64_t now_head = std::max(ring_.head(k), heads[k]);
    for (uint64_t i = states[k].drained; i < now_head; ++i) {
      format::RingEntry e;
      if (ring_read(ring_.entries(k), uint32_t(capacity), i, &e) != RingRead::complete) {
        if (i < ends[k]) {
          failed[k] = i + 1;
          ++nfailed[k];
        }
        continue;
      }
      if (i < ends[k]) {
        merger.add(k, i, e);
      } else if (ordered(e)) {
        merger.barrier(e.slot, key_of(e));
      }
    }
  }

  Names names(txn);
  std::unordered_map<uint32_t, format::SlotOrder> order;  // slot -> last stored, as read or updated here
  std::vector<std::pair<std::string, format::HistoryRecord>> out;
  uint64_t popped = 0;
  for (Queued q; merger.next(&q) || (force && popped == 0 && merger.oldest(&q)); ++popped) {
    const format::RingEntry& e = q.entry;
    if (ownership_change(e)) {
      auto [it, fresh] = order.try_emplace(e.slot);
      if (fresh) {
        std::string_view v;
        bool found = false;
        if (s = txn.get(db.meta, format::slot_order_key(e.slot), &v, &found); !s.ok()) return s;
        if (found && !(s = format::decode_slot_order(v, &it->second, e.slot)).ok()) {
          return with_context(lmdb_.path(), s);
        }
      }
      if (is_late(e, it->second)) {
        ++lost;
        continue;
      }
      it->second = format::SlotOrder{e.incarnation, e.generation, e.time_ns, e.ended};
    }
    if (e.kind == format::kEventRecovered) {
      // A takeover is recorded before its CAS (DeathLog), so racing waiters
      // and retried CASes may record one death more than once: keep the first.
      bool duplicate = false;
      if (s = first_recovery(txn, e, &duplicate); !s.ok()) return s;
      if (duplicate) continue;
    }
    std::string name;
    if (s = names.lock(e, &name); !s.ok()) return s;
    out.emplace_back(name, from_entry(e, ring_.writer_name(q.segment, q.index), name));
  }

  // New drain positions: each segment's first event still waiting. Events
  // overwritten while being read are lost, with whatever still waits before
  // them (a later batch could not read those either).
  uint64_t taken = 0;
  bool rest_left = false;
  uint64_t oldest_undrained = realtime_ns();
  for (uint32_t k = 0; k < segments; ++k) {
    uint64_t to = merger.first_left(k, ends[k]);
    lost += nfailed[k];
    if (failed[k] > to) {
      lost += merger.left_below(k, failed[k] - 1);
      to = failed[k];
    }
    taken += to - states[k].drained;
    rest_left |= to < heads[k];
    if (to != states[k].drained) {
      states[k].drained = to;
      if (s = txn.put(db.meta, format::segment_state_key(k), format::encode_segment_state(states[k])); !s.ok()) {
        return s;
      }
    }
    format::RingEntry e;
    if (to < heads[k] && ring_read(ring_.entries(k), uint32_t(capacity), to, &e) == RingRead::complete) {
      oldest_undrained = std::min(oldest_undrained, e.time_ns);
    }
  }
  if (lost > 0) {
    const std::string key = format::encode_u64_key(next_seq++);
    if (s = txn.append(db.history, key, format::encode_history_record(lost_record(lost))); !s.ok()) return s;
  }
  for (auto& [name, rec] : out) {
    const std::string key = format::encode_u64_key(next_seq++);
    if (s = txn.append(db.history, key, format::encode_history_record(rec)); !s.ok()) return s;
    if (!name.empty()) {
      if (s = txn.append(db.history_by_name, name, key, MDB_APPENDDUP); !s.ok()) return s;
    }
  }
  *drained_out += out.size();
  for (const auto& [slot, o] : order) {
    if (s = txn.put(db.meta, format::slot_order_key(slot), format::encode_slot_order(o)); !s.ok()) return s;
  }
  // Accounted: every event taken from a segment (stored, lost, or a repeat of
  // a recovery), every one lapped, every one of a thread without a segment.
  if (s = txn.put_u64(format::kMetaAccounted, accounted + taken + lapped + (unsegmented - unsegmented_seen));
      !s.ok()) {
    return s;
  }
  if (s = txn.put_u64(format::kMetaNextSeq, next_seq); !s.ok()) return s;
  if (s = txn.put_u64(format::kMetaLostTotal, lost_total + lost); !s.ok()) return s;
  if (s = txn.put_u64(format::kMetaUnsegmentedSeen, unsegmented); !s.ok()) return s;
  if (s = apply_retention(txn); !s.ok()) return s;
  if (s = prune_graveyard(txn, oldest_undrained); !s.ok()) return s;
  crash_point("drain:before_commit");
  if (s = txn.commit(); !s.ok()) return s;
  for (uint32_t k = 0; k < segments; ++k) {
    ring_.note_drained(k, states[k].drained);
    ring_.free_if_drained(k, states[k].drained);
  }
  *done = !rest_left;
  *stuck = rest_left && taken == 0;
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Reading.
// ---------------------------------------------------------------------------
Status HistoryStore::query(const HistoryQuery& q, std::vector<Event>* events) {
  events->clear();
  const uint32_t level = ring_.level();
  if (level == format::kHistoryPersisted) {
    uint64_t n = 0;
    if (Status s = drain(&n); !s.ok()) return s;
  }
  const Dbis& db = lmdb_.dbi();
  Txn txn(lmdb_, false);
  Status s = txn.begin();
  if (!s.ok()) return s;

  std::vector<Event> out;
  // Level "ring": the events not drained live only in the ring; read what it
  // still holds, merged as a drain would, numbered after the stored ones,
  // after one `lost` event for what it no longer holds (as a drain stores it).
  if (level == format::kHistoryRing) {
    uint64_t next_seq = 1;
    if (s = txn.get_u64(format::kMetaNextSeq, &next_seq, 1); !s.ok()) return s;
    const uint32_t segments = ring_.segment_count();
    const uint64_t capacity = ring_.capacity();
    uint64_t lost = 0;
    if (s = lost_undrained(txn, &lost); !s.ok()) return s;
    Merger merger(segments);
    for (uint32_t k = 0; k < segments; ++k) {
      format::SegmentState st;
      if (s = read_state(txn, k, &st); !s.ok()) return s;
      const uint64_t head = ring_.head(k);
      for (uint64_t i = std::max(st.drained, head > capacity ? head - capacity : 0); i < head; ++i) {
        format::RingEntry e;
        if (ring_read(ring_.entries(k), uint32_t(capacity), i, &e) == RingRead::complete) {
          merger.add(k, i, e);
        } else {
          ++lost;  // overwritten while being read
        }
      }
    }
    if (lost > 0) {
      Event ev = to_event(next_seq++, lost_record(lost));
      if (matches(q, ev)) out.push_back(std::move(ev));
    }
    Names names(txn);
    for (Queued qd; merger.next(&qd);) {
      std::string name;
      if (s = names.lock(qd.entry, &name); !s.ok()) return s;
      Event ev = to_event(next_seq++, from_entry(qd.entry, ring_.writer_name(qd.segment, qd.index), name));
      if (matches(q, ev)) out.push_back(std::move(ev));
    }
  }

  // The stored records, older than the ring's. With a limit only the newest
  // are wanted: read backwards from the last until enough match, rather than
  // decode a million records to keep ten.
  const size_t wanted = q.limit == 0 ? SIZE_MAX : q.limit > out.size() ? q.limit - out.size() : 0;
  const bool backward = q.limit != 0;
  size_t taken = 0;
  Status bad;
  // Decodes one stored record; false when enough are taken, or (with `bad`
  // set) when it is malformed.
  auto take = [&](std::string_view key, std::string_view value) {
    uint64_t seq = 0;
    if (!format::decode_u64_key(key, &seq)) {
      bad = Status(Code::corrupt, fmt::format("{}: history key of {} bytes", lmdb_.path(), key.size()));
      return false;
    }
    if (backward && seq <= q.after_seq) return false;
    format::HistoryRecord r;
    bad = with_context(lmdb_.path(), format::decode_history_record(value, &r, seq));
    if (!bad.ok()) return false;
    Event e = to_event(seq, r);
    if (matches(q, e)) {
      out.push_back(std::move(e));
      ++taken;
    }
    return taken < wanted;
  };
  if (wanted == 0) {
    // The ring's events are enough.
  } else if (q.name) {  // through the name index
    auto by_seq = [&](std::string_view, std::string_view seq_key) {
      std::string_view v;
      bool found = false;
      if (bad = txn.get(db.history, seq_key, &v, &found); !bad.ok()) return false;
      return !found || take(seq_key, v);
    };
    s = backward ? txn.for_each_duplicate_backward(db.history_by_name, *q.name, by_seq)
                 : txn.for_each_duplicate(db.history_by_name, *q.name, by_seq);
  } else if (backward) {
    s = txn.for_each_backward(db.history, take);
  } else {
    std::string from = q.after_seq > 0 ? format::encode_u64_key(q.after_seq + 1) : std::string();
    s = txn.for_each(db.history, take, from);
  }
  if (!s.ok()) return s;
  if (!bad.ok()) return bad;

  std::sort(out.begin(), out.end(), [](const Event& a, const Event& b) { return a.seq < b.seq; });
  if (q.limit > 0 && out.size() > q.limit) out.erase(out.begin(), out.end() - ptrdiff_t(q.limit));
  if (q.newest_first) std::reverse(out.begin(), out.end());
  *events = std::move(out);
  return Status::OK();
}

Status HistoryStore::counts(HistoryCounts* c) {
  *c = HistoryCounts{};
  Txn txn(lmdb_, false);
  Status s = txn.begin();
  if (!s.ok()) return s;
  uint64_t seen = 0, lost_now = 0;
  if (s = txn.get_u64(format::kMetaAccounted, &c->accounted, 0); !s.ok()) return s;
  if (s = txn.get_u64(format::kMetaLostTotal, &c->lost, 0); !s.ok()) return s;
  if (s = txn.get_u64(format::kMetaUnsegmentedSeen, &seen, 0); !s.ok()) return s;
  if (s = lost_undrained(txn, &lost_now); !s.ok()) return s;
  c->lost += lost_now;
  uint64_t undrained = std::atomic_ref<uint64_t>(file_.header()->unsegmented_lost).load(std::memory_order_relaxed) - seen;
  for (uint32_t k = 0; k < ring_.segment_count(); ++k) {
    format::SegmentState st;
    if (s = read_state(txn, k, &st); !s.ok()) return s;
    undrained += ring_.head(k) - st.drained;
    c->segments_in_use += guess128(&ring_.segment(k)->ident).lo != 0;
  }
  c->appended = c->accounted + undrained;
  return Status::OK();
}

Status HistoryStore::set_level(HistoryLevel level) {
  if (uint32_t(level) > format::kMaxHistoryLevel) {
    return Status(Code::invalid_argument, "history level must be off, ring or persisted");
  }
  __atomic_store_n(&file_.header()->history_level, uint32_t(level), __ATOMIC_RELEASE);
  return Status::OK();
}

Status HistoryStore::set_retention(uint64_t count, uint64_t age_s) {
  Txn txn(lmdb_, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  if (s = txn.put_u64(format::kMetaRetentionCount, count); !s.ok()) return s;
  if (s = txn.put_u64(format::kMetaRetentionAge, age_s); !s.ok()) return s;
  return txn.commit();
}

void HistoryStore::start_background(std::chrono::milliseconds interval) {
  drainer_ = std::make_unique<std::thread>([this, interval] {
    std::unique_lock<std::mutex> lock(drainer_mu_);
    while (!drainer_stop_) {
      drainer_cv_.wait_for(lock, interval, [this] { return drainer_stop_; });
      if (drainer_stop_) break;
      lock.unlock();
      uint64_t n = 0;
      (void)drain(&n);
      lock.lock();
    }
  });
}

void HistoryStore::stop_background() {
  if (!drainer_ || !drainer_->joinable()) return;
  {
    std::lock_guard<std::mutex> lock(drainer_mu_);
    drainer_stop_ = true;
  }
  drainer_cv_.notify_all();
  drainer_->join();
  drainer_.reset();
  uint64_t n = 0;
  (void)drain(&n);  // what the last period left in the ring
}

}  // namespace locktable::detail
