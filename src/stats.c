/* stats.c — placeholder until the module lands (see stats.h). */
#include "stats.h"
