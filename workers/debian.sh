# Debian helpers shared by workers/provision.sh and workers/images/build.sh (sourced, not run).
#
#   debian_codename                 this machine's release (bookworm, trixie, ...)
#   debian_mirror                   the first Debian mirror of the system's apt sources for this release
#   trixie_download DIR LOG PKG...  download Debian 13's packages PKG into DIR/deb with a private apt
#                                   configuration (its own sources list, lists and cache under DIR), so the
#                                   system's sources, lists and cache stay untouched; apt's output goes to LOG
#
# DOCKYARD_DEBIAN_MIRROR overrides the mirror. Debian 12 has no docker-buildx, an old
# docker-compose (v1) and no docker-cli package; Debian 13's packages of them are Go programs
# that run on Debian 12 too (docs/deploying.md).

debian_codename() { (. /etc/os-release && echo "${VERSION_CODENAME:-}"); }

# First Debian mirror in the system's apt sources whose suite is this release
# (one-line sources.list and deb822 *.sources formats).
debian_mirror() {
    if [ -n "${DOCKYARD_DEBIAN_MIRROR:-}" ]; then echo "$DOCKYARD_DEBIAN_MIRROR"; return; fi
    local codename f uri=""
    codename=$(debian_codename)
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        case $f in
            *.sources)
                uri=$(awk -v want="$codename" '
                    function flush() {
                        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") &&
                            (" " comps " ") ~ / main / && enabled != "no" && uri != "")
                            { print uri; found = 1; exit }
                        types = suites = comps = uri = enabled = ""
                    }
                    /^[ \t]*$/ { flush(); next }
                    /^#/ { next }
                    { key = tolower($1); $1 = ""; sub(/^ +/, "") }
                    key == "types:" { types = $0 } key == "suites:" { suites = $0 }
                    key == "components:" { comps = $0 } key == "uris:" { split($0, u, " "); uri = u[1] }
                    key == "enabled:" { enabled = tolower($0) }
                    END { if (!found) flush() }' "$f") ;;
            *)
                uri=$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
                    awk -v want="$codename" '$1 == "deb" && $3 == want {
                        for (i = 4; i <= NF; i++) if ($i == "main") { print $2; exit } }') ;;
        esac
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
}

# Download Debian 13 (trixie) packages with a private apt configuration under DIR.
# The lists are fetched once per DIR; the .deb files land in DIR/deb.
trixie_download() {  # trixie_download DIR LOG PACKAGE...
    local dir=$1 logfile=$2 mirror; shift 2
    mirror=$(debian_mirror)
    if [ -z "$mirror" ]; then
        echo "no Debian mirror found in /etc/apt sources; set DOCKYARD_DEBIAN_MIRROR" >&2
        return 1
    fi
    mkdir -p "$dir"/{lists/partial,cache/archives/partial,prefs.d,deb}
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$dir/sources.list"
    local apt=(apt-get -q
        -o "Dir::Etc::sourcelist=$dir/sources.list" -o Dir::Etc::sourceparts=-
        -o "Dir::Etc::preferencesparts=$dir/prefs.d"
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache"
        -o APT::Sandbox::User=root)
    if ! ls "$dir"/lists/*_Packages* >/dev/null 2>&1; then
        "${apt[@]}" update >>"$logfile" 2>&1 </dev/null || { tail -n 20 "$logfile" >&2; return 1; }
    fi
    (cd "$dir/deb" && "${apt[@]}" download "$@" >>"$logfile" 2>&1 </dev/null) || { tail -n 20 "$logfile" >&2; return 1; }
}
