// locktable: persistent, crash-aware named interprocess locks for Linux.
//
//   #include <locktable/locktable.h>
//
//   std::unique_ptr<locktable::Table> table;
//   locktable::Status s = locktable::Table::open("/var/lib/app/locks", {}, &table);
//   locktable::Lock orders;
//   s = table->lookup("orders", &orders);
//   locktable::AcquireResult r = orders.acquire();
//   if (r.abandoned()) { repair(); (void)orders.mark_consistent(); }
//   ...
//   s = orders.release();
#pragma once

#include "locktable/lock.h"
#include "locktable/status.h"
#include "locktable/table.h"
#include "locktable/types.h"
