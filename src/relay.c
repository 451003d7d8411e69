/* relay.c — placeholder until the message-level data path lands (see relay.h). */
#include "relay.h"
