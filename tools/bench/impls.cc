#include "impls.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <stdexcept>

#include "locktable/locktable.h"

namespace bench {

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "locktable-bench: %s\n", what.c_str());
  std::_Exit(3);
}

// A file-backed shared mapping, as a lock living "in a shared file" would be.
void* map_file(const std::string& path, size_t bytes, bool create) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0), 0660);
  if (fd < 0) die(path + ": open failed");
  if (create && ::ftruncate(fd, off_t(bytes)) != 0) die(path + ": ftruncate failed");
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) die(path + ": mmap failed");
  return p;
}

// An array of T in a file-backed shared mapping: created and initialised
// before the fork, mapped again by each process after it.
template <class T>
class MappedArray {
 public:
  template <class Init>
  void create(const std::string& path, int n, Init init) {
    path_ = path;
    n_ = n;
    T* a = static_cast<T*>(map_file(path_, bytes(), true));  // zero-filled
    for (int i = 0; i < n; ++i) init(&a[i]);
    ::munmap(a, bytes());
  }
  void create(const std::string& path, int n) {
    create(path, n, [](T*) {});
  }
  void attach() { a_ = static_cast<T*>(map_file(path_, bytes(), false)); }
  T& operator[](int i) { return a_[i]; }

 private:
  size_t bytes() const { return sizeof(T) * size_t(n_); }
  std::string path_;
  int n_ = 0;
  T* a_ = nullptr;
};

// ---------------------------------------------------------------------------
// locktable with history off, ring-only (appends, never drained) or persisted
// (drained into LMDB by a background thread every 100 ms).
class LocktableImpl : public LockImpl {
 public:
  explicit LocktableImpl(locktable::HistoryLevel level) : level_(level) {}
  const char* name() const override {
    switch (level_) {
      case locktable::HistoryLevel::off: return "locktable";
      case locktable::HistoryLevel::ring: return "locktable_ring";
      default: return "locktable_history";
    }
  }
  bool has_shared() const override { return true; }

  void setup(const std::string& dir, int locks) override {
    dir_ = dir + "/table";
    n_ = locks;
    locktable::Options o;
    o.history = level_;
    o.initial_slots = uint32_t(std::max(64, std::min(locks, 1 << 16)));  // bigger tables grow
    std::unique_ptr<locktable::Table> t;
    locktable::Status s = locktable::Table::open(dir_, o, &t);
    if (!s.ok()) die(s.to_string());
    const std::vector<std::string> all = names();
    for (size_t i = 0; i < all.size(); i += 10'000) {  // one write transaction per 10,000 names
      std::vector<std::string> batch(all.begin() + long(i), all.begin() + long(std::min(all.size(), i + 10'000)));
      std::vector<locktable::Lock> ls;
      if (!(s = t->lookup(batch, &ls)).ok()) die(s.to_string());
    }
  }

  // The parent keeps the table and every handle; the children use the
  // handles they inherit (table.h: Locks obtained before a fork keep working).
  void setup_inherited(const std::string& dir, int locks) override {
    setup(dir, locks);
    locktable::Status s = locktable::Table::open(dir_, {}, &table_);
    if (!s.ok()) die(s.to_string());
    if (!(s = table_->lookup(names(), &locks_, locktable::Lookup::existing)).ok()) die(s.to_string());
  }
  void attach_inherited() override {}

  void attach() override {
    locktable::Options o;
    if (level_ == locktable::HistoryLevel::persisted) o.drain_interval = std::chrono::milliseconds(100);
    locktable::Status s = locktable::Table::open(dir_, o, &table_);
    if (!s.ok()) die(s.to_string());
    if (!(s = table_->lookup(names(), &locks_, locktable::Lookup::existing)).ok()) die(s.to_string());
  }

  void lock(int i) override {
    locktable::AcquireResult r = locks_[size_t(i)].acquire();
    if (!r.held()) die(r.status.to_string());
    if (r.abandoned()) (void)locks_[size_t(i)].mark_consistent();
  }
  void unlock(int i) override {
    locktable::Status s = locks_[size_t(i)].release();
    if (!s.ok()) die(s.to_string());
  }
  void lock_shared(int i) override {
    locktable::AcquireResult r = locks_[size_t(i)].acquire(locktable::Mode::shared);
    if (!r.held()) die(r.status.to_string());
  }
  void unlock_shared(int i) override {
    locktable::Status s = locks_[size_t(i)].release(locktable::Mode::shared);
    if (!s.ok()) die(s.to_string());
  }

 private:
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (int i = 0; i < n_; ++i) out.push_back("lock" + std::to_string(i));
    return out;
  }
  locktable::HistoryLevel level_;
  std::string dir_;
  int n_ = 0;
  std::unique_ptr<locktable::Table> table_;
  std::vector<locktable::Lock> locks_;
};

// ---------------------------------------------------------------------------
class PthreadImpl : public LockImpl {
 public:
  explicit PthreadImpl(bool robust) : robust_(robust) {}
  const char* name() const override { return robust_ ? "pthread_robust" : "pthread"; }
  bool recovers() const override { return robust_; }

  void setup(const std::string& dir, int locks) override {
    // A plain array, as an application would lay out its mutexes.
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (robust_) pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    m_.create(dir + "/mutexes", locks, [&](pthread_mutex_t* m) { pthread_mutex_init(m, &a); });
  }
  void attach() override { m_.attach(); }
  void lock(int i) override {
    int rc = pthread_mutex_lock(&m_[i]);
    if (rc == EOWNERDEAD) rc = pthread_mutex_consistent(&m_[i]);
    if (rc != 0) die("pthread_mutex_lock failed");
  }
  void unlock(int i) override { pthread_mutex_unlock(&m_[i]); }

 private:
  bool robust_;
  MappedArray<pthread_mutex_t> m_;
};

// ---------------------------------------------------------------------------
class RwlockImpl : public LockImpl {
 public:
  const char* name() const override { return "pthread_rwlock"; }
  bool recovers() const override { return false; }
  bool has_shared() const override { return true; }
  void setup(const std::string& dir, int locks) override {
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    m_.create(dir + "/rwlocks", locks, [&](pthread_rwlock_t* m) { pthread_rwlock_init(m, &a); });
  }
  void attach() override { m_.attach(); }
  void lock(int i) override { pthread_rwlock_wrlock(&m_[i]); }
  void unlock(int i) override { pthread_rwlock_unlock(&m_[i]); }
  void lock_shared(int i) override { pthread_rwlock_rdlock(&m_[i]); }
  void unlock_shared(int i) override { pthread_rwlock_unlock(&m_[i]); }

 private:
  MappedArray<pthread_rwlock_t> m_;
};

// ---------------------------------------------------------------------------
class BoostImpl : public LockImpl {
  using Mutex = boost::interprocess::interprocess_mutex;

 public:
  const char* name() const override { return "boost_interprocess"; }
  bool recovers() const override { return false; }
  void setup(const std::string& dir, int locks) override {
    m_.create(dir + "/boost", locks, [](Mutex* m) { new (m) Mutex(); });
  }
  void attach() override { m_.attach(); }
  void lock(int i) override { m_[i].lock(); }
  void unlock(int i) override { m_[i].unlock(); }

 private:
  MappedArray<Mutex> m_;
};

// ---------------------------------------------------------------------------
class OfdImpl : public LockImpl {
 public:
  const char* name() const override { return "ofd_lock"; }
  bool has_shared() const override { return true; }
  void setup(const std::string& dir, int) override {
    path_ = dir + "/ofd";
    int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0660);
    if (fd < 0) die(path_ + ": open failed");
    ::close(fd);
  }
  void attach() override {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    if (fd_ < 0) die(path_ + ": open failed");
  }
  void lock(int i) override { set(i, F_WRLCK, F_OFD_SETLKW); }
  void unlock(int i) override { set(i, F_UNLCK, F_OFD_SETLK); }
  void lock_shared(int i) override { set(i, F_RDLCK, F_OFD_SETLKW); }
  void unlock_shared(int i) override { set(i, F_UNLCK, F_OFD_SETLK); }

 private:
  void set(int i, short type, int cmd) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = i;
    fl.l_len = 1;
    while (::fcntl(fd_, cmd, &fl) != 0) {
      if (errno != EINTR) die("fcntl(F_OFD_SETLK) failed");
    }
  }
  std::string path_;
  int fd_ = -1;
};

// ---------------------------------------------------------------------------
class FlockImpl : public LockImpl {
 public:
  const char* name() const override { return "flock"; }
  bool has_shared() const override { return true; }
  void setup(const std::string& dir, int locks) override {
    dir_ = dir;
    n_ = locks;
    for (int i = 0; i < locks; ++i) {
      int fd = ::open(path(i).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0660);
      if (fd < 0) die(path(i) + ": open failed");
      ::close(fd);
    }
  }
  void attach() override {
    for (int i = 0; i < n_; ++i) {
      int fd = ::open(path(i).c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) die(path(i) + ": open failed");
      fds_.push_back(fd);
    }
  }
  void lock(int i) override { op(i, LOCK_EX); }
  void unlock(int i) override { op(i, LOCK_UN); }
  void lock_shared(int i) override { op(i, LOCK_SH); }
  void unlock_shared(int i) override { op(i, LOCK_UN); }

 private:
  std::string path(int i) const { return dir_ + "/flock." + std::to_string(i); }
  void op(int i, int how) {
    while (::flock(fds_[size_t(i)], how) != 0) {
      if (errno != EINTR) die("flock failed");
    }
  }
  std::string dir_;
  int n_ = 0;
  std::vector<int> fds_;
};

// ---------------------------------------------------------------------------
// The cost floor of locktable's owner record: a lock that is only a 16-byte
// record changed by lock cmpxchg16b (owner + generation), spinning with
// sched_yield when held. No robust list, no names, no death detection.
class Cas16SpinImpl : public LockImpl {
 public:
  const char* name() const override { return "cas16_bare"; }
  bool recovers() const override { return false; }
  void setup(const std::string& dir, int locks) override { w_.create(dir + "/cas16", locks); }
  void attach() override {
    w_.attach();
    me_ = (uint64_t(::getpid()) << 32) | uint64_t(::gettid());
  }
  void lock(int i) override {
    Rec* r = &w_[i].rec;
    for (;;) {
      Rec cur{__atomic_load_n(&r->lo, __ATOMIC_ACQUIRE), __atomic_load_n(&r->hi, __ATOMIC_ACQUIRE)};
      if (cur.lo == 0 && cas(r, cur, Rec{me_, cur.hi + 1})) return;
      sched_yield();
    }
  }
  void unlock(int i) override {
    Rec* r = &w_[i].rec;
    Rec cur{me_, __atomic_load_n(&r->hi, __ATOMIC_ACQUIRE)};
    while (!cas(r, cur, Rec{0, cur.hi + 1})) {
    }
  }

 private:
  struct alignas(16) Rec {
    uint64_t lo, hi;
  };
  static bool cas(Rec* addr, Rec& expected, Rec desired) {
    bool ok;
    asm volatile("lock cmpxchg16b %1"
                 : "=@ccz"(ok), "+m"(*addr), "+a"(expected.lo), "+d"(expected.hi)
                 : "b"(desired.lo), "c"(desired.hi)
                 : "memory");
    return ok;
  }
  struct alignas(64) Line {  // a cache line per lock, as a slot
    Rec rec;
  };
  MappedArray<Line> w_;
  uint64_t me_ = 0;
};

// ---------------------------------------------------------------------------
// The seed article's design: a 64-bit pid/tid word changed by CAS; a waiter
// sleeps 1 ms between tries and clears the word if the owner's process is gone
// (which is wrong when the pid was reused, the flaw locktable fixes).
class CasSleepPollImpl : public LockImpl {
 public:
  const char* name() const override { return "cas_sleep_poll"; }
  void setup(const std::string& dir, int locks) override { w_.create(dir + "/cas", locks); }
  void attach() override {
    w_.attach();
    me_ = (uint64_t(::getpid()) << 32) | uint64_t(::gettid());
  }
  void lock(int i) override {
    for (;;) {
      uint64_t expected = 0;
      if (__atomic_compare_exchange_n(&w_[i], &expected, me_, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
      if (expected != 0 && ::kill(pid_t(expected >> 32), 0) != 0 && errno == ESRCH) {
        __atomic_compare_exchange_n(&w_[i], &expected, 0, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        continue;
      }
      timespec ts{0, 1'000'000};
      nanosleep(&ts, nullptr);
    }
  }
  void unlock(int i) override {
    uint64_t expected = me_;
    __atomic_compare_exchange_n(&w_[i], &expected, 0, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
  }

 private:
  MappedArray<uint64_t> w_;
  uint64_t me_ = 0;
};

// ---------------------------------------------------------------------------
// No lock at all: the cost of the benchmark's own loop and calls, subtracted
// from the others in --instructions.
class NullImpl : public LockImpl {
 public:
  const char* name() const override { return "none"; }
  bool has_shared() const override { return true; }
  void setup(const std::string&, int) override {}
  void lock(int) override { asm volatile("" ::: "memory"); }
  void unlock(int) override { asm volatile("" ::: "memory"); }
  void lock_shared(int) override { asm volatile("" ::: "memory"); }
  void unlock_shared(int) override { asm volatile("" ::: "memory"); }
};

}  // namespace

std::vector<std::string> impl_names() {
  return {"locktable", "locktable_ring", "locktable_history", "pthread_robust", "pthread", "boost_interprocess",
          "ofd_lock",  "flock",          "cas_sleep_poll",    "cas16_bare",      "pthread_rwlock"};
}

std::unique_ptr<LockImpl> make_impl(const std::string& name) {
  if (name == "locktable") return std::make_unique<LocktableImpl>(locktable::HistoryLevel::off);
  if (name == "locktable_ring") return std::make_unique<LocktableImpl>(locktable::HistoryLevel::ring);
  if (name == "locktable_history") return std::make_unique<LocktableImpl>(locktable::HistoryLevel::persisted);
  if (name == "pthread_robust") return std::make_unique<PthreadImpl>(true);
  if (name == "pthread") return std::make_unique<PthreadImpl>(false);
  if (name == "pthread_rwlock") return std::make_unique<RwlockImpl>();
  if (name == "boost_interprocess") return std::make_unique<BoostImpl>();
  if (name == "ofd_lock") return std::make_unique<OfdImpl>();
  if (name == "flock") return std::make_unique<FlockImpl>();
  if (name == "cas_sleep_poll") return std::make_unique<CasSleepPollImpl>();
  if (name == "cas16_bare") return std::make_unique<Cas16SpinImpl>();
  if (name == "none") return std::make_unique<NullImpl>();
  return nullptr;
}

}  // namespace bench
