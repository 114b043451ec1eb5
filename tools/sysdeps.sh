#!/usr/bin/env bash
# Check the system packages Bastion's device sandbox, tests and demo need.
# As root with apt-get, install what is missing; otherwise stop at once and
# print the exact command to run. Used by `make demo`, `make test` and .ci/run.
set -euo pipefail

# command-or-file  ->  Debian package
declare -A NEEDS=(
    [bwrap]=bubblewrap
    [setpriv]=util-linux
    [openssl]=openssl
    [mosquitto]=mosquitto
    [mosquitto_sub]=mosquitto-clients
    [lib:libseccomp.so.2]=libseccomp2
)
missing=()
for need in "${!NEEDS[@]}"; do
    case "$need" in
        lib:*) ldconfig -p 2>/dev/null | grep -q "${need#lib:}" || missing+=("${NEEDS[$need]}") ;;
        *) command -v "$need" >/dev/null 2>&1 || [ -x "/usr/sbin/$need" ] || missing+=("${NEEDS[$need]}") ;;
    esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
cmd="apt-get update && apt-get install -y --no-install-recommends $pkgs"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "sysdeps: installing $pkgs" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    exit 0
fi
echo "sysdeps: missing system packages: $pkgs" >&2
echo "sysdeps: run as root:  $cmd" >&2
exit 1
