#!/usr/bin/env bash
# deps.sh - install the Debian 12 packages weft needs, and only those missing.
#
# Idempotent: asks dpkg-query which packages are not installed; when all are,
# it prints nothing and touches nothing. Otherwise it runs `apt-get update`
# once and installs the missing ones without recommends, quietly, then prints
# one line naming them. Uses sudo only when not root. Never prompts apt.
#
# libunwind-dev is named explicitly: LLVM's libunwind-14-dev provides the
# same headers and conflicts with it, and only the former has libunwind.pc.
set -euo pipefail

pkgs=(
    build-essential meson ninja-build pkg-config python3
    libunwind-dev libdw-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev
    libuv1-dev golang-go valgrind wrk hey curl panicparse prometheus clang
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
)

missing=()
for p in "${pkgs[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

if ((EUID == 0)); then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
fi

log=$(mktemp "${TMPDIR:-/tmp}/weft-deps.XXXXXX")
trap 'rm -f "$log"' EXIT
if ! { "${sudo[@]}" apt-get update -q &&
       "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -q --no-install-recommends "${missing[@]}"; \
     } </dev/null >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "deps: apt-get failed installing: ${missing[*]}" >&2
    exit 1
fi
echo "deps: installed ${missing[*]}"
