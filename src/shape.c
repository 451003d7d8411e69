/* shape.c — placeholder until the module lands (see shape.h). */
#include "shape.h"
