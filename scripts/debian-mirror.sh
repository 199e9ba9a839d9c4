# shellcheck shell=bash
# The Debian mirror to fetch from: DEBIAN_MIRROR when set, else the one apt is configured
# with (its sources: /etc/apt/sources.list and /etc/apt/sources.list.d/, one-line and
# deb822 forms), the first `deb` source of a release suite (not -security or -updates).
# Sourced by scripts/setup.sh and tests/deploy/compose_images.sh; the project names no
# package host of its own.

debian_mirror() { # [sources file...] (default: apt's)
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    printf '%s\n' "${DEBIAN_MIRROR%/}"
    return 0
  fi
  local files=() uri="" f
  if [ $# -gt 0 ]; then
    files=("$@")
  else
    [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] && files+=("$f")
    done
  fi
  if [ ${#files[@]} -gt 0 ]; then
    uri=$(awk '
      # One-line form: deb [options] URI SUITE COMPONENT...
      FILENAME !~ /\.sources$/ && $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) !~ /-/) { print $i; exit }
        next
      }
      # deb822 form: stanzas of Field: value, separated by blank lines (a new file ends
      # the stanza before it).
      FNR == 1 && NR > 1 { stanza() }
      FILENAME ~ /\.sources$/ {
        if ($0 ~ /^[[:space:]]*$/) { stanza(); next }
        if ($1 == "Types:") types = $0
        if ($1 == "URIs:") uris = $2
        if ($1 == "Suites:") suites = $0
        if ($1 == "Enabled:" && $2 == "no") disabled = 1
      }
      function stanza() {
        if (!disabled && types ~ /(^|[ \t])deb([ \t]|$)/ && uris != "") {
          n = split(suites, s, /[ \t]+/)
          for (k = 2; k <= n; k++) if (s[k] != "" && s[k] !~ /-/) { print uris; found = 1; exit }
        }
        types = uris = suites = ""; disabled = 0
      }
      END { if (!found) stanza() }
    ' "${files[@]}")
  fi
  if [ -z "$uri" ]; then
    echo "no Debian mirror in apt's sources (/etc/apt/sources.list, /etc/apt/sources.list.d/): set DEBIAN_MIRROR to one, e.g. your company's mirror of the Debian archive" >&2
    return 1
  fi
  printf '%s\n' "${uri%/}"
}
