/* cache.c — placeholder until the module lands (see cache.h). */
#include "cache.h"
