// The lock implementations the benchmark compares: locktable and the locks
// its users would pick instead. Each lives where it would in real use: in a
// file-backed shared mapping, or as file locks.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace bench {

class LockImpl {
 public:
  virtual ~LockImpl() = default;
  virtual const char* name() const = 0;
  // Whether a crashed holder's lock becomes available at all.
  virtual bool recovers() const { return true; }
  virtual bool has_shared() const { return false; }

  // Before forking: create the shared state for `locks` locks in `dir`.
  virtual void setup(const std::string& dir, int locks) = 0;
  // In each process that uses the locks (after fork): open what it needs.
  virtual void attach() {}
  // The same, for a program that opens its locks once and then forks its
  // workers, which inherit them: setup_inherited() opens them in the parent,
  // attach_inherited() in each child only finishes what fork does not carry.
  virtual void setup_inherited(const std::string& dir, int locks) { setup(dir, locks); }
  virtual void attach_inherited() { attach(); }
  // Returns false if the lock was acquired abandoned-or-not is irrelevant here;
  // only failures abort the benchmark.
  virtual void lock(int i) = 0;
  virtual void unlock(int i) = 0;
  virtual void lock_shared(int) {}
  virtual void unlock_shared(int) {}
};

// All implementations, by name. "locktable_history" is locktable with the
// history persisted (and drained by a background thread).
std::vector<std::string> impl_names();
std::unique_ptr<LockImpl> make_impl(const std::string& name);

}  // namespace bench
