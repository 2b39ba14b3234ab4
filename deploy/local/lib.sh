# shellcheck shell=bash disable=SC2034
# Shared by deploy/local/{stack,fleet,demo,test}: settings, process management and
# package checks for the local stack. Sourced, never run.

KMIRROR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL_DIR=$KMIRROR_ROOT/deploy/local

STATE_DIR=${KMIRROR_STATE_DIR:-$KMIRROR_ROOT/.state}
LOG_DIR=$STATE_DIR/logs
RUN_DIR=$STATE_DIR/run
CONFIG_DIR=$STATE_DIR/config

KAFKA_VERSION=4.3.1
CACHE_DIR=${KMIRROR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kmirror}
KAFKA_JARS=$CACHE_DIR/kafka-$KAFKA_VERSION

SOURCE_PORT=${KMIRROR_SOURCE_PORT:-19092}
DEST_PORT=${KMIRROR_DEST_PORT:-29092}
ETCD_PORT=${KMIRROR_ETCD_PORT:-2379}
ETCD_PEER_PORT=${KMIRROR_ETCD_PEER_PORT:-2380}
SOURCE_BOOTSTRAP=127.0.0.1:$SOURCE_PORT
DEST_BOOTSTRAP=127.0.0.1:$DEST_PORT
ETCD_ENDPOINT=http://127.0.0.1:$ETCD_PORT

FLEET=${KMIRROR_FLEET:-local}
COORDINATOR_PORT=${KMIRROR_COORDINATOR_PORT:-7070}
# Two coordinators: one leads, the other stands by (kmirrorctl talks to the first).
read -r -a COORDINATOR_PORTS <<<"${KMIRROR_COORDINATOR_PORTS:-$COORDINATOR_PORT $((COORDINATOR_PORT + 1))}"
COORDINATOR_ADDR=http://127.0.0.1:$COORDINATOR_PORT
read -r -a FETCHER_PORTS <<<"${KMIRROR_FETCHER_PORTS:-7091 7092}"
read -r -a WRITER_PORTS <<<"${KMIRROR_WRITER_PORTS:-7081 7082}"
BIN_DIR=${CARGO_TARGET_DIR:-$KMIRROR_ROOT/target}/debug

# Seconds a server may take to become ready, and to stop after SIGTERM before it
# is killed. The stop deadline is above the members' default --shutdown-grace (20s).
START_TIMEOUT=${KMIRROR_START_TIMEOUT:-120}
STOP_TIMEOUT=${KMIRROR_STOP_TIMEOUT:-30}

info() { printf '%s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# Prints the last lines of a log file, indented, to stderr.
show_log_tail() {
	local log_file=$1 lines=${2:-30}
	if [[ -s $log_file ]]; then
		info "---- last $lines lines of $log_file ----"
		tail -n "$lines" "$log_file" | sed 's/^/    /' >&2
		info "----"
	else
		info "($log_file is empty)"
	fi
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# --- processes ---------------------------------------------------------------
# A pid file holds "PID START_TIME" (start time from /proc/PID/stat), so a pid
# that the kernel reused for another process is never mistaken for ours.

proc_start_time() {
	local stat rest
	local -a fields
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	rest=${stat##*) }
	# Fields after "pid (comm) ": state is the 1st, starttime the 20th.
	read -r -a fields <<<"$rest"
	[[ ${fields[0]} != Z && ${fields[0]} != X ]] || return 1
	printf '%s\n' "${fields[19]}"
}

pid_file() { printf '%s/%s.pid\n' "$RUN_DIR" "$1"; }

# Prints the pid of the named process when it runs (started by these scripts).
running_pid() {
	local file pid start_time actual
	file=$(pid_file "$1")
	[[ -f $file ]] || return 1
	read -r pid start_time <"$file" || return 1
	[[ -n ${pid:-} && -n ${start_time:-} ]] || return 1
	actual=$(proc_start_time "$pid") || return 1
	[[ $actual == "$start_time" ]] || return 1
	printf '%s\n' "$pid"
}

# start_daemon NAME LOG_FILE COMMAND...: runs COMMAND in its own session (so a
# Ctrl-C in the terminal does not reach it), output appended to LOG_FILE.
start_daemon() {
	local name=$1 log_file=$2 pid start_time
	shift 2
	mkdir -p "$RUN_DIR" "$(dirname "$log_file")"
	printf '==== %s starting %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$name" "$*" >>"$log_file"
	# fd 9 is the lock of the calling script; the daemon must not keep it.
	setsid "$@" </dev/null >>"$log_file" 2>&1 9>&- &
	pid=$!
	start_time=$(proc_start_time "$pid") || {
		show_log_tail "$log_file"
		die "$name exited right after start (log: $log_file)"
	}
	printf '%s %s\n' "$pid" "$start_time" >"$(pid_file "$name")"
}

# stop_daemons NAME...: SIGTERM to every named process that runs, then waits up
# to STOP_TIMEOUT seconds for all of them, then SIGKILL for those left.
stop_daemons() {
	local name pid deadline
	local -a names=() pids=()
	for name in "$@"; do
		if pid=$(running_pid "$name"); then
			info "stopping $name (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			names+=("$name")
			pids+=("$pid")
		else
			rm -f "$(pid_file "$name")"
		fi
	done
	deadline=$((SECONDS + STOP_TIMEOUT))
	local i left
	while :; do
		left=0
		for i in "${!names[@]}"; do
			running_pid "${names[$i]}" >/dev/null && left=$((left + 1))
		done
		((left == 0)) && break
		if ((SECONDS >= deadline)); then
			for i in "${!names[@]}"; do
				if running_pid "${names[$i]}" >/dev/null; then
					info "warning: ${names[$i]} (pid ${pids[$i]}) did not stop within ${STOP_TIMEOUT}s, killing it"
					kill -KILL "${pids[$i]}" 2>/dev/null || true
				fi
			done
			break
		fi
		sleep 0.2
	done
	# A killed process is gone within moments; wait for that, boundedly.
	deadline=$((SECONDS + 10))
	for i in "${!names[@]}"; do
		while running_pid "${names[$i]}" >/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		if running_pid "${names[$i]}" >/dev/null; then
			info "warning: ${names[$i]} (pid ${pids[$i]}) is still there after SIGKILL"
		else
			rm -f "$(pid_file "${names[$i]}")"
		fi
	done
}

# wait_ready NAME LOG_FILE DESCRIPTION COMMAND...: polls COMMAND until it
# succeeds. Fails with the log's tail when the process exits or the deadline
# (START_TIMEOUT) passes.
wait_ready() {
	local name=$1 log_file=$2 description=$3 deadline
	shift 3
	deadline=$((SECONDS + START_TIMEOUT))
	until "$@" >/dev/null 2>&1; do
		if ! running_pid "$name" >/dev/null; then
			show_log_tail "$log_file"
			die "$name exited before it was ready ($description); log: $log_file"
		fi
		if ((SECONDS >= deadline)); then
			show_log_tail "$log_file"
			die "$name is not ready after ${START_TIMEOUT}s ($description); log: $log_file"
		fi
		sleep 0.5
	done
}

# Takes an exclusive lock on STATE_DIR/NAME.lock for the rest of the script (fd 9).
lock_state() {
	mkdir -p "$STATE_DIR"
	exec 9>"$STATE_DIR/$1.lock"
	flock 9
}

# --- packages ----------------------------------------------------------------

deb_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Installs the Debian packages that are missing (as root, or through sudo when
# it needs no password); otherwise says what to install.
ensure_debian_packages() {
	local -a missing=()
	command -v etcd >/dev/null || missing+=(etcd-server)
	command -v etcdctl >/dev/null || missing+=(etcd-client)
	command -v kcat >/dev/null || missing+=(kcat)
	command -v protoc >/dev/null || missing+=(protobuf-compiler)
	command -v pkg-config >/dev/null || missing+=(pkg-config)
	command -v java >/dev/null || [[ -n ${JAVA_HOME:-} ]] || missing+=(openjdk-17-jre-headless)
	command -v mvn >/dev/null || missing+=(maven)
	if ! command -v cc >/dev/null || ! command -v make >/dev/null; then
		missing+=(build-essential)
	fi
	command -v flock >/dev/null || missing+=(util-linux)
	# The secure stack's certificates (stack up --secure) and the secured etcd
	# of tests/tests/secure_etcd.rs.
	command -v openssl >/dev/null || missing+=(openssl)
	# The release artefacts' checks (tests/tests/deploy_artifacts.rs): deploy/package
	# strips the binaries, systemd-analyze checks the units, and the Kubernetes
	# manifests' validator lives in a Python virtualenv.
	command -v strip >/dev/null || missing+=(binutils)
	command -v systemd-analyze >/dev/null || missing+=(systemd)
	python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
	# The multi-host tests (tests/tests/multi_host.rs): network namespaces and
	# the nftables rules that cut links and lose packets between them.
	PATH=$PATH:/usr/sbin:/sbin command -v ip >/dev/null || missing+=(iproute2)
	PATH=$PATH:/usr/sbin:/sbin command -v nft >/dev/null || missing+=(nftables)
	if command -v dpkg-query >/dev/null; then
		local package
		# libprotobuf-dev: protoc's well-known types (google/protobuf/*.proto), which
		# etcd-client's protos import; protobuf-compiler only recommends it.
		for package in libprotobuf-dev libssl-dev libsasl2-dev; do
			deb_installed "$package" || missing+=("$package")
		done
	fi
	((${#missing[@]} == 0)) && return 0

	local -a sudo=()
	if ((EUID != 0)); then
		if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
			sudo=(sudo)
		else
			die "missing packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}"
		fi
	fi
	command -v apt-get >/dev/null || die "missing packages: ${missing[*]} (no apt-get here; install them with your package manager)"
	info "installing missing packages: ${missing[*]}"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
	# On a machine with systemd the package starts its own etcd on port 2379;
	# the local stack runs its own, so the packaged service is switched off.
	if [[ " ${missing[*]} " == *" etcd-server "* && -d /run/systemd/system ]]; then
		"${sudo[@]}" systemctl disable --now etcd.service 2>/dev/null || true
	fi
}

ensure_cargo() {
	command -v cargo >/dev/null && return 0
	[[ -x $HOME/.cargo/bin/cargo ]] && {
		PATH=$HOME/.cargo/bin:$PATH
		return 0
	}
	die "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"
}
