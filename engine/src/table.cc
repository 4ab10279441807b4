// Table: every call goes to the backend the location chose.
#include "locktable/table.h"

#include <unistd.h>

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "backend.h"
#include "backend_registry.h"

namespace locktable {

Status detail::used_after_fork(const std::string& location, int opener) {
  return Status(Code::unsupported, fmt::format("{}: opened by process {}, used in process {} after fork(): open the "
                                               "table again in the child",
                                               location, opener, ::getpid()));
}

namespace {
// A century: a longer interval or timeout is for ever. Clamped to it, every
// conversion to nanoseconds and every addition to a clock's now() stays in
// range (milliseconds::max() as drain_interval made the drainer's wait_for
// wrap into the past: it drained without pause, a core's worth).
constexpr std::chrono::milliseconds kForever = std::chrono::hours(24 * 366 * 100);
}  // namespace

Status Table::open(const std::string& location, const Options& given, std::unique_ptr<Table>* table) {
  if (given.retention_age.count() < 0) {
    return Status(Code::invalid_argument, fmt::format("{}: negative retention_age", location));
  }
  Options options = given;
  options.drain_interval = std::min(options.drain_interval, kForever);
  options.deadlock_timeout = std::min(options.deadlock_timeout, kForever);
  std::shared_ptr<detail::Backend> backend;
  Status s = detail::open_backend(location, options, &backend);
  if (!s.ok()) return s;
  table->reset(new Table(std::move(backend)));
  return Status::OK();
}

Table::Table(std::shared_ptr<detail::Backend> backend) : backend_(std::move(backend)) {}
Table::~Table() = default;

const std::string& Table::dir() const { return backend_->location(); }

Status Table::lookup(std::string_view name, Lock* lock, Lookup mode) {
  return backend_->lookup(backend_, name, mode, lock);
}
Status Table::lookup(const std::vector<std::string>& names, std::vector<Lock>* locks, Lookup mode) {
  return backend_->lookup_many(backend_, names, mode, locks);
}
Status Table::remove(std::string_view name) { return backend_->remove(name); }

namespace {

// The requests' indices in the canonical order (by name); an error when a
// request is not a handle of `backend` or names a lock twice.
Status canonical_order(const detail::Backend* backend, const std::vector<LockRequest>& requests,
                       std::vector<size_t>* order) {
  order->resize(requests.size());
  std::iota(order->begin(), order->end(), size_t{0});
  for (const LockRequest& r : requests) {
    if (r.lock == nullptr || !r.lock->valid()) return Status(Code::invalid_argument, "acquire_all: an empty lock handle");
    if (detail::LockAccess::backend(*r.lock) != backend) {
      return Status(Code::invalid_argument,
                    fmt::format("acquire_all: lock {} belongs to another table", quote_name(r.lock->name())));
    }
  }
  std::sort(order->begin(), order->end(),
            [&](size_t a, size_t b) { return requests[a].lock->name() < requests[b].lock->name(); });
  for (size_t i = 1; i < order->size(); ++i) {
    const std::string& name = requests[(*order)[i]].lock->name();
    if (name == requests[(*order)[i - 1]].lock->name()) {
      return Status(Code::invalid_argument, fmt::format("acquire_all: lock {} listed twice", quote_name(name)));
    }
  }
  return Status::OK();
}

}  // namespace

AcquireAllResult Table::acquire_all(const std::vector<LockRequest>& requests, Deadline deadline) {
  AcquireAllResult out;
  std::vector<size_t> order;
  if (out.status = canonical_order(backend_.get(), requests, &order); !out.status.ok()) return out;
  out.tokens.assign(requests.size(), 0);
  std::vector<size_t> taken;
  for (size_t i : order) {
    AcquireResult r = requests[i].lock->acquire(requests[i].mode, deadline);
    if (!r.held()) {
      for (auto it = taken.rbegin(); it != taken.rend(); ++it) (void)requests[*it].lock->release(requests[*it].mode);
      out.abandoned.clear();
      out.dead_owners.clear();
      out.tokens.clear();
      out.status = std::move(r.status);
      return out;
    }
    if (r.abandoned()) out.abandoned.push_back(i), out.dead_owners.push_back(r.dead_owner);
    out.tokens[i] = r.token;
    taken.push_back(i);
  }
  std::vector<size_t> by_request(out.abandoned.size());  // sort abandoned, dead_owners along
  std::iota(by_request.begin(), by_request.end(), size_t{0});
  std::sort(by_request.begin(), by_request.end(), [&](size_t a, size_t b) { return out.abandoned[a] < out.abandoned[b]; });
  std::vector<size_t> abandoned;
  std::vector<Owner> dead;
  for (size_t k : by_request) abandoned.push_back(out.abandoned[k]), dead.push_back(out.dead_owners[k]);
  out.abandoned = std::move(abandoned);
  out.dead_owners = std::move(dead);
  if (!out.abandoned.empty()) {
    std::string names;
    for (size_t i : out.abandoned) names += (names.empty() ? "" : ", ") + quote_name(requests[i].lock->name());
    out.status = Status(Code::abandoned, fmt::format("acquire_all: taken over from dead holders: {}; repair, then "
                                                     "mark_consistent() each",
                                                     names));
  }
  return out;
}

Status Table::release_all(const std::vector<LockRequest>& requests) {
  std::vector<size_t> order;
  if (Status s = canonical_order(backend_.get(), requests, &order); !s.ok()) return s;
  Status first;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Status s = requests[*it].lock->release(requests[*it].mode);
    if (!s.ok() && first.ok()) first = std::move(s);
  }
  return first;
}

Status Table::list(std::vector<LockInfo>* locks, ListScope scope, std::string_view prefix) {
  locks->clear();
  return backend_->list_each(
      [locks](const LockInfo& info) {
        locks->push_back(info);
        return Status::OK();
      },
      scope, prefix);
}
Status Table::list(const std::function<Status(const LockInfo&)>& visit, ListScope scope, std::string_view prefix) {
  return backend_->list_each(visit, scope, prefix);
}

Status Table::stats(TableStats* stats) { return backend_->stats(stats); }
Status Table::recover(bool dry_run, std::vector<Recovery>* actions) { return backend_->recover(dry_run, actions); }
Status Table::check(std::vector<std::string>* problems) { return backend_->check(problems); }

Status Table::drain_history(uint64_t* drained) {
  uint64_t n = 0;
  Status s = backend_->drain_history(&n);
  if (drained) *drained = n;
  return s;
}
Status Table::history(const HistoryQuery& query, std::vector<Event>* events) {
  return backend_->history(query, events);
}
Status Table::set_history_level(HistoryLevel level) { return backend_->set_history_level(level); }
Status Table::set_retention(uint64_t count, std::chrono::seconds age) {
  if (age.count() < 0) return Status(Code::invalid_argument, fmt::format("{}: negative retention age", dir()));
  return backend_->set_retention(count, age);
}

}  // namespace locktable
