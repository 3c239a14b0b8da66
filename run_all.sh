#!/usr/bin/env bash
# Start the whole simulated charging site: one terminal tab per process, or headless.
# Written for the bash 3.2 that macOS ships as well as for Linux.

ROOT=$(cd "$(dirname "$0")" && pwd)
SELF="$ROOT/run_all.sh"
PROCESSES="bus charger csms cp fleet plot"
TMUX_SESSION=ev-sim

usage() {
  cat <<EOF
Usage: ./run_all.sh [options]
       ./run_all.sh --stop [--workdir DIR]

Starts the CAN bus server, charger_module.py, csms.py, cp.py and plot_current.py, in that order,
each once what it needs is listening. The first run creates .venv from requirements.txt.

Where the processes run (default: the first that this machine has):
  macOS: Terminal tabs; Linux desktop: gnome-terminal or konsole tabs, else xterm windows;
  no desktop: a tmux session "$TMUX_SESSION", one window per process (attached from a terminal);
  else headless.
  --headless          no terminals: output in logs/<process>.log, the plot in plots/current.png;
                      Ctrl-C stops every process this run started; a process that dies is
                      started again 1, 2, 4, 8, 16 s later, and one that keeps dying (5 times
                      in 120 s) stops the site
  --tmux              the tmux session even on a desktop

Options:
  --duration S        stop everything after S seconds (wall clock) and print a summary
  --speed F           time scale for every process (default: \$EV_SIM_SPEED or 1)
  --scenario NAME     a name from csms.py --list-scenarios (default: fluctuation)
  --scenario-mix MIX  a scenario per charge point instead, e.g. fluctuation=0.1,normal=0.9,
                      drawn from its id and --seed (see csms.py --help)
  --cycles N          scenario cycles, 0 = forever (default: 0)
  --fleet N           N more charge points (CP_0001 ...) in one cp.py --count N, each with its
                      own charger in process, beside CP_1 and its CAN charger; they record
                      their state, the central system their traffic (cp.py --record state)
  --inject KIND[:key=value,...]
                      inject a fault, repeatable; each goes to the process that owns it
                      (charger_module.py or cp.py): see their --help for the kinds
  --seed N            seed of the injected faults and of --scenario-mix (default: 0)
  --db PATH           the MemoryBank file (default: \$EV_SIM_DB or ev_charging_memory.db)
  --port N            the central system's port (default: 9000)
  --bus-port N        the CAN bus server's port (default: 54701)
  --api-port N        the central system's control API port (default: 9001)
  --cp-api-port N     the charge point's control API port (default: 9002)
  --can-interface I   use this python-can interface instead of starting a bus server
  --can-channel C     its channel, e.g. --can-interface socketcan --can-channel vcan0
  --workdir DIR       where logs/, plots/, .run/ and the default database go (default: the repo)
  --secure [2|3]      security profile 3 (TLS with client certificates) or 2 (HTTP Basic auth
                      over TLS): makes a throwaway CA, certificates and a registry in DIR/pki
  --stop              stop the site a previous ./run_all.sh started
  -h, --help          this text

Exit code 0 on a clean run (Ctrl-C included); 1 with a one-line reason and the tail of its log
when a process fails to start; 2 on bad arguments.
EOF
}

die_usage() { echo "run_all.sh: error: $1 (see ./run_all.sh --help)" >&2; exit 2; }

# --- internal: what a terminal tab runs -----------------------------------------------------
if [ "${1:-}" = "--tab" ]; then
  name=$2; pidfile=$3; shift 3
  printf '\033]0;%s\007' "$name"
  sh -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@"
  code=$?
  echo "[$name exited with code $code; press Enter to close]"
  read -r _ || true
  exit "$code"
fi

# --- arguments ------------------------------------------------------------------------------
mode=auto duration="" speed="" scenario="" scenario_mix="" cycles="" fleet="" db="" port=9000 bus_port=54701
api_port=9001 cp_api_port=9002
can_interface="" can_channel="" workdir="$ROOT" action=start secure=""
scenario_checked=""
check_scenario() {  # check_scenario PYTHON: the names are csms.py's; no venv yet: checked after it is made
  local names
  names=$("$1" "$ROOT/csms.py" --list-scenarios 2>/dev/null) || return 0
  printf '%s\n' "$names" | grep -qxF -e "$scenario" ||
    die_usage "--scenario is one of $(printf '%s' "$names" | tr '\n' ' ' | sed 's/ /, /g'), got '$scenario'"
  scenario_checked=1
}
injections=() charger_inject=() cp_inject=() seed="" injections_routed=""
route_injections() {  # route_injections PYTHON: each --inject to the process that owns it, as
  # evsim.faults.kinds says; no Python that can tell yet (no venv): routed after it is made
  local spec owner code
  [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1
  charger_inject=() cp_inject=()
  for spec in "${injections[@]+"${injections[@]}"}"; do
    owner=$(cd "$ROOT" && PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$1" -c \
      'from evsim.faults.kinds import main; raise SystemExit(main())' --owner "$spec" 2>&1)
    code=$?
    owner=$(printf '%s\n' "$owner" | tail -n 1)
    [ "$code" = 2 ] && die_usage "--inject: $owner"
    [ "$code" = 0 ] || return 1
    case "$owner" in
      charger_module.py) charger_inject+=(--inject "$spec") ;;
      cp.py) cp_inject+=(--inject "$spec") ;;
      *) die_usage "--inject: $spec is injected by $owner, which run_all.sh does not pass it to" ;;
    esac
  done
  injections_routed=1
}
need_value() { [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || die_usage "$1 needs a value"; }
is_number() { printf '%s' "$1" | grep -Eq '^[0-9]*[.]?[0-9]+$' && awk -v n="$1" 'BEGIN { exit !(n > 0) }'; }
is_integer() { printf '%s' "$1" | grep -Eq '^[0-9]+$'; }
is_port() { is_integer "$1" && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --headless) mode=headless ;;
    --tmux) mode=tmux ;;
    --stop) action=stop ;;
    --duration) need_value "$@"; is_number "$2" || die_usage "--duration takes a positive number of seconds, got '$2'"; duration=$2; shift ;;
    --speed) need_value "$@"; is_number "$2" || die_usage "--speed takes a positive number, got '$2'"; speed=$2; shift ;;
    --scenario) need_value "$@"; scenario=$2; check_scenario "$ROOT/.venv/bin/python"; shift ;;
    --scenario-mix) need_value "$@"; scenario_mix=$2; shift ;;
    --fleet) need_value "$@"; is_integer "$2" && [ "$2" -ge 1 ] || die_usage "--fleet takes a whole number of charge points, at least 1, got '$2'"; fleet=$2; shift ;;
    --inject) need_value "$@"; injections+=("$2"); shift ;;
    --seed) need_value "$@"; is_integer "$2" || die_usage "--seed takes a whole number, got '$2'"; seed=$2; shift ;;
    --cycles) need_value "$@"; is_integer "$2" || die_usage "--cycles takes a whole number, got '$2'"; cycles=$2; shift ;;
    --db) need_value "$@"; case "$2" in /*) db=$2 ;; *) db="$PWD/$2" ;; esac; shift ;;
    --port) need_value "$@"; is_port "$2" || die_usage "--port takes a port number 1-65535, got '$2'"; port=$2; shift ;;
    --bus-port) need_value "$@"; is_port "$2" || die_usage "--bus-port takes a port number 1-65535, got '$2'"; bus_port=$2; shift ;;
    --api-port) need_value "$@"; is_port "$2" || die_usage "--api-port takes a port number 1-65535, got '$2'"; api_port=$2; shift ;;
    --cp-api-port) need_value "$@"; is_port "$2" || die_usage "--cp-api-port takes a port number 1-65535, got '$2'"; cp_api_port=$2; shift ;;
    --can-interface) need_value "$@"; can_interface=$2; shift ;;
    --can-channel) need_value "$@"; can_channel=$2; shift ;;
    --workdir) need_value "$@"; workdir=$2; shift ;;
    --secure) secure=3; case "${2:-}" in 2|3) secure=$2; shift ;; esac ;;
    *) die_usage "unknown option '$1'" ;;
  esac
  shift
done

[ -n "$scenario" ] && [ -n "$scenario_mix" ] && die_usage "--scenario and --scenario-mix: choose one"
[ -n "$fleet" ] && [ -n "$secure" ] && die_usage "--fleet with --secure: the throwaway registry has CP_1 only"
if [ ${#injections[@]} -gt 0 ] && [ "$action" = start ]; then  # before anything starts
  route_injections "$ROOT/.venv/bin/python" || route_injections python3 || true
fi

mkdir -p "$workdir" || { echo "run_all.sh: error: cannot create $workdir" >&2; exit 1; }
workdir=$(cd "$workdir" && pwd)
RUN="$workdir/.run"
LOGS="$workdir/logs"
PLOTS="$workdir/plots"

# --- the site's processes -------------------------------------------------------------------
pid_of() { [ -f "$RUN/$1.pid" ] && cat "$RUN/$1.pid" 2>/dev/null; }

ours() {  # ours PID: it runs, and it is one of this project's processes, not a reused PID
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null &&
    ps -p "$1" -o command= 2>/dev/null | grep -qF -e "$ROOT/" -e run_all.sh
}

alive() {  # alive NAME: its recorded process is still running
  ours "$(pid_of "$1")"
}

running() {
  local name
  for name in $PROCESSES; do alive "$name" && return 0; done
  return 1
}

stop_process() {  # stop_process NAME: SIGTERM, up to 10 s to finish, then SIGKILL
  local deadline
  alive "$1" || return 0
  kill -TERM "$(pid_of "$1")" 2>/dev/null
  deadline=$(( $(date +%s) + 10 ))
  while alive "$1" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  if alive "$1"; then
    echo "run_all.sh: $1 did not stop in 10 s; killing it" >&2
    kill -KILL "$(pid_of "$1")" 2>/dev/null
  fi
}

stop_site() {  # the charge point first, so that it can still end its transaction
  local name
  for name in plot fleet cp csms charger bus; do stop_process "$name"; done
  if [ -f "$RUN/tmux" ] && command -v tmux >/dev/null 2>&1; then
    tmux kill-session -t "$TMUX_SESSION" 2>/dev/null
  fi
  rm -f "$RUN"/*.pid "$RUN/tmux" "$RUN/macos"
}

if [ "$action" = stop ]; then
  supervisor=$(cat "$RUN/run_all.pid" 2>/dev/null)
  if ours "$supervisor" && kill -TERM "$supervisor" 2>/dev/null; then
    # a headless run stops its own children; it removes its PID file once they are gone
    while [ -f "$RUN/run_all.pid" ] && kill -0 "$supervisor" 2>/dev/null; do sleep 0.1; done
  fi
  if running || [ -f "$RUN/tmux" ]; then
    stop_site
  elif [ -z "$supervisor" ]; then
    echo "No site started by run_all.sh is running in $workdir."
    exit 0
  fi
  rm -f "$RUN/run_all.pid"
  echo "Stopped the site in $workdir."
  exit 0
fi

if running; then
  echo "run_all.sh: error: the site is already running in $workdir; stop it with ./run_all.sh --stop" >&2
  exit 1
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $port $api_port $cp_api_port $([ -z "$can_interface$can_channel" ] && echo "$bus_port"); do
  if port_open "$p"; then
    echo "run_all.sh: error: port $p on 127.0.0.1 is in use by another program (choose another with --port / --api-port / --cp-api-port / --bus-port)" >&2
    exit 1
  fi
done

. "$ROOT/bootstrap.sh" requirements.txt || exit 1
PY="$ROOT/.venv/bin/python"
[ -n "$scenario" ] && [ -z "$scenario_checked" ] && check_scenario "$PY"
if [ ${#injections[@]} -gt 0 ] && [ -z "$injections_routed" ]; then
  route_injections "$PY" || { echo "run_all.sh: error: cannot tell which process injects ${injections[*]}" >&2; exit 1; }
fi
mkdir -p "$RUN" "$LOGS" "$PLOTS"
rm -f "$RUN"/*.pid "$RUN/tmux" "$RUN/macos"

# --- choosing where processes run -----------------------------------------------------------
if [ "$mode" = auto ]; then
  if [ "$(uname)" = Darwin ] && command -v osascript >/dev/null 2>&1; then mode=macos
  elif [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && command -v gnome-terminal >/dev/null 2>&1; then mode=gnome
  elif [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && command -v konsole >/dev/null 2>&1; then mode=konsole
  elif [ -n "${DISPLAY:-}" ] && command -v xterm >/dev/null 2>&1; then mode=xterm
  elif command -v tmux >/dev/null 2>&1; then mode=tmux
  else
    echo "No desktop terminal and no tmux here: running headless (logs in $LOGS)."
    mode=headless
  fi
fi
if [ "$mode" = tmux ] && ! command -v tmux >/dev/null 2>&1; then
  echo "run_all.sh: error: tmux is not installed (use --headless, or install tmux)" >&2
  exit 1
fi
if [ "$mode" = tmux ] && tmux has-session -t "$TMUX_SESSION" 2>/dev/null; then
  echo "run_all.sh: error: a tmux session '$TMUX_SESSION' already exists; stop it with ./run_all.sh --stop or tmux kill-session -t $TMUX_SESSION" >&2
  exit 1
fi

quote() { local out="" arg; for arg in "$@"; do out="$out $(printf '%q' "$arg")"; done; echo "${out# }"; }

launch() {  # launch NAME COMMAND...: start one process where the mode says, record its PID
  local name=$1 pidfile="$RUN/$1.pid"; shift
  local tab
  tab=$(quote "$SELF" --tab "$name" "$pidfile" "$@")
  rm -f "$pidfile"
  case "$mode" in
    headless)
      # SIGINT ignored: Ctrl-C is this script's to handle, and it stops the children in order
      echo "--- $name started $(date '+%Y-%m-%d %H:%M:%S')${EV_SIM_RESTARTS:+ (restart $EV_SIM_RESTARTS)}" >> "$LOGS/$name.log"
      (trap '' INT; cd "$workdir" && exec "$@") >> "$LOGS/$name.log" 2>&1 < /dev/null &
      echo $! > "$pidfile" ;;
    tmux)
      if [ -f "$RUN/tmux" ]; then
        tmux new-window -t "$TMUX_SESSION" -n "$name" -c "$workdir" "$tab"
      else
        tmux new-session -d -s "$TMUX_SESSION" -n "$name" -c "$workdir" -x 200 -y 50 "$tab"
        touch "$RUN/tmux"
      fi ;;
    macos)  # the first process opens a window, the others a tab in it (new windows if denied)
      local script="cd $(quote "$workdir") && $tab" target=""
      script=$(printf '%s' "$script" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
      if [ -f "$RUN/macos" ] && osascript -e 'tell application "Terminal" to activate' \
          -e 'tell application "System Events" to keystroke "t" using command down' \
          -e 'delay 0.5' >/dev/null 2>&1; then
        target=" in front window"
      fi
      osascript -e "tell application \"Terminal\" to do script \"$script\"$target" >/dev/null
      touch "$RUN/macos" ;;
    gnome) (cd "$workdir" && gnome-terminal --tab --title="$name" -- bash -c "$tab") ;;
    konsole) (cd "$workdir" && konsole --new-tab -p tabtitle="$name" -e bash -c "$tab" &) ;;
    xterm) (cd "$workdir" && xterm -T "$name" -e bash -c "$tab" &) ;;
  esac
}

first_dead() {  # the first process, in start order, that was started and is gone
  local name
  for name in $PROCESSES; do
    [ -f "$RUN/$name.pid" ] && ! alive "$name" && { echo "$name"; return 0; }
  done
  return 1
}

fail_start() {  # fail_start NAME REASON
  echo "run_all.sh: error: $1 $2" >&2
  if [ -s "$LOGS/$1.log" ]; then
    echo "--- last lines of $LOGS/$1.log:" >&2
    tail -n 15 "$LOGS/$1.log" >&2
  fi
  stop_site
  exit 1
}

wait_started() {  # wait_started NAME [PORT]: its PID is recorded and, with PORT, it listens
  local deadline=$(( $(date +%s) + 60 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    dead=$(first_dead) && fail_start "$dead" "exited during start-up"
    if [ -s "$RUN/$1.pid" ]; then
      [ -z "${2:-}" ] && return 0
      port_open "$2" && return 0
    fi
    sleep 0.1
  done
  fail_start "$1" "did not start within 60 s"
}

common=()
[ -n "$speed" ] && common+=(--speed "$speed")
[ -n "$db" ] && common+=(--db "$db")
can=()
if [ -n "$can_interface$can_channel" ]; then
  [ -n "$can_interface" ] && can+=(--can-interface "$can_interface")
  [ -n "$can_channel" ] && can+=(--can-channel "$can_channel")
else
  can+=(--can-interface remote --can-channel "ws://127.0.0.1:$bus_port/")
fi
[ -n "$seed" ] && charger_inject+=(--seed "$seed") && cp_inject+=(--seed "$seed")
scenario_args=()
[ -n "$scenario" ] && scenario_args+=(--scenario "$scenario")
[ -n "$scenario_mix" ] && scenario_args+=(--scenario-mix "$scenario_mix" ${seed:+--seed "$seed"})
[ -n "$cycles" ] && scenario_args+=(--cycles "$cycles")
plot_args=(--output "$PLOTS/current.png" --cp CP_1 --source can)  # the charge point on the bus
[ "$mode" = headless ] && plot_args+=(--headless)

trap 'echo; echo "Stopping the site ..."; stop_site; exit 0' INT TERM

echo "Starting the site ($mode) in $workdir ..."
start_bus() { launch bus "$PY" -m can_remote --interface virtual --channel 0 --host 127.0.0.1 --port "$bus_port"; }
start_charger() { launch charger "$PY" "$ROOT/charger_module.py" "${common[@]}" "${can[@]}" "${charger_inject[@]+"${charger_inject[@]}"}"; }
if [ -z "$can_interface$can_channel" ]; then
  start_bus
  wait_started bus "$bus_port"
fi
start_charger
wait_started charger
csms_security=() cp_security=() scheme=ws
if [ -n "$secure" ]; then  # a throwaway CA, certificates and a registry for CP_1
  PKI="$workdir/pki"
  "$PY" -m evsim.security.site --out "$PKI" --profile "$secure" --charge-point CP_1 > /dev/null ||
    fail_start pki "could not be made in $PKI"
  scheme=wss
  csms_security=(--charge-points "$PKI/charge_points.toml" --tls-cert "$PKI/csms.pem"
                 --tls-key "$PKI/csms.key" --tls-client-ca "$PKI/ca.pem"
                 --ca-cert "$PKI/ca.pem" --ca-key "$PKI/ca.key")
  cp_security=(--security-profile "$secure" --ca-cert "$PKI/ca.pem")
  if [ "$secure" = 3 ]; then
    cp_security+=(--client-cert "$PKI/CP_1.pem" --client-key "$PKI/CP_1.key")
  else
    cp_security+=(--auth-key-file "$PKI/CP_1.authkey")
  fi
fi
start_csms() { launch csms "$PY" "$ROOT/csms.py" --port "$port" --api-port "$api_port" "${common[@]}" "${scenario_args[@]+"${scenario_args[@]}"}" "${csms_security[@]+"${csms_security[@]}"}"; }
start_cp() { launch cp "$PY" "$ROOT/cp.py" --url "$scheme://127.0.0.1:$port" --api-port "$cp_api_port" "${common[@]}" "${can[@]}" "${cp_security[@]+"${cp_security[@]}"}" "${cp_inject[@]+"${cp_inject[@]}"}"; }
start_fleet() { launch fleet "$PY" "$ROOT/cp.py" --count "$fleet" --record state --url "$scheme://127.0.0.1:$port" --state "$workdir/fleet_state.db" "${common[@]}" "${cp_inject[@]+"${cp_inject[@]}"}"; }
start_plot() { launch plot "$PY" "$ROOT/plot_current.py" "${plot_args[@]}" "${common[@]}" "${can[@]}"; }
start_csms
wait_started csms "$port"
start_cp
wait_started cp
if [ -n "$fleet" ]; then
  start_fleet
  wait_started fleet
fi
start_plot
wait_started plot
echo "The site is up: central system $scheme://127.0.0.1:$port/CP_1${secure:+ (security profile $secure)}${fleet:+ and a fleet of $fleet}. Stop it with ./run_all.sh --stop."


summary() {
  echo "Summary of the MemoryBank:"
  (cd "$workdir" && "$PY" "$ROOT/memory_viewer.py" --summary ${db:+--db "$db"}) || true
}

if [ "$mode" != headless ]; then
  if [ -n "$duration" ]; then  # a watchdog that outlives this script
    (sleep "$duration"; "$SELF" --stop --workdir "$workdir" >/dev/null 2>&1; summary) &
  fi
  if [ "$mode" = tmux ] && [ -n "${TMUX:-}" ]; then
    tmux switch-client -t "$TMUX_SESSION"
  elif [ "$mode" = tmux ] && [ -t 0 ] && [ -t 1 ]; then
    tmux attach -t "$TMUX_SESSION"
  fi
  exit 0
fi

finish() {  # stop every child of this run and show what the MemoryBank holds
  stop_site
  rm -f "$RUN/run_all.pid"
  summary
  exit 0
}
trap 'echo; echo "Stopping the site ..."; finish' INT TERM
echo $$ > "$RUN/run_all.pid"
echo "Logs in $LOGS; plot in $PLOTS/current.png. Ctrl-C stops everything."
deadline=""
[ -n "$duration" ] && deadline=$(awk -v start="$(date +%s)" -v d="$duration" 'BEGIN { printf "%d", start + d + 0.999 }')
# A process that dies is started again after 1, 2, 4, 8, 16 s, so the others carry on (it
# records PROCESS_RESTART); one that dies RESTARTS_MAX times within RESTART_WINDOW s stops the site.
RESTARTS_MAX=5 RESTART_WINDOW=120
supervise() {
  local name now due count first delay
  now=$(date +%s)
  for name in $PROCESSES; do
    [ -f "$RUN/$name.pid" ] && ! alive "$name" || continue
    eval "due=\${due_$name:-0} count=\${count_$name:-0} first=\${first_$name:-$now}"
    if [ "$due" = 0 ]; then
      [ $((now - first)) -gt "$RESTART_WINDOW" ] && { count=0; first=$now; }
      count=$((count + 1))
      [ "$count" -gt "$RESTARTS_MAX" ] &&
        fail_start "$name" "stopped unexpectedly $RESTARTS_MAX times in $RESTART_WINDOW s; giving up"
      delay=$((1 << (count - 1)))
      echo "run_all.sh: $name stopped unexpectedly; starting it again in $delay s (restart $count of $RESTARTS_MAX; log: $LOGS/$name.log)" >&2
      eval "due_$name=$((now + delay)) count_$name=$count first_$name=$first"
    elif [ "$now" -ge "$due" ]; then
      eval "due_$name=0"
      EV_SIM_RESTARTS=$count "start_$name"
    fi
  done
}
while [ -z "$deadline" ] || [ "$(date +%s)" -lt "$deadline" ]; do
  supervise
  sleep 0.2
done
echo "Stopping the site after $duration s ..."
finish
