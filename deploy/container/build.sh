#!/usr/bin/env bash
# Builds the pgwarden container image from deploy/container/Dockerfile
# without pulling anything from a registry: the binary is built here with
# CGO_ENABLED=0 and copied, with the host's CA bundle, into a FROM scratch
# image.
#
#   deploy/container/build.sh [-t IMAGE] [--builder podman|buildah|docker]
#
# IMAGE defaults to pgwarden:<version> (the version in pooler/server.go), also
# tagged pgwarden:latest when -t is not given. The builder is the first of
# podman, buildah and docker found, unless named. Environment:
#   GO         the go command (default: go)
#   CA_BUNDLE  the PEM CA bundle to copy (default: the Debian/Ubuntu or
#              Fedora/RHEL system bundle, whichever exists)
# Prints the image name last.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
go="${GO:-go}"

image=""
builder=""
while [ $# -gt 0 ]; do
	case "$1" in
	-t | --tag) image="$2"; shift 2 ;;
	--builder) builder="$2"; shift 2 ;;
	-h | --help) sed -n '2,15p' "$0"; exit 0 ;;
	*) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done

version="$(sed -n 's/^var Version = "\(.*\)"$/\1/p' "$root/pooler/server.go")"
extra_tag=""
if [ -z "$image" ]; then
	image="pgwarden:${version:-dev}"
	extra_tag="pgwarden:latest"
fi

if [ -z "$builder" ]; then
	for b in podman buildah docker; do
		if command -v "$b" >/dev/null 2>&1; then builder="$b"; break; fi
	done
fi
if [ -z "$builder" ]; then
	echo "build.sh: no podman, buildah or docker found (Debian: apt-get install podman)" >&2
	exit 1
fi

ca="${CA_BUNDLE:-}"
if [ -z "$ca" ]; then
	for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
		if [ -s "$f" ]; then ca="$f"; break; fi
	done
fi
if [ -z "$ca" ] || [ ! -s "$ca" ]; then
	echo "build.sh: no CA bundle found; install ca-certificates or set CA_BUNDLE" >&2
	exit 1
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT

# Static, reproducible-ish: no cgo (pure Go DNS resolver and user lookups),
# no local paths, no symbol table.
(cd "$root" && CGO_ENABLED=0 "$go" build -trimpath -ldflags='-s -w' -o "$ctx/pgwarden" ./cmd/pgwarden)
cp "$ca" "$ctx/ca-certificates.crt"
cp "$here/Dockerfile" "$here/passwd" "$here/group" "$here/pooler.yaml" "$ctx/"
chmod 0644 "$ctx/ca-certificates.crt" "$ctx/passwd" "$ctx/group" "$ctx/pooler.yaml"
chmod 0755 "$ctx/pgwarden"

labels=(
	--label "org.opencontainers.image.title=pgwarden"
	--label "org.opencontainers.image.description=PgBouncer-compatible PostgreSQL connection pooler with Microsoft Entra ID sign-in"
	--label "org.opencontainers.image.version=$version"
)
if rev="$(git -C "$root" rev-parse HEAD 2>/dev/null)"; then
	labels+=(--label "org.opencontainers.image.revision=$rev")
fi

case "$builder" in
podman | docker)
	"$builder" build "${labels[@]}" -t "$image" -f "$ctx/Dockerfile" "$ctx" >&2
	;;
buildah)
	buildah bud "${labels[@]}" -t "$image" -f "$ctx/Dockerfile" "$ctx" >&2
	;;
*)
	echo "build.sh: unknown builder $builder" >&2
	exit 2
	;;
esac
if [ -n "$extra_tag" ]; then
	"$builder" tag "$image" "$extra_tag" >&2
fi
echo "$image"
