/* metrics.h — the Prometheus endpoint: an HTTP listener (libevent evhttp) serving /metrics and /healthz. */
#ifndef PARLEY_METRICS_H
#define PARLEY_METRICS_H
#include "common.h"
#include <event2/event.h>

/* Starts listening on metrics_listen_addr:metrics_port (port 0: disabled). Returns 0, or -1 with a logged error. */
int metrics_start(struct event_base *base, const char *addr, int port) MUST_CHECK;
void metrics_stop(void);

#endif
