# Shared helpers for Berth's scripts: sourced, never run.
# shellcheck shell=bash
BERTH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BERTH_CACHE=${BERTH_CACHE:-$HOME/.cache/berth}
export BERTH_ROOT BERTH_CACHE
mkdir -p "$BERTH_CACHE/bin"
# shellcheck source=versions.env
source "$BERTH_ROOT/scripts/versions.env"

# step NAME CMD...: runs CMD, printing how long it took; fails the script when CMD fails.
step() {
  local name=$1; shift
  local start=$SECONDS
  echo "==> $name"
  if "$@"; then
    echo "<== $name: ok in $((SECONDS - start))s"
  else
    local rc=$?
    echo "<== $name: FAILED (exit $rc) after $((SECONDS - start))s"
    return "$rc"
  fi
}

# apt_install PKG...: installs the Debian packages that are missing (quietly, idempotent).
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  if [ ! -f /var/lib/apt/lists/.berth-updated ] || [ -n "$(find /var/lib/apt/lists/.berth-updated -mmin +1440)" ]; then
    apt-get update -qq && touch /var/lib/apt/lists/.berth-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
