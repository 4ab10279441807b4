// recover: the operator's repair pass.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

#include "liveness.h"
#include "lock_protocol.h"
#include "maintenance.h"
#include "reader_records.h"
#include "slot_lifecycle.h"
#include "slot_state.h"

namespace locktable::detail {

namespace {

// Temporary files of table creators that died before linking the table.
void remove_dead_creators_files(int dirfd, bool dry_run, std::vector<Recovery>* actions) {
  int fd = ::dup(dirfd);
  if (fd < 0) return;
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return;
  }
  const std::string prefix = std::string(kTableFileName) + ".tmp.";
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind(prefix, 0) != 0) continue;
    unsigned pid = 0, tid = 0;
    if (std::sscanf(n.c_str() + prefix.size(), "%u.%u", &pid, &tid) != 2) continue;
    if (thread_liveness(pid, tid, 0) != Liveness::dead && ::kill(pid_t(pid), 0) == 0) continue;
    if (!dry_run) ::unlinkat(dirfd, n.c_str(), 0);
    actions->push_back(Recovery{"", 0, Mode::exclusive, Owner{pid, tid, 0},
                                fmt::format("{} leftover file {}", dry_run ? "would remove" : "removed", n)});
  }
  ::closedir(d);
}

const char* freed_action(Mode mode, bool dry_run) {
  if (mode == Mode::shared) return dry_run ? "would free reader" : "freed reader";
  return dry_run ? "would free" : "freed";
}

}  // namespace

Status recover_table(const TableParts& t, bool dry_run, std::vector<Recovery>* actions) {
  actions->clear();
  if (Status s = t.lmdb.reader_check(); !s.ok()) return s;

  std::vector<Freed> freed;
  const uint64_t slots = t.file.slot_capacity();
  for (uint64_t i = 0; i < slots; ++i) {
    if (format::Slot* sl = t.file.slot(i)) recover_slot(sl, uint32_t(i), dry_run, &freed, t.log);
  }
  recover_readers(t.file, dry_run, &freed, t.log);  // each told to the DeathLog before its CAS

  // A write transaction excludes removals in progress, so a retired slot whose
  // name still exists is a removal that died before its commit.
  Txn txn(t.lmdb, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  for (const Freed& f : freed) {
    format::Slot* sl = t.file.slot(f.slot);
    std::string name;
    if (s = name_of_slot(txn, f.slot, sl ? load_incarnation(sl) : 0, &name); !s.ok()) return s;
    actions->push_back(Recovery{name, f.slot, f.mode, f.dead_owner, freed_action(f.mode, dry_run)});
  }
  s = txn.for_each(t.lmdb.dbi().names, [&](std::string_view name, std::string_view value) {
    format::NameRecord rec;
    if (!format::decode_name_record(value, &rec, name).ok()) return true;  // `check` reports it
    format::Slot* sl = t.file.slot(rec.slot);
    if (sl == nullptr || load_incarnation(sl) != rec.incarnation || !slot_is_retired(sl)) return true;
    if (!dry_run) unretire_slot(sl, rec.incarnation);
    actions->push_back(Recovery{std::string(name), rec.slot, Mode::exclusive, Owner{},
                                dry_run ? "would restore (removal never committed)"
                                        : "restored (removal never committed)"});
    return true;
  });
  if (!s.ok()) return s;
  txn.abort();
  remove_dead_creators_files(t.dirfd, dry_run, actions);
  return Status::OK();
}

}  // namespace locktable::detail
