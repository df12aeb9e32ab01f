#!/bin/sh
# Installs a Debian package that tests need, with apt-get, when its program is missing: the one way
# scripts/install-browser.sh (chromium) and scripts/install-redis.sh (redis-server) install theirs.
#
#   sh scripts/apt-install.sh <package> <binary> <what-for> <env-var> [--if-able]
#
#   <binary>     the package's program: a path (/usr/bin/chromium), or a name looked up on PATH (redis-server)
#   <what-for>   who needs it, for the messages ("the browser tests")
#   <env-var>    the variable that may name another binary (COMMY_CHROMIUM): when set, that one is used, and a
#                missing one is an error, not something to install
#   --if-able    install when root (or password-less sudo) with apt-get, else only say so and succeed: the other
#                tests still run, and the ones that need the program fail naming its install script
set -eu

package="$1"
what_for="$3"
env_var="$4"
mode="${5:-}"
named="$(printenv "$env_var" || true)"
binary="${named:-$2}"

# A path must be an executable file there; a bare name, a program on PATH.
case "$binary" in
  */*) where="at $binary"; missing="is not an executable file" ;;
  *) where="on PATH"; missing="is not a program on PATH" ;;
esac
present() {
  case "$binary" in
    */*) [ -x "$binary" ] ;;
    *) command -v "$binary" >/dev/null 2>&1 ;;
  esac
}

if present; then
  exit 0
fi

cannot() {
  echo "commy: $1; $what_for need Debian's $package $where: install it as root (apt-get install $package), or set $env_var to another $package binary" >&2
  if [ "$mode" = "--if-able" ]; then exit 0; fi
  exit 1
}

if [ -n "$named" ]; then
  cannot "$env_var=$named $missing"
fi
if ! command -v apt-get >/dev/null 2>&1; then
  cannot "no apt-get on this machine"
fi
if [ "$(id -u)" = 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root="sudo -n"
else
  cannot "installing $package needs root"
fi

# Waits for dpkg's lock rather than failing when another install runs on the machine.
install() {
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 "$package"
}

echo "commy: installing Debian's $package for $what_for (apt-get)"
# The package lists may be missing or stale on a fresh machine: update them only when the install needs it.
if ! install; then
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -o DPkg::Lock::Timeout=600
  install || cannot "apt-get install $package failed"
fi
present || cannot "apt-get installed $package, but $binary $missing"
echo "commy: $("$binary" --version 2>/dev/null || echo "$package") at $(command -v "$binary")"
