#!/bin/sh
# Installs the browser that the browser tests drive (test/helpers/browser.ts): Debian's `chromium`, at
# /usr/bin/chromium (COMMY_CHROMIUM names another binary). playwright-core drives it; Playwright's own browser
# download is not used (it needs the internet). How: scripts/apt-install.sh, shared with install-redis.sh.
#
#   sh scripts/install-browser.sh              install it, or fail saying why (.ci/run, or by hand)
#   sh scripts/install-browser.sh --if-able    npm's pretest: install it when root (or password-less sudo)
#                                              with apt-get, else only say so and succeed: the other tests
#                                              still run, and the browser tests fail naming this script
set -eu
exec sh "$(dirname "$0")/apt-install.sh" chromium /usr/bin/chromium "the browser tests" COMMY_CHROMIUM "${1:-}"
