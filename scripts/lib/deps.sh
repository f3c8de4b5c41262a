# shellcheck shell=bash
# Installs missing Debian packages. Sourced by scripts/test.sh and
# scripts/sandbox.sh.
#
#   ensure_packages COMMAND:PACKAGE ...
#
# For each pair whose COMMAND is not on PATH (or in /usr/sbin), installs
# PACKAGE with apt-get when running as root; otherwise prints what to
# install and returns 1.

ensure_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "carbide: missing packages: ${missing[*]}" >&2
    echo "carbide: install them first:  sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  echo "carbide: installing ${missing[*]} (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # Debian's maintainer scripts try to start the packaged server; we run our
  # own instances, so keep apt from starting (and leaving) a system one.
  local had_policy=0
  if [ -e /usr/sbin/policy-rc.d ]; then had_policy=1; else
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  local rc=$?
  [ $had_policy -eq 1 ] || rm -f /usr/sbin/policy-rc.d
  return $rc
}

# The packages every part of carbide's tooling uses.
CARBIDE_PACKAGES=(
  mariadbd:mariadb-server
  mariadb:mariadb-client
  setpriv:util-linux
)
