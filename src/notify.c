/* notify.c — placeholder until the invalidation feed lands (see notify.h). */
#include "notify.h"
#include "parley.h"

void notify_apply_config(const struct parley_config *cfg)
{
	(void)cfg;
}

void notify_shutdown(void)
{
}

bool notify_cache_usable(const struct pool *p)
{
	(void)p;
	return true;
}

void notify_foreach(bool (*fn)(const struct notify_status *st, void *arg), void *arg)
{
	(void)fn;
	(void)arg;
}
