# Shared by the bench scripts; sourced, not run. The script sets BIN (the converge-ledger
# binary) and WORK (a scratch directory, removed at exit) first. Every process a script starts
# goes into PIDS and is stopped by its PID at exit.

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A port nobody listens on.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# serve NAME PORT [FLAGS...]: starts a node on 127.0.0.1:PORT (its HTTP port anywhere free)
# with its data in $WORK/NAME, and returns once it listens.
serve() {
  local name="$1" port="$2"; shift 2
  # A previous node of this name printed `listening on` too.
  rm -f "$WORK/$name.out"
  "$BIN" serve --listen "127.0.0.1:$port" --http "127.0.0.1:$(free_port)" --data-dir "$WORK/$name" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PIDS+=("$!")
  for _ in $(seq 1 300); do grep -q "listening on" "$WORK/$name.out" 2>/dev/null && return; sleep 0.1; done
  echo "node $name did not start:"; cat "$WORK/$name.log"; exit 1
}

# cluster_of_three PREFIX: starts nodes PREFIX1 (bootstrapping, with BOOTSTRAP_FLAGS if set),
# PREFIX2 and PREFIX3 (joining) on free ports, waits until all three vote and the shard leaders
# are spread over them, and sets N1, N2, N3 (their ports) and CLUSTER (the three URLs, for a
# client given all three).
cluster_of_three() {
  local prefix="$1"
  N1=$(free_port); N2=$(free_port); N3=$(free_port)
  # shellcheck disable=SC2086 # BOOTSTRAP_FLAGS: words, if any
  serve "${prefix}1" "$N1" --bootstrap ${BOOTSTRAP_FLAGS:-}
  sleep 2
  serve "${prefix}2" "$N2" --join "127.0.0.1:$N1"
  serve "${prefix}3" "$N3" --join "127.0.0.1:$N1"
  local status="$BIN cluster status --json --server http://127.0.0.1:$N1"
  for _ in $(seq 1 600); do [ "$($status 2>/dev/null | grep -o '"role":"voter"' | wc -l)" = 3 ] && break; sleep 0.2; done
  for _ in $(seq 1 300); do [ "$($status 2>/dev/null | grep -o '"leader":"[0-9a-f]*"' | sort -u | wc -l)" = 3 ] && break; sleep 0.2; done
  CLUSTER="http://127.0.0.1:$N1,http://127.0.0.1:$N2,http://127.0.0.1:$N3"
}
