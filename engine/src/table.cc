// Table: every call goes to the backend the location chose.
#include "locktable/table.h"

#include "backend.h"
#include "backend_registry.h"

namespace locktable {

Status Table::open(const std::string& location, const Options& options, std::unique_ptr<Table>* table) {
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

Status Table::list(std::vector<LockInfo>* locks) {
  locks->clear();
  return backend_->list_each([locks](const LockInfo& info) {
    locks->push_back(info);
    return Status::OK();
  });
}
Status Table::list(const std::function<Status(const LockInfo&)>& visit) { return backend_->list_each(visit); }

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
Status Table::set_retention(uint64_t count, std::chrono::seconds age) { return backend_->set_retention(count, age); }

}  // namespace locktable
