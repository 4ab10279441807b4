#include "locktable/table.h"

#include <fmt/format.h>

#include "table_core.h"

namespace locktable {

Status validate_name(std::string_view name) {
  if (name.empty()) return Status(Code::invalid_argument, "lock name is empty");
  if (name.size() > 255) {
    return Status(Code::invalid_argument, fmt::format("lock name is {} bytes long; the limit is 255", name.size()));
  }
  if (name.find('\0') != std::string_view::npos) {
    return Status(Code::invalid_argument, "lock name contains a NUL byte");
  }
  return Status::OK();
}

Status Table::open(const std::string& dir, const Options& options, std::unique_ptr<Table>* table) {
  std::shared_ptr<detail::TableCore> core;
  Status s = detail::TableCore::open(dir, options, &core);
  if (!s.ok()) return s;
  table->reset(new Table(std::move(core)));
  return Status::OK();
}

Table::Table(std::shared_ptr<detail::TableCore> core) : core_(std::move(core)) {}
Table::~Table() = default;

const std::string& Table::dir() const { return core_->dir(); }

Status Table::lookup(std::string_view name, Lock* lock, Lookup mode) { return core_->lookup(core_, name, mode, lock); }
Status Table::lookup(const std::vector<std::string>& names, std::vector<Lock>* locks, Lookup mode) {
  return core_->lookup_many(core_, names, mode, locks);
}
Status Table::remove(std::string_view name) { return core_->remove(name); }
Status Table::list(std::vector<LockInfo>* locks) { return core_->list(locks); }
Status Table::stats(TableStats* stats) { return core_->stats(stats); }
Status Table::recover(bool dry_run, std::vector<Recovery>* actions) { return core_->recover(dry_run, actions); }
Status Table::check(std::vector<std::string>* problems) { return core_->check(problems); }

Status Table::drain_history(uint64_t* drained) {
  uint64_t n = 0;
  Status s = core_->drain(&n, false);
  if (drained) *drained = n;
  return s;
}

Status Table::history(const HistoryQuery& query, std::vector<Event>* events) { return core_->history(query, events); }
Status Table::set_history_level(HistoryLevel level) { return core_->set_history_level(level); }
Status Table::set_retention(uint64_t count, std::chrono::seconds age) {
  return core_->set_retention(count, uint64_t(age.count()));
}

}  // namespace locktable
