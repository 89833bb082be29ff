#!/bin/sh
# The Debian packages the tests drive, installed when missing (`make test` runs this first): chromium for the
# browser tests, postgresql for the production instance and the daemon tests. As root (CI, containers) it installs
# them; with password-less sudo, through sudo; otherwise it says the one command to run, and fails.
set -eu
missing=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -z "$missing" ] && exit 0
install="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$missing"
echo "tests: installing Debian's$missing (the browser and instance tests drive them)"
if [ "$(id -u)" -eq 0 ]; then
  sh -c "$install" >/dev/null
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo sh -c "$install" >/dev/null
else
  echo "tests: cannot install them without root. Run this once, then \`make test\` again:" >&2
  echo "  sudo apt-get install -y --no-install-recommends$missing" >&2
  exit 1
fi
