# Progress lines for the Makefile's long steps (sourced, not run): every stage prints one line
# with the time since the target started, and a step that can stay silent for minutes (pip
# building llama.cpp) gets a heartbeat, so nobody wonders whether it hung.
#   . scripts/steps.sh setup      # then: step "installing ..."; heartbeat 60 "hint" cmd args...

STEPS_NAME="${1:-make}"
STEPS_T0=$(date +%s)

elapsed() {
  local e=$(( $(date +%s) - STEPS_T0 ))
  printf '%d:%02d' $((e / 60)) $((e % 60))
}

step() {
  printf '%s [%s] %s\n' "$STEPS_NAME" "$(elapsed)" "$*"
}

# heartbeat SECONDS HINT CMD...: run CMD, and every SECONDS while it runs say it still does.
heartbeat() {
  local every="$1" hint="$2"
  shift 2
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    local waited=0
    while [ "$waited" -lt "$every" ] && kill -0 "$pid" 2>/dev/null; do
      sleep 1
      waited=$((waited + 1))
    done
    kill -0 "$pid" 2>/dev/null && step "still working: $hint"
  done
  wait "$pid"
}
