// Where the time of the scale scenario goes (README, "Against the targets"):
// the same random pairs on one locktable table of many names, done whole, or
// with the next pair's handle and slot prefetched one pair ahead, or as bare
// 16-byte CAS pairs on the same slots (through the handles, and from a
// compact array of slot pointers), and the robust mutexes of the scenario's
// peer, all in one run. A probe of the machine, not a lock: the prefetches
// and bare CASes use the library's internals.
#pragma once

namespace bench {

// Prints ns per pair for each variant (median of `runs` interleaved runs of
// `seconds`), `procs` processes on a table of `names` names, history off.
int run_scale_probe(int names, int procs, int runs, double seconds);

}  // namespace bench
