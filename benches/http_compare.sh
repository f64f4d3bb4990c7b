#!/usr/bin/env bash
# hello_http on trellis vs the same hyper server on tokio, measured in one run with wrk.
#
#   bash benches/http_compare.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 5 s)
#
# Needs wrk (Debian: apt-get install -y wrk). Each round runs wrk against both servers, in
# alternating order; the servers run side by side, each idle while the other is loaded.
# Prints every round and the median requests/s of each, and fails if wrk reports any error
# or non-2xx response, or if fewer than 10,000 requests were served.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
seconds=${2:-5}
command -v wrk >/dev/null || { echo "wrk is not installed (Debian: apt-get install -y wrk)"; exit 2; }

cargo build -q --release -p trellis-examples --example hello_http
cargo build -q --release -p trellis-benches --bin hello_http_tokio
./target/release/examples/hello_http 127.0.0.1:18080 >/dev/null &
trellis_pid=$!
./target/release/hello_http_tokio 127.0.0.1:18081 >/dev/null &
tokio_pid=$!
trap 'kill $trellis_pid $tokio_pid 2>/dev/null || true' EXIT
for port in 18080 18081; do
  until curl -sf "http://127.0.0.1:$port/" >/dev/null; do sleep 0.1; done
done

run() { # port -> requests/s; fails on errors
  local out
  out=$(wrk -t2 -c64 -d"${seconds}s" "http://127.0.0.1:$1/")
  if grep -qE "Socket errors|Non-2xx" <<<"$out"; then echo "$out" >&2; echo "wrk reported errors" >&2; exit 1; fi
  local total
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  [ "$total" -ge 10000 ] || { echo "only $total requests served" >&2; exit 1; }
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}

t=(); k=()
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then a=$(run 18080); b=$(run 18081); else b=$(run 18081); a=$(run 18080); fi
  t+=("$a"); k+=("$b")
  echo "round $r: trellis ${a} req/s, tokio ${b} req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mt=$(median "${t[@]}"); mk=$(median "${k[@]}")
echo "hello_http: trellis_rps=${mt} tokio_rps=${mk} ratio=$(awk "BEGIN {printf \"%.2f\", $mt/$mk}") (requests/s, median of $rounds rounds of ${seconds}s, wrk -t2 -c64)"
