# Sourced by setup-system.sh: reads the system's own apt sources, so that the
# backports source is derived from them and no package-mirror host is named here.
# Both deb822 (*.sources) and one-line (sources.list, *.list) formats are read.

# apt's configuration directory (overridable for the script's own test).
apt_etc=${PETSERVE_APT_ETC:-/etc/apt}

# Prints "URIS KEYRING" of the first apt source (deb822 *.sources or one-line *.list)
# that carries suite $1; KEYRING is empty when the source names none.
debian_source_of() {
  local suite=$1 f
  for f in "$apt_etc"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: stanzas separated by blank lines; take URIs/Signed-By of a deb stanza
    # whose Suites list contains the suite.
    awk -v want="$suite" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uris != "") {
          print uris, keyring; found = 1; exit
        }
        types = ""; suites = ""; uris = ""; keyring = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $1 }
      /^Signed-By:/ { sub(/^Signed-By:[[:space:]]*/, ""); keyring = $1 }
      END { if (!found) flush() }
    ' "$f" | head -n1 | grep . && return 0
  done
  for f in "$apt_etc"/sources.list "$apt_etc"/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # one-line: deb [options] URI SUITE COMPONENTS...
    awk -v want="$suite" '
      $1 == "deb" {
        i = 2; keyring = ""
        if ($2 ~ /^\[/) {
          while (i <= NF) { if ($i ~ /signed-by=/) { k = $i; sub(/.*signed-by=/, "", k); sub(/\].*$/, "", k); keyring = k }
                            if ($i ~ /\]$/) { i++; break } i++ }
        }
        if ($(i + 1) == want) { print $i, keyring; exit }
      }
    ' "$f" | head -n1 | grep . && return 0
  done
  return 1
}

# True when some apt source already carries suite $1.
apt_has_suite() {
  debian_source_of "$1" >/dev/null
}
