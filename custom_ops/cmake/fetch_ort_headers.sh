#!/usr/bin/env bash
# Download Debian 13 (trixie) libonnxruntime-dev with a private apt state and unpack it into $1.
# The system's apt sources and package database are left untouched.
set -euo pipefail
dest=${1:?usage: fetch_ort_headers.sh DEST}
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/sources" "$state/lists/partial" "$state/cache/archives/partial" "$dest"
: >"$state/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$state/sources/trixie.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: $keyring
SRC
apt_opts=(
  -q -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$state/sources"
  -o "Dir::State::Lists=$state/lists" -o "Dir::State::status=$state/status"
  -o "Dir::Cache=$state/cache" -o Dir::Etc::Preferences=/dev/null
  -o Dir::Etc::PreferencesParts=/dev/null -o APT::Architecture=amd64
  -o Acquire::Languages=none
)
# As root, apt drops to the _apt user, which cannot write our private folders.
if [ "$(id -u)" = 0 ]; then apt_opts+=(-o APT::Sandbox::User=root); fi
apt-get "${apt_opts[@]}" update >/dev/null
(cd "$state" && apt-get "${apt_opts[@]}" download libonnxruntime-dev >/dev/null)
dpkg -x "$state"/libonnxruntime-dev_*.deb "$dest"
test -f "$dest/usr/include/onnxruntime/onnxruntime_c_api.h"
