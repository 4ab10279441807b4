// metrics: every lock's counters and state in the Prometheus text exposition
// format (version 0.0.4), one family after another, each with its HELP and
// TYPE lines, as `promtool check metrics` expects.
#include <fmt/format.h>

#include <cstdio>

#include "cli.h"
#include "commands.h"

namespace cli {

using namespace locktable;

namespace {

// A label value: the name as escape_name prints it (printable ASCII), with
// Prometheus' escapes for backslash, double quote and newline.
std::string label_value(std::string_view name) {
  std::string out;
  for (char c : escape_name(name)) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

struct Row {
  std::string label;
  LockCounters counters;
  bool held = false;
  uint32_t holders = 0;
  uint32_t waiters = 0;
};

struct Family {
  const char* name;
  const char* type;
  const char* help;
  std::string (*value)(const Row&);
};

std::string seconds(uint64_t ns) { return fmt::format("{:.6f}", double(ns) / 1e9); }

const Family kFamilies[] = {
    {"locktable_exclusive_acquisitions_total", "counter",
     "Exclusive acquisitions of the lock since its name was created.",
     [](const Row& r) { return std::to_string(r.counters.exclusive_acquisitions); }},
    {"locktable_shared_acquisitions_total", "counter",
     "Shared holds of the lock that ended since its name was created (a downgraded one too).",
     [](const Row& r) { return std::to_string(r.counters.shared_acquisitions); }},
    {"locktable_contended_acquisitions_total", "counter", "Acquisitions (either mode) that found the lock held and waited.",
     [](const Row& r) { return std::to_string(r.counters.contended); }},
    {"locktable_timeouts_total", "counter", "Acquires that gave up at their deadline.",
     [](const Row& r) { return std::to_string(r.counters.timeouts); }},
    {"locktable_abandoned_acquisitions_total", "counter",
     "Acquisitions told abandoned: taken over from a dead holder, or not yet marked consistent.",
     [](const Row& r) { return std::to_string(r.counters.abandoned); }},
    {"locktable_wait_seconds_total", "counter", "Time spent waiting for the lock, acquisitions and timeouts together.",
     [](const Row& r) { return seconds(r.counters.wait_total_ns); }},
    {"locktable_wait_seconds_max", "gauge", "The longest single wait for the lock.",
     [](const Row& r) { return seconds(r.counters.wait_max_ns); }},
    {"locktable_held", "gauge", "1 while the lock is held (exclusive or shared), else 0.",
     [](const Row& r) { return std::string(r.held ? "1" : "0"); }},
    {"locktable_holders", "gauge", "Threads holding the lock.",
     [](const Row& r) { return std::to_string(r.holders); }},
    {"locktable_waiters", "gauge", "Threads waiting for the lock.",
     [](const Row& r) { return std::to_string(r.waiters); }},
};

}  // namespace

void register_metrics(CLI::App& app, int* rc) {
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "metrics", "Print every lock's counters and state in the Prometheus text format (for a textfile collector)");
  cmd->add_option("DIR", *dir, kLocationHelp)->required();
  cmd->footer("Counters count since the name was created (etcd tables keep none: they read 0).");
  cmd->callback([dir, rc] {
    std::unique_ptr<Table> t;
    Status s = open_table(*dir, false, &t);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    std::vector<Row> rows;
    s = t->list([&](const LockInfo& l) {
      Row r;
      r.label = label_value(l.name);
      r.counters = l.counters;
      r.held = l.state != LockState::free;
      r.holders = uint32_t(l.holders.size());
      r.waiters = std::max<uint32_t>(l.waiters, uint32_t(l.waiting.size()));
      rows.push_back(std::move(r));
      return Status::OK();
    });
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    std::string out;
    out += "# HELP locktable_names Named locks in the table.\n# TYPE locktable_names gauge\n";
    out += fmt::format("locktable_names {}\n", rows.size());
    for (const Family& f : kFamilies) {
      out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", f.name, f.help, f.name, f.type);
      for (const Row& r : rows) {
        out += fmt::format("{}{{lock=\"{}\"}} {}\n", f.name, r.label, f.value(r));
        if (out.size() > (1u << 20)) {
          std::fputs(out.c_str(), stdout);
          out.clear();
        }
      }
    }
    std::fputs(out.c_str(), stdout);
  });
}

}  // namespace cli
