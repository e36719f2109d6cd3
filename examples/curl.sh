#!/bin/sh
# credential-broker from a shell script: curl and POSIX sh, no jq.
#
#   curl.sh get [json|uri|jdbc|keyvalue|env]  print the credentials in that format (default json)
#   curl.sh env                               PGHOST=... PGPASSWORD=... lines plus BROKER_VERSION_ID,
#                                             for eval
#   curl.sh version                           print the current version id (from the ETag header)
#   curl.sh refresh VERSION_ID                after a login with VERSION_ID failed: ask the broker
#                                             to fetch again, print the version id now current
#
# Environment: BROKER_URL (default http://127.0.0.1:2775), BROKER_TOKEN_FILE or BROKER_TOKEN,
# BROKER_DB. Everything but `version` and `refresh` prints the password: never log that output.
# A 503 (overloaded, credentials_expired) is retried by curl, which honours Retry-After (bounded
# by --retry and --retry-max-time). Any other error prints the broker's error code and exits 1.
#
# The retry-once pattern with psql:
#   eval "$(curl.sh env)"; export PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD
#   psql -c 'SELECT 1' || {
#     curl.sh refresh "$BROKER_VERSION_ID" >/dev/null && eval "$(curl.sh env)" && psql -c 'SELECT 1'
#   }
set -eu

die() { echo "curl.sh: $*" >&2; exit 1; }

url=${BROKER_URL:-http://127.0.0.1:2775}
url=${url%/}
db=${BROKER_DB:?set BROKER_DB}
if [ -n "${BROKER_TOKEN_FILE:-}" ]; then
  token=$(cat "$BROKER_TOKEN_FILE")
else
  token=${BROKER_TOKEN:-}
fi
# Trim surrounding whitespace, as the broker does with its token file.
token=$(printf '%s' "$token" | tr -d ' \t\r\n')
[ -n "$token" ] || die "set BROKER_TOKEN_FILE or BROKER_TOKEN"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The token goes to curl in a file, not on its command line (where `ps` would show it).
umask 077
printf 'Authorization: Bearer %s\n' "$token" > "$tmp/auth"

# request METHOD PATH [curl options...]: the body lands in $tmp/body, the headers in
# $tmp/headers; fails with the broker's error code unless the answer is 2xx.
request() {
  method=$1 path=$2
  shift 2
  status=$(curl --silent --show-error --noproxy '*' --max-time 10 \
    --retry 5 --retry-max-time 30 \
    -H "@$tmp/auth" -X "$method" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' \
    "$@" "$url$path") || die "broker unreachable at $url"
  case $status in
    2??) ;;
    *)
      code=$(sed -n 's/.*"code":"\([^"]*\)".*/\1/p' "$tmp/body")
      die "broker answered $status ${code:-unknown}"
      ;;
  esac
}

# The version id from the last answer's ETag ("<version_id>").
etag() {
  sed -n 's/^[Ee][Tt][Aa][Gg]:[[:space:]]*"\([^"]*\)".*/\1/p' "$tmp/headers" | tail -n 1
}

case ${1:-} in
  get)
    request GET "/credentials/$db?format=${2:-json}"
    cat "$tmp/body"
    ;;
  env)
    request GET "/credentials/$db?format=env"
    cat "$tmp/body"
    printf "BROKER_VERSION_ID='%s'\n" "$(etag | sed "s/'/'\\\\''/g")"
    ;;
  version)
    request GET "/credentials/$db"
    etag
    ;;
  refresh)
    [ -n "${2:-}" ] || die "usage: curl.sh refresh VERSION_ID"
    request POST "/credentials/$db/refresh" -H "If-Match: \"$2\""
    etag
    ;;
  *)
    die "usage: curl.sh get [json|uri|jdbc|keyvalue|env] | env | version | refresh VERSION_ID"
    ;;
esac
