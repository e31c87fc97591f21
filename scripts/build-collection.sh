#!/usr/bin/env bash
# Build the collection tarball (offsite-backup-<version>.tar.gz) from the files git tracks.
#
#   scripts/build-collection.sh [output directory, default: the current directory]
#
# Prints the path of the tarball. Works from any cwd; needs git and ansible-galaxy ($VENV's, by
# default the checkout's .venv, else the one on PATH).
#
# Why not `ansible-galaxy collection build` in the checkout: build_ignore (galaxy.yml) can only
# name patterns, so every file it does not know lands in the tarball: a secrets file, a scratch
# dump, a virtualenv under another name. Here only tracked files are copied (with their working
# tree content, so local edits are built) into a temporary directory, and the build runs there;
# build_ignore then drops what is tracked but not for users (tests, bench, scripts, CI files).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(realpath -m "${1:-.}")"
VENV="${VENV:-$REPO/.venv}"
GALAXY="$VENV/bin/ansible-galaxy"
[ -x "$GALAXY" ] || GALAXY="$(command -v ansible-galaxy)" || {
    echo "build-collection: ansible-galaxy not found (run scripts/bootstrap.sh)" >&2; exit 2; }

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$OUT"

# tracked files that exist in the work tree (a tracked file deleted but not yet committed is left out)
git -C "$REPO" ls-files -z --cached \
    | (cd "$REPO" && while IFS= read -r -d '' path; do [ -f "$path" ] && printf '%s\0' "$path"; done) \
    | tar -C "$REPO" --null --files-from=- -cf - \
    | tar -C "$STAGE" -xf -

"$GALAXY" collection build "$STAGE" --output-path "$OUT" --force >&2
namespace="$(sed -n 's/^namespace: *//p' "$STAGE/galaxy.yml")"
name="$(sed -n 's/^name: *//p' "$STAGE/galaxy.yml")"
version="$(sed -n 's/^version: *//p' "$STAGE/galaxy.yml")"
echo "$OUT/$namespace-$name-$version.tar.gz"
