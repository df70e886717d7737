#!/bin/sh
# Runs inside the fresh test container (tests/install.rs): feeds every interesting
# prefix of install.sh to `sh` and `bash` the way `curl ... | sh` would after a
# dropped connection, and checks that none of them changed anything.
#
#   truncate-check.sh /path/to/install.sh
#
# Cut points: after every newline, in the middle of every line, and at every byte
# of the last 200 (where the final call lives); not the one that drops only the final
# newline, which leaves the script complete. Acceptable outcomes: a syntax error (exit 2:
# the cut is inside the webui_install function), "not found" (exit 127: a cut inside
# a function name), or install.sh's own "incomplete" refusal (a cut inside the
# arguments on the last line). WEBUI_DOWNLOAD_URL should point at a
# server that serves a complete release, so that a prefix that did run the installer
# would really install something. Exit 0 when nothing changed; prints a summary.
set -eu

script=$1
work=/tmp/truncate-check
rm -rf "$work"
mkdir -p "$work"
size=$(wc -c <"$script")

fail() {
	printf 'truncate-check: FAIL: %s\n' "$*" >&2
	exit 1
}

[ ! -e /usr/local/bin/webui ] || fail "/usr/local/bin/webui exists before the test"
[ ! -e /etc/systemd/system/webui.service ] || fail "webui.service exists before the test"

# Cut points, one per line, sorted, unique, 0 < cut < size.
LC_ALL=C awk -v size="$size" '
	{ start = pos; pos += length($0) + 1
	  print pos; print start + int(length($0) / 2) }
	END { for (i = size - 200; i < size; i++) print i }
' "$script" | awk -v size="$size" '$1 > 0 && $1 < size - 1' | sort -n -u >"$work/cuts"
total=$(wc -l <"$work/cuts")

touch "$work/marker"
sleep 1
rc0=0
rc_syntax=0
rc_refused=0
rc_notfound=0
rc_other=0
runs=0
for shell in sh bash; do
	while read -r cut; do
		runs=$((runs + 1))
		set +e
		head -c "$cut" "$script" | "$shell" -s -- --no-docker >"$work/out" 2>&1
		rc=$?
		set -e
		# (No extra processes per run where avoidable: this loop runs ~2500 times.)
		staged=
		for f in /usr/local/bin/.webui* /etc/systemd/system/.webui*; do
			if [ -e "$f" ]; then staged=$f; fi
		done
		if [ -e /usr/local/bin/webui ] || [ -e /etc/systemd/system/webui.service ] || [ -n "$staged" ]; then
			cat "$work/out" >&2
			fail "$shell with the first $cut of $size bytes installed something"
		fi
		# Classify by exit code and message (a pure-shell scan: no grep per run).
		msg=
		last_line=
		while IFS= read -r line; do
			last_line=$line
			case $line in
			*"install script is incomplete"*) msg=refused ;;
			*[Ss]yntax\ error* | *"unexpected EOF"* | *"unexpected end of file"*) msg=syntax ;;
			*"not found"*) msg=notfound ;;
			esac
		done <"$work/out"
		case $rc:$msg in
		0:*) rc0=$((rc0 + 1)) ;;
		1:refused) rc_refused=$((rc_refused + 1)) ;;
		2:syntax) rc_syntax=$((rc_syntax + 1)) ;;
		127:notfound) rc_notfound=$((rc_notfound + 1)) ;;
		*)
			rc_other=$((rc_other + 1))
			printf 'truncate-check: note: %s, %s bytes: exit %s: %s\n' "$shell" "$cut" "$rc" "$last_line" >&2
			;;
		esac
	done <"$work/cuts"
done

# Anything at all written outside /tmp since the marker (the per-cut check above
# only looks at the install targets).
changed=$(find / -xdev -newer "$work/marker" \
	-not -path '/tmp' -not -path '/tmp/*' -not -path '/proc/*' -not -path '/root/.bash_history' | head -n 20)
[ -z "$changed" ] || fail "files changed by truncated runs: $changed"

printf 'truncate-check: %s runs (%s cut points of %s bytes x sh, bash): %s exited 0, %s syntax errors, %s "not found", %s refused as incomplete, %s other; nothing changed\n' \
	"$runs" "$total" "$size" "$rc0" "$rc_syntax" "$rc_notfound" "$rc_refused" "$rc_other"
[ "$rc_other" -eq 0 ] || fail "$rc_other runs failed in an unexpected way (see the notes above)"
[ "$rc_refused" -gt 0 ] || fail "no cut inside the last line was refused as incomplete"
