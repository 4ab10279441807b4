// init, rm, recover.
#include <fmt/format.h>

#include "cli.h"
#include "commands.h"

namespace cli {

using namespace locktable;

void register_init(CLI::App& app, int* rc) {
  struct Args {
    std::string dir;
    uint32_t slots = 64;
    uint64_t max_slots = uint64_t{1} << 24;
    uint32_t ring = locktable::Options{}.ring_entries;
    std::string history = "persisted";
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("init", "Create a table (folder mode 0770, files 0660, the umask applies)");
  cmd->add_option("DIR", a->dir, kLocationHelp)->required();
  cmd->add_option("--slots", a->slots, "Initial slot count (grows on demand)")->check(CLI::Range(1u, 1u << 30));
  cmd->add_option("--max-slots", a->max_slots, "Slot limit")->check(CLI::Range(uint64_t{8}, uint64_t{1} << 30));
  cmd->add_option("--ring", a->ring, "History ring entries (power of two)")->check(CLI::Range(64u, 1u << 24));
  cmd->add_option("--history", a->history, "History level")->check(CLI::IsMember({"off", "ring", "persisted"}));
  cmd->callback([a, rc, cmd] {
    std::unique_ptr<Table> t;
    if (open_table(a->dir, false, &t).ok()) {
      TableStats st;
      (void)t->stats(&st);
      if (st.backend == "local") fmt::print("{}: already a table ({} slots); nothing to do\n", a->dir, st.slot_capacity);
      else fmt::print("{}: already a table ({} names); nothing to do\n", a->dir, st.slots_used);
      // Creation settings asked for on an existing table are not applied: say
      // which, so that a script does not take them for done.
      std::vector<std::string> unapplied;
      const std::string level = locktable::json::level_name(st.history_level);
      if (cmd->count("--history") > 0 && a->history != level) {
        unapplied.push_back(fmt::format("--history {} (it is {})", a->history, level));
      }
      if (cmd->count("--ring") > 0 && st.backend == "local" && a->ring != st.ring_entries) {
        unapplied.push_back(fmt::format("--ring {} (it is {})", a->ring, st.ring_entries));
      }
      if (cmd->count("--max-slots") > 0 && st.backend == "local" && a->max_slots != st.max_slots) {
        unapplied.push_back(fmt::format("--max-slots {} (it is {})", a->max_slots, st.max_slots));
      }
      if (cmd->count("--slots") > 0 && st.backend == "local" && a->slots != st.slot_capacity) {
        unapplied.push_back(fmt::format("--slots {} (it has {})", a->slots, st.slot_capacity));
      }
      if (!unapplied.empty()) {
        fmt::print(stderr, "locktable: note: {} exists; not applied: {}\n", a->dir, fmt::join(unapplied, ", "));
      }
      return;
    }
    Options o;
    o.initial_slots = a->slots;
    o.max_slots = a->max_slots;
    o.ring_entries = a->ring;
    o.history = a->history == "off" ? HistoryLevel::off : a->history == "ring" ? HistoryLevel::ring
                                                                                 : HistoryLevel::persisted;
    Status s = open_table(a->dir, true, &t, o);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    TableStats st;
    (void)t->stats(&st);
    if (st.backend == "local") {
      fmt::print("{}: created a table with {} slots (grows up to {})\n", a->dir, st.slot_capacity, st.max_slots);
    } else {
      fmt::print("{}: created a table ({} backend)\n", a->dir, st.backend);
    }
  });
}

void register_rm(CLI::App& app, int* rc) {
  struct Args {
    std::string dir, name;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("rm", "Remove a named lock that nobody holds");
  cmd->add_option("DIR", a->dir, kLocationHelp)->required();
  cmd->add_option("NAME", a->name, "Lock name")->required();
  cmd->callback([a, rc] {
    std::unique_ptr<Table> t;
    Status s = open_table(a->dir, false, &t);
    if (s.ok()) s = t->remove(a->name);
    if (!s.ok()) *rc = fail(s);
  });
}

void register_recover(CLI::App& app, int* rc) {
  struct Args {
    std::string dir;
    bool dry_run = false;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "recover", "Free locks whose holders are dead (the next acquirer is still told 'abandoned') and repair "
                 "what crashed processes left half-done");
  cmd->add_option("DIR", a->dir, kLocationHelp)->required();
  cmd->add_flag("--dry-run", a->dry_run, "Only report what would be done");
  cmd->add_flag("--json", a->json, "Print a JSON array");
  cmd->callback([a, rc] {
    std::unique_ptr<Table> t;
    Status s = open_table(a->dir, false, &t);
    std::vector<Recovery> actions;
    if (s.ok()) s = t->recover(a->dry_run, &actions);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    if (a->json) {
      nlohmann::json out = nlohmann::json::array();
      for (const Recovery& r : actions) {
        out.push_back(locktable::json::recovery(r));
      }
      fmt::print("{}\n", out.dump(2));
      return;
    }
    if (actions.empty()) {
      fmt::print("nothing to recover\n");
      return;
    }
    std::vector<std::vector<std::string>> rows;
    for (const Recovery& r : actions) {
      rows.push_back({escape_name(r.name), r.name.empty() ? "-" : std::to_string(r.slot), locktable::json::mode_name(r.mode),
                      fmt::format("{}/{}", r.dead_owner.pid, r.dead_owner.tid), r.action});
    }
    print_table({"NAME", "SLOT", "MODE", "DEAD PID/TID", "ACTION"}, rows);
  });
}

}  // namespace cli
