#include "wait_graph.h"

#include <algorithm>
#include <atomic>
#include <unordered_map>
#include <unordered_set>

#include "atomic128.h"
#include "clock.h"
#include "liveness.h"
#include "reader_records.h"
#include "slot_state.h"

namespace locktable::detail {

namespace {

using format::ReaderState;

uint64_t thread_key(const Owner& o) { return (uint64_t{o.pid} << 32) | o.tid; }

uint64_t load_wait(const format::ReaderRecord* r) {
  return std::atomic_ref<const uint64_t>(r->waits_for).load(std::memory_order_acquire);
}

// The wait published in `r` by `waiter`, if any: false when there is none,
// or when it changed while being read (then it is not a wait on that lock).
bool read_wait(const format::ReaderRecord* r, const Owner& waiter, WaitView* v) {
  const uint64_t w = load_wait(r);
  if (!(w & format::kWaitWaiting)) return false;
  v->waiter = waiter;
  v->slot = format::wait_word_slot(w);
  v->mode = (w & format::kWaitShared) ? Mode::shared : Mode::exclusive;
  v->detects = (w & format::kWaitDetects) != 0;
  v->incarnation = __atomic_load_n(&r->incarnation, __ATOMIC_RELAXED);
  v->since_ns = __atomic_load_n(&r->acquired_at, __ATOMIC_RELAXED);
  v->word = w;
  return load_wait(r) == w;
}

// One read of the graph's published half: the waits, and the shared holders
// of each lock.
struct Snapshot {
  std::unordered_map<uint64_t, WaitView> waits;                // by thread
  std::unordered_map<uint32_t, std::vector<Owner>> readers;    // by slot: records `in` or `leaving`
};

Snapshot read_snapshot(TableFile& file) {
  Snapshot snap;
  for_each_reader(file, [&](uint64_t, format::ReaderRecord* r) {
    const Word128 id = guess128(&r->ident);
    if (id.lo == 0 || (tid_word(id) & format::kOwnerDied)) return true;  // free, or its thread died
    const Owner o = reader_owner(r, id);
    const uint64_t op = load_op(r);
    const ReaderState st = format::reader_op_state(op);
    if (format::reader_op_claim(op) == generation(id) && (st == ReaderState::in || st == ReaderState::leaving)) {
      snap.readers[format::reader_op_slot(op)].push_back(o);
    }
    if (WaitView v; read_wait(r, o, &v)) snap.waits[thread_key(o)] = v;
    return true;
  });
  return snap;
}

// What keeps a published wait waiting: the threads it waits for, and the
// lock's owner generation and readers word when they were read.
struct Blockers {
  std::vector<Owner> threads;
  uint32_t generation = 0;
  uint64_t readers = 0;
};

Blockers blockers_of(TableFile& file, const Snapshot& snap, const WaitView& v) {
  Blockers b;
  format::Slot* s = file.slot(v.slot);
  if (s == nullptr || load_incarnation(s) != v.incarnation) return b;  // the name is gone
  const Word128 cur = load128(&s->owner);
  b.generation = generation(cur);
  b.readers = load_readers(s);
  if (!is_exclusive(pid_word(cur))) return b;  // FREE: nothing keeps it waiting (it is about to get in)
  const Owner owner = exclusive_owner(s, cur);
  if (owner.pid == v.waiter.pid && owner.tid == v.waiter.tid) {
    // The owner itself, draining: it waits for the readers counted in.
    if (auto it = snap.readers.find(v.slot); it != snap.readers.end()) b.threads = it->second;
  } else if (!(tid_word(cur) & format::kOwnerDied)) {
    b.threads.push_back(owner);  // a writer, in or draining: it keeps readers and writers out
  }
  std::erase_if(b.threads, [&](const Owner& o) { return o.pid == v.waiter.pid && o.tid == v.waiter.tid; });
  return b;
}

// A path start -> ... -> start through waits, as thread keys (start first).
class CycleSearch {
 public:
  CycleSearch(TableFile& file, const Snapshot& snap) : file_(file), snap_(snap) {}

  bool from(uint64_t start, std::vector<uint64_t>* path) {
    path->assign(1, start);
    visited_.clear();
    visited_.insert(start);
    return dfs(start, start, path);
  }

  const Blockers& blockers(uint64_t thread) {
    auto it = cache_.find(thread);
    if (it != cache_.end()) return it->second;
    Blockers b;
    if (auto w = snap_.waits.find(thread); w != snap_.waits.end()) b = blockers_of(file_, snap_, w->second);
    return cache_.emplace(thread, std::move(b)).first->second;
  }

 private:
  bool dfs(uint64_t start, uint64_t at, std::vector<uint64_t>* path) {
    for (const Owner& next : blockers(at).threads) {
      const uint64_t k = thread_key(next);
      if (k == start) return true;
      if (!visited_.insert(k).second || !snap_.waits.contains(k)) continue;
      path->push_back(k);
      if (dfs(start, k, path)) return true;
      path->pop_back();
    }
    return false;
  }

  TableFile& file_;
  const Snapshot& snap_;
  std::unordered_set<uint64_t> visited_;
  std::unordered_map<uint64_t, Blockers> cache_;
};

bool blocks(const Blockers& b, uint64_t thread) {
  return std::any_of(b.threads.begin(), b.threads.end(), [&](const Owner& o) { return thread_key(o) == thread; });
}

}  // namespace

void publish_wait(format::ReaderRecord* r, uint32_t slot, uint32_t incarnation, Mode mode, bool detects) {
  static thread_local uint32_t serial = 0;
  __atomic_store_n(&r->incarnation, incarnation, __ATOMIC_RELAXED);
  __atomic_store_n(&r->acquired_at, realtime_ns(), __ATOMIC_RELAXED);
  std::atomic_ref<uint64_t>(r->waits_for)
      .store(format::make_wait_word(slot, mode == Mode::shared, detects, ++serial), std::memory_order_release);
}

void clear_wait(format::ReaderRecord* r) {
  std::atomic_ref<uint64_t>(r->waits_for).store(0, std::memory_order_release);
}

std::vector<WaitView> published_waits(TableFile& file) {
  std::vector<WaitView> out;
  for_each_reader(file, [&](uint64_t, format::ReaderRecord* r) {
    if (!(load_wait(r) & format::kWaitWaiting)) return true;
    const Word128 id = load128(&r->ident);
    if (id.lo == 0 || reader_dead(id)) return true;
    if (WaitView v; read_wait(r, reader_owner(r, id), &v)) out.push_back(v);
    return true;
  });
  return out;
}

bool deadlock_victim(TableFile& file, const ThreadSelf& me, const format::ReaderRecord* r, WaitCycle* cycle) {
  const uint64_t self = (uint64_t{me.pid} << 32) | me.tid;
  if (!(load_wait(r) & format::kWaitWaiting)) return false;

  // First read: a cycle through this thread?
  const Snapshot first = read_snapshot(file);
  if (!first.waits.contains(self)) return false;
  CycleSearch search(file, first);
  std::vector<uint64_t> path;
  if (!search.from(self, &path)) return false;

  // The victim: the last to begin waiting among the members that detect.
  auto later = [&](uint64_t a, uint64_t b) {  // a began waiting after b
    const WaitView& x = first.waits.at(a);
    const WaitView& y = first.waits.at(b);
    if (x.since_ns != y.since_ns) return x.since_ns > y.since_ns;
    return a > b;
  };
  uint64_t victim = self;
  for (uint64_t k : path) {
    if (first.waits.at(k).detects && later(k, victim)) victim = k;
  }
  if (victim != self) return false;

  // Second read: every edge still there, over the same ownership of each lock.
  const Snapshot second = read_snapshot(file);
  for (size_t i = 0; i < path.size(); ++i) {
    const uint64_t k = path[i], next = path[(i + 1) % path.size()];
    auto again = second.waits.find(k);
    const WaitView& was = first.waits.at(k);
    if (again == second.waits.end() || again->second.word != was.word || again->second.since_ns != was.since_ns) {
      return false;
    }
    const Blockers& before = search.blockers(k);
    const Blockers now = blockers_of(file, second, again->second);
    if (now.generation != before.generation || now.readers != before.readers || !blocks(before, next) ||
        !blocks(now, next)) {
      return false;
    }
    if (thread_liveness(was.waiter.pid, was.waiter.tid, was.waiter.start_time) == Liveness::dead) return false;
  }
  cycle->clear();
  for (uint64_t k : path) {
    const WaitView& v = first.waits.at(k);
    cycle->push_back(WaitEdge{v.waiter, v.slot, v.incarnation, v.mode});
  }
  return true;
}

}  // namespace locktable::detail
