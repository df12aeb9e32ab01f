#!/bin/sh
# Installs the Redis that the Redis tests start, one a test (test/helpers/redis.ts; the cluster tests): Debian's
# `redis-server`, on PATH (COMMY_REDIS_SERVER names another binary: a path, or a name on PATH). The benches'
# Redis peers use it too. How: scripts/apt-install.sh, shared with install-browser.sh.
#
#   sh scripts/install-redis.sh              install it, or fail saying why (.ci/run, or by hand)
#   sh scripts/install-redis.sh --if-able    npm's pretest: install it when root (or password-less sudo)
#                                            with apt-get, else only say so and succeed: the other tests
#                                            still run, and the Redis tests fail naming this script
set -eu
exec sh "$(dirname "$0")/apt-install.sh" redis-server redis-server "the Redis tests" COMMY_REDIS_SERVER "${1:-}"
