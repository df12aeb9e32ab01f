#!/bin/sh
# Installs the browser that the browser tests drive (test/helpers/browser.ts): Debian's `chromium`, at
# /usr/bin/chromium (COMMY_CHROMIUM names another binary). playwright-core drives it; Playwright's own browser
# download is not used (it needs the internet).
#
#   sh scripts/install-browser.sh              install it, or fail saying why (.ci/run, or by hand)
#   sh scripts/install-browser.sh --if-able    npm's pretest: install it when root (or password-less sudo)
#                                              with apt-get, else only say so and succeed: the other tests
#                                              still run, and the browser tests fail naming this script
set -eu

browser="${COMMY_CHROMIUM:-/usr/bin/chromium}"
mode="${1:-}"

if [ -x "$browser" ]; then
  exit 0
fi

cannot() {
  echo "commy: $1; the browser tests need Debian's chromium at $browser: run 'sh scripts/install-browser.sh' as root (apt-get install chromium), or set COMMY_CHROMIUM to a Chromium binary" >&2
  if [ "$mode" = "--if-able" ]; then exit 0; fi
  exit 1
}

if [ -n "${COMMY_CHROMIUM:-}" ]; then
  cannot "COMMY_CHROMIUM=$COMMY_CHROMIUM is not an executable file"
fi
if ! command -v apt-get >/dev/null 2>&1; then
  cannot "no apt-get on this machine"
fi
if [ "$(id -u)" = 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root="sudo -n"
else
  cannot "installing chromium needs root"
fi

# Waits for dpkg's lock rather than failing when another install runs on the machine.
install() {
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 chromium
}

echo "commy: installing Debian's chromium for the browser tests (apt-get)"
# The package lists may be missing or stale on a fresh machine: update them only when the install needs it.
if ! install; then
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -o DPkg::Lock::Timeout=600
  install || cannot "apt-get install chromium failed"
fi
[ -x "$browser" ] || cannot "apt-get installed chromium, but $browser is not there"
echo "commy: $("$browser" --version 2>/dev/null || echo chromium) at $browser"
