/* relay.h — the message-level data path between a client and its server: statement tracking, prepared statements
 * across pooled servers, cache hits and fills, and write-through invalidation. */
#ifndef PARLEY_RELAY_H
#define PARLEY_RELAY_H
#include "common.h"

#endif
