/* metrics.c — placeholder until the module lands (see metrics.h). */
#include "metrics.h"
