#!/usr/bin/env bash
# scripts/debian-mirror.sh reads the Debian mirror from apt's sources in both forms
# (one-line and deb822), skips -security and -updates suites and disabled stanzas, lets
# DEBIAN_MIRROR win, and says what to set when there is none.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/debian-mirror.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
expect() { # what, expected, got
  if [ "$2" = "$3" ]; then echo "     $1: $3"; else echo "FAIL $1: expected '$2', got '$3'" >&2; failed=1; fi
}

printf 'deb [arch=amd64 signed-by=/k] http://one.example/debian bookworm-updates main\n# deb http://no.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k] http://two.example/debian/ bookworm main\n' >"$work/a.list"
printf 'Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n\nTypes: deb-src deb\n# a comment\nURIs: http://three.example/debian\nSuites: trixie trixie-updates\nComponents: main' >"$work/b.sources"
printf 'Types: deb\nURIs: http://off.example/debian\nSuites: trixie\nEnabled: no\n' >"$work/c.sources"

expect "one-line form, options, -updates skipped, trailing / dropped" http://two.example/debian "$(debian_mirror "$work/a.list")"
expect "deb822 form, -security skipped, the last stanza without a blank line after it" http://three.example/debian "$(debian_mirror "$work/b.sources")"
expect "a disabled stanza skipped" http://three.example/debian "$(debian_mirror "$work/c.sources" "$work/b.sources")"
expect "DEBIAN_MIRROR wins" http://mine.example/debian "$(DEBIAN_MIRROR=http://mine.example/debian/ debian_mirror "$work/a.list")"
if message=$(debian_mirror "$work/c.sources" 2>&1); then
  echo "FAIL no mirror: expected a failure, got '$message'" >&2; failed=1
else
  expect "no mirror: what to set" yes "$(grep -q 'set DEBIAN_MIRROR' <<<"$message" && echo yes)"
fi
exit "$failed"
