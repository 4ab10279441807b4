// recover and check: the operator's repair and verification passes over one
// mapped table (recover.cc, check.cc).
#pragma once

#include <string>
#include <vector>

#include "death_log.h"
#include "lmdb_env.h"
#include "locktable/types.h"
#include "name_map.h"
#include "table_file.h"

namespace locktable::detail {

// The pieces of an open mapped table the passes work on.
struct TableParts {
  const std::string& dir;  // the folder, for messages
  int dirfd;               // the folder, open
  TableFile& file;
  LmdbEnv& lmdb;
  NameMap& names;
  DeathLog& log;           // takeovers, appended before their CAS
};

// Frees the locks of dead holders and removes dead readers (the next acquirer
// is still told "abandoned"), un-retires slots of removals that never
// committed, and removes creators' temporary files left by dead processes.
// With dry_run, only reports.
Status recover_table(const TableParts& t, bool dry_run, std::vector<Recovery>* actions);

// Verifies the header, the slots, the reader records, the LMDB name map and
// the history records against each other; one line per inconsistency (at
// most 1000). The status is an error only when the check itself cannot run.
Status check_table(const TableParts& t, std::vector<std::string>* problems);

}  // namespace locktable::detail
