// locktable-bench --etcd: the etcd backend against etcd's own lock service
// on a single-member etcd it starts itself (etcd_mode.cc).
#pragma once

namespace bench {

// Prints one Markdown table; 1 when etcd cannot be started or a case failed.
int run_etcd_mode(bool quick);

}  // namespace bench
