#!/usr/bin/env bash
# compare.sh — raftkit `bench cluster` side by side with the HashiCorp Raft
# harness (shared/bench/hashicorp/bench.go) and, with OR_BENCH, the openraft
# harness (shared/bench/openraft), alternating cell by cell over several
# rounds, then medians and ratios against the targets of the benchmark issue
# and of shared/bench/README.md (>= 3x HashiCorp and >= 1.3x openraft,
# whichever is higher).
#
#   W1  inmem transport + memory log, C = 1 16 64 256   vs HashiCorp / openraft inmem
#   WT  TCP loopback + memory log, C = 1 16 64 256      vs HashiCorp / openraft tcp-mem
#       (only when WORKLOADS names it)
#   W2  TCP loopback + lmdb / file (fsync), C = 1 64    vs HashiCorp tcp-bolt
#       (C = 1 p50 is also read against the floor: one fdatasync + one RTT)
#   W3  QUIC loopback + lmdb / file, C = 64             vs our own W2
#
# Usage:
#   HC_BENCH=/path/to/bench bench/compare.sh          # run, then print the summary
#   HC_BENCH=... OR_BENCH=/path/to/openraft-bench WORKLOADS="W1 WT" bench/compare.sh
#   bench/compare.sh summary FILE.jsonl               # only the summary of earlier rows
#   FLOOR_US=200 bench/compare.sh summary FILE.jsonl  # ... against a floor measured apart
#
# HC_BENCH is the harness binary, built outside this repository per
# shared/bench/hashicorp/README.md (`./run.sh build` in a copy of that folder).
# OR_BENCH (optional) is the openraft harness, built the same way from a copy
# of shared/bench/openraft (target/release/openraft-bench); without it the
# openraft columns stay empty and the targets are against HashiCorp alone.
#
# Knobs (environment): RAFTKIT (the release binary; default
# target/release/raftkit, built with `cargo build -p raftkit-node --release`),
# ROUNDS (3), DURATION (5s), WARMUP (1s), VALUE (256), W1_CLIENTS (1 16 64 256),
# WT_CLIENTS (1 16 64 256), W2_CLIENTS (1 64), W3_CLIENTS (64), WORKLOADS
# (W1 W2 W3; add WT for TCP with a memory log), SCRATCH (data
# directories; default a fresh directory under $TMPDIR — keep it on the disk
# you mean to measure, not tmpfs), OUT (bench/results/compare-<UTC>.jsonl),
# FLOOR_DURATION (2s per floor test, once per round), QUIET_WAIT (20: seconds to wait for a quiet second
# before each cell; 0 = off), RK_ARGS (more `raftkit bench cluster` flags for every
# raftkit cell, e.g. "--fsm runtime --worker-threads 1"; they are in each row).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

summary() {
    python3 - "$1" <<'PY'
import json, os, statistics, sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cells = defaultdict(list)
floors = defaultdict(list)
for r in rows:
    if r.get("impl") == "floor":
        floors[r["test"]].append(r)
    else:
        cells[(r["impl"], r["mode"], r["clients"])].append(r)

def med(key, impl, mode, c):
    xs = [r[key] for r in cells.get((impl, mode, c), []) if isinstance(r.get(key), (int, float))]
    return statistics.median(xs) if xs else None

def n(impl, mode, c):
    return len(cells.get((impl, mode, c), []))

def unhealthy(impl, mode, c):
    return sum(1 for r in cells.get((impl, mode, c), []) if not r.get("healthy", True))

def other(impl, mode, c):
    xs = [r.get("other_cpu_cores", -1) for r in cells.get((impl, mode, c), [])]
    xs = [x for x in xs if x >= 0]
    return "%.2f-%.2f" % (min(xs), max(xs)) if xs else "-"

def f0(x):
    return "-" if x is None else "{:,.0f}".format(x)

def ratio(a, b):
    return None if a is None or not b else a / b

def fr(x):
    return "-" if x is None else "%.2fx" % x

def ok(cond):
    return "-" if cond is None else ("met" if cond else "MISSED")

def table(headers, body):
    w = [max(len(str(h)), *(len(str(row[i])) for row in body)) if body else len(str(h)) for i, h in enumerate(headers)]
    out = ["  ".join(str(h).rjust(w[i]) if i else str(h).ljust(w[i]) for i, h in enumerate(headers))]
    for row in body:
        out.append("  ".join(str(c).rjust(w[i]) if i else str(c).ljust(w[i]) for i, c in enumerate(row)))
    print("\n".join(out))

rounds = sorted({r.get("label") for r in rows if r.get("label") and r.get("impl") != "floor"})
print("rounds: %s; medians per cell; 'other' = cores the rest of the machine used during the window (noise, of 2)" % ", ".join(rounds))

def peers_table(title, rk_mode, peer_mode):
    """raftkit against HashiCorp and openraft on one mode; the target is
    >= 3x HashiCorp and >= 1.3x openraft, whichever is higher."""
    cs = sorted({k[2] for k in cells if k[0] == "raftkit" and k[1] == rk_mode})
    if not cs:
        return
    with_or = any(k[0] == "openraft" and k[1] == peer_mode for k in cells)
    print("\n%s  (target: ops/s >= %s; p99 lower than %s)" % (
        title, "3x HashiCorp's and >= 1.3x openraft's, whichever is higher" if with_or else "3x HashiCorp's",
        "both" if with_or else "HashiCorp's"))
    impls = [("raftkit", rk_mode), ("hashicorp", peer_mode)] + ([("openraft", peer_mode)] if with_or else [])
    body = []
    for c in cs:
        a = med("ops_per_sec", "raftkit", rk_mode, c)
        h = med("ops_per_sec", "hashicorp", peer_mode, c)
        o = med("ops_per_sec", "openraft", peer_mode, c)
        wants = [x for x in (None if h is None else 3 * h, None if o is None else 1.3 * o) if x is not None]
        target = max(wants) if wants else None
        p99 = [med("p99_us", i, m, c) for i, m in impls]
        p99_ok = None if None in p99 else all(p99[0] < p for p in p99[1:])
        body.append([c, f0(a), f0(h), fr(ratio(a, h)), f0(o), fr(ratio(a, o)), f0(target),
                     ok(None if a is None or target is None else a >= target)]
                    + [f0(med("p50_us", i, m, c)) for i, m in impls]
                    + [f0(p) for p in p99] + [ok(p99_ok)]
                    + ["/".join(other(i, m, c) for i, m in impls),
                       "/".join(str(n(i, m, c)) for i, m in impls),
                       sum(unhealthy(i, m, c) for i, m in impls)])
    short = ["rk", "hc", "or"][:len(impls)]
    table(["C", "raftkit ops/s", "HashiCorp", "x hc", "openraft", "x or", "target", "met"]
          + [s + " p50" for s in short] + [s + " p99" for s in short]
          + ["p99 lowest", "other " + "/".join(short), "runs", "unhealthy"], body)

peers_table("W1  inmem transport + memory log", "inmem-memory", "inmem")
peers_table("WT  TCP loopback + memory log", "tcp-memory", "tcp-mem")

fs = floors.get("fsync_append_4k_fdatasync", [])
rtt = floors.get("tcp_loopback_pingpong_64B_any", [])
floor = None
if os.environ.get("FLOOR_US"):
    # A floor measured apart, on a quiet machine (the rounds' floors share the
    # disk with whatever else runs).
    floor = float(os.environ["FLOOR_US"])
    print("\nfloor: FLOOR_US = %.0f us (given)" % floor)
    if fs:
        print("  (the rounds measured fdatasync p50 %s us)" % ", ".join("%.0f" % r["p50_us"] for r in fs))
elif fs and rtt:
    f_fs = statistics.median(r["p50_us"] for r in fs)
    f_rtt = statistics.median(r["p50_us"] for r in rtt)
    floor = f_fs + f_rtt
    print("\nfloor (raftkit bench floor, median of %d rounds): fdatasync 4 KiB append p50 %.0f us (rounds: %s) + loopback RTT p50 %.0f us = %.0f us"
          % (len(fs), f_fs, ", ".join("%.0f" % r["p50_us"] for r in fs), f_rtt, floor))

print("\nW2  TCP loopback + durable log (fsync)  (targets: C=1 p50 <= 1.3x floor; C=64 >= 3x HashiCorp tcp-bolt)")
body = []
for c in sorted({k[2] for k in cells if k[1] in ("tcp-lmdb", "tcp-file")}):
    hc = med("ops_per_sec", "hashicorp", "tcp-bolt", c)
    for mode in ("tcp-lmdb", "tcp-file"):
        a = med("ops_per_sec", "raftkit", mode, c)
        p50 = med("p50_us", "raftkit", mode, c)
        x = ratio(a, hc)
        fl = ratio(p50, floor)
        if c == 1:
            target = "p50 %s of floor: %s" % (fr(fl), ok(None if fl is None else fl <= 1.3))
        else:
            target = ">=3x: %s" % ok(None if x is None else x >= 3)
        body.append([c, mode, f0(a), f0(hc), fr(x), f0(p50), f0(med("p50_us", "hashicorp", "tcp-bolt", c)),
                     f0(med("p99_us", "raftkit", mode, c)), f0(med("p99_us", "hashicorp", "tcp-bolt", c)), target,
                     other("raftkit", mode, c), other("hashicorp", "tcp-bolt", c),
                     "%d/%d" % (n("raftkit", mode, c), n("hashicorp", "tcp-bolt", c)),
                     unhealthy("raftkit", mode, c) + unhealthy("hashicorp", "tcp-bolt", c)])
table(["C", "raftkit", "ops/s", "tcp-bolt ops/s", "ratio", "rk p50", "hc p50", "rk p99", "hc p99", "target",
       "rk other", "hc other", "runs", "unhealthy"], body)

print("\nW3  QUIC loopback + durable log  (target: >= 0.7x W2's ops/s, same storage)")
body = []
for c in sorted({k[2] for k in cells if k[1] in ("quic-lmdb", "quic-file")}):
    for storage in ("lmdb", "file"):
        a, b = med("ops_per_sec", "raftkit", "quic-" + storage, c), med("ops_per_sec", "raftkit", "tcp-" + storage, c)
        x = ratio(a, b)
        body.append([c, storage, f0(a), f0(b), fr(x), ok(None if x is None else x >= 0.7),
                     f0(med("p50_us", "raftkit", "quic-" + storage, c)), f0(med("p99_us", "raftkit", "quic-" + storage, c)),
                     other("raftkit", "quic-" + storage, c), n("raftkit", "quic-" + storage, c),
                     unhealthy("raftkit", "quic-" + storage, c)])
table(["C", "storage", "QUIC ops/s", "TCP ops/s", "ratio", ">=0.7x", "p50", "p99", "other", "runs", "unhealthy"], body)
PY
}

case "${1:-run}" in
    summary)
        summary "${2:?usage: $0 summary FILE.jsonl}"
        exit 0
        ;;
    run) ;;
    *)
        echo "usage: $0 [run | summary FILE.jsonl]" >&2
        exit 2
        ;;
esac

RAFTKIT="${RAFTKIT:-$ROOT/target/release/raftkit}"
HC_BENCH="${HC_BENCH:?set HC_BENCH to the HashiCorp harness binary (see shared/bench/hashicorp/README.md)}"
OR_BENCH="${OR_BENCH:-}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-1s}"
VALUE="${VALUE:-256}"
W1_CLIENTS="${W1_CLIENTS:-1 16 64 256}"
WT_CLIENTS="${WT_CLIENTS:-1 16 64 256}"
W2_CLIENTS="${W2_CLIENTS:-1 64}"
W3_CLIENTS="${W3_CLIENTS:-64}"
WORKLOADS="${WORKLOADS:-W1 W2 W3}"
FLOOR_DURATION="${FLOOR_DURATION:-2s}"
QUIET_WAIT="${QUIET_WAIT:-20}"
RK_ARGS="${RK_ARGS:-}"
OUT="${OUT:-$HERE/results/compare-$(date -u +%Y%m%dT%H%MZ).jsonl}"
SCRATCH="${SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/raftkit-compare.XXXXXX")}"

for bin in "$RAFTKIT" "$HC_BENCH" ${OR_BENCH:+"$OR_BENCH"}; do
    [ -x "$bin" ] || { echo "not executable: $bin" >&2; exit 1; }
done
mkdir -p "$(dirname "$OUT")" "$SCRATCH"
trap 'rm -rf "$SCRATCH"/raftkit-bench-* "$SCRATCH"/hcraft-bench-*' EXIT

busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
# Waits (at most QUIET_WAIT s) for a second in which the machine used < 0.2 cores.
wait_quiet() {
    [ "$QUIET_WAIT" -gt 0 ] || return 0
    local deadline=$((SECONDS + QUIET_WAIT)) a b hz
    hz=$(getconf CLK_TCK)
    while [ $SECONDS -lt $deadline ]; do
        a=$(busy_jiffies); sleep 1; b=$(busy_jiffies)
        if [ $((b - a)) -lt $((hz / 5)) ]; then return 0; fi
    done
    echo "  (machine not quiet after ${QUIET_WAIT}s; running anyway)" >&2
}

# shellcheck source=bench/common.sh
. "$HERE/common.sh"

rk() { # label transport storage clients
    wait_quiet
    # RK_ARGS is split into words on purpose: it holds flags.
    # shellcheck disable=SC2086
    rk_cell "$1" "$2+$3 C=$4" --transport "$2" --storage "$3" --clients "$4" --value-size "$VALUE" $RK_ARGS
}

hc() { # label mode clients
    wait_quiet
    hc_cell "$1" "$2 C=$3" -mode "$2" -clients "$3" -value-size "$VALUE"
}

orb() { # label mode clients
    wait_quiet
    or_cell "$1" "$2 C=$3" -mode "$2" -clients "$3" -value-size "$VALUE"
}

# in_turn ROUND CELL...: runs the cells (each a command line of words without
# spaces), starting with the ROUND-th one, so that each goes first in some round.
in_turn() {
    local round="$1" i
    shift
    local cells=("$@")
    for ((i = 0; i < ${#cells[@]}; i++)); do
        # Split into words on purpose: each cell is a command line.
        # shellcheck disable=SC2086
        ${cells[$(((i + round) % ${#cells[@]}))]}
    done
}

echo "# $(date -u +%FT%TZ) $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg); rounds=$ROUNDS duration=$DURATION warmup=$WARMUP value=$VALUE; raftkit flags: ${RK_ARGS:-none}; scratch $SCRATCH ($(df --output=fstype "$SCRATCH" | tail -1)); out $OUT" >&2

for round in $(seq 1 "$ROUNDS"); do
    label="round$round"
    # The floors of this round (the disk and loopback vary with the machine's load).
    wait_quiet
    rm -f "$SCRATCH/floor.jsonl"
    "$RAFTKIT" bench floor --dir "$SCRATCH" --duration "$FLOOR_DURATION" --json "$SCRATCH/floor.jsonl" >&2
    tag floor "$label" <"$SCRATCH/floor.jsonl" >>"$OUT"
    # Each round starts each cell's implementations at a different one.
    for w in $WORKLOADS; do
        case "$w" in
            W1)
                for c in $W1_CLIENTS; do
                    in_turn "$round" "rk $label inmem memory $c" "hc $label inmem $c" \
                        ${OR_BENCH:+"orb $label inmem $c"}
                done ;;
            WT)
                for c in $WT_CLIENTS; do
                    in_turn "$round" "rk $label tcp memory $c" "hc $label tcp-mem $c" \
                        ${OR_BENCH:+"orb $label tcp-mem $c"}
                done ;;
            W2)
                for c in $W2_CLIENTS; do
                    in_turn "$round" "rk $label tcp lmdb $c" "rk $label tcp file $c" "hc $label tcp-bolt $c"
                done ;;
            W3)
                for c in $W3_CLIENTS; do
                    rk $label quic lmdb "$c"; rk $label quic file "$c"
                done ;;
            *) echo "unknown workload $w" >&2; exit 2 ;;
        esac
    done
done

grep -hE "error|WARN|panic" "$SCRATCH/stderr.log" 2>/dev/null | sort | uniq -c | sort -rn | head -20 >&2 || true
echo "rows: $OUT" >&2
summary "$OUT"
