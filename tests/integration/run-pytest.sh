#!/bin/sh
# run-pytest.sh — run parley's integration tests (pytest) under Debian's /usr/bin/python3, which has
# python3-psycopg, python3-psycopg2 and python3-pytest (the python3 first on PATH may not).
# make check runs it from the build directory with PARLEY_BIN and PARLEY_SRCDIR set; by hand:
#   tests/integration/run-pytest.sh [pytest args]                              # tests ./parley
#   PARLEY_TEST_TARGET=pgbouncer tests/integration/run-pytest.sh -x -q         # tests /usr/sbin/pgbouncer
# See tests/integration/harness.py for the other environment variables.
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 -m pytest -v -p no:cacheprovider "$(dirname "$0")" "$@"
