#!/usr/bin/env bash
# Build the control plane image from deploy/Containerfile:  deploy/build-image.sh [TAG]
#
# BASE=<image>  build on that image (e.g. docker.io/library/python:3.11-slim-bookworm,
#               the Containerfile's default) and make nothing else.
# BASE unset    build on a Debian base made here from Debian's packages with mmdebstrap
#               (apt-get install mmdebstrap): for hosts that reach a Debian mirror but
#               no container registry. It is imported once as localhost/muto-base:<suite>-
#               <recipe hash> and reused; REFRESH_BASE=1 makes it again (security updates).
# DEBIAN_MIRROR  a mirror URL or sources file for mmdebstrap (default: deb.debian.org,
#               with bookworm-updates and security).
# PIP_CERT      a CA bundle pip must trust (a TLS-intercepting proxy's): handed to the
#               build as the secret pip-cert, not stored in the image.
# PODMAN        the podman command (default podman), configured by the environment.
# Prints the base it used, then the image's tag and id as its last line.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

tag=${1:-localhost/muto-cloud:latest}
podman=${PODMAN:-podman}

# Bookworm's python3 is 3.11, the version muto needs. python3-venv: the Containerfile's
# venv; passwd: its useradd; ca-certificates: TLS to PostgreSQL and the broker.
suite=bookworm
packages=python3,python3-venv,ca-certificates,passwd
mmdebstrap_args=(
  --variant=essential
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr  # merged /usr without usrmerge (and perl)
  "--include=$packages"
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
)

debian_base() {
  local recipe hash ref tmp
  recipe="$suite ${mmdebstrap_args[*]} ${DEBIAN_MIRROR:-}"
  hash=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
  ref="localhost/muto-base:$suite-$hash"
  if [ "${REFRESH_BASE:-0}" != 1 ] && "$podman" image exists "$ref"; then
    echo "$ref"
    return
  fi
  command -v mmdebstrap >/dev/null || {
    echo "mmdebstrap not installed (apt-get install mmdebstrap), or set BASE=<image>" >&2
    exit 1
  }
  SECONDS=0
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: $tmp is local
  trap "rm -rf '$tmp'" RETURN
  # shellcheck disable=SC2086  # DEBIAN_MIRROR: zero or one word
  mmdebstrap --quiet "${mmdebstrap_args[@]}" "$suite" "$tmp/root.tar" ${DEBIAN_MIRROR:-} >&2
  "$podman" import --quiet \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "Debian $suite: $packages (deploy/build-image.sh)" \
    "$tmp/root.tar" "$ref" >&2
  echo "made $ref in ${SECONDS} s" >&2
  echo "$ref"
}

if [ -n "${BASE:-}" ]; then base=$BASE; else base=$(debian_base); fi
echo "base: $base"
build=(--build-arg "BASE=$base")
if [ -n "${PIP_CERT:-}" ]; then build+=(--secret "id=pip-cert,src=$PIP_CERT"); fi
SECONDS=0
"$podman" build "${build[@]}" -f deploy/Containerfile -t "$tag" . >&2
echo "built $tag in ${SECONDS} s" >&2
echo "$tag $("$podman" image inspect --format '{{.Id}}' "$tag")"
