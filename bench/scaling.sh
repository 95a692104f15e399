#!/usr/bin/env bash
# scaling.sh — how raftkit's W1 and W2 (see compare.sh) move with the number
# of voters and with the value size, and HashiCorp Raft beside it where its
# harness can follow (it runs 3 voters only, so only the value sizes).
#
#   nodes:  3, 5, 7 voters,      256 B values, C = 64
#   values: 16 B, 1 KiB, 64 KiB, 3 voters,     C = 64
#   each for W1 (inmem + memory) and W2 (tcp + file, tcp + lmdb; HashiCorp tcp-bolt)
#
# Usage:
#   HC_BENCH=/path/to/bench bench/scaling.sh       # run, then print the summary
#   bench/scaling.sh summary FILE.jsonl            # only the summary of earlier rows
#
# Knobs (environment): RAFTKIT (default target/release/raftkit), HC_BENCH
# (optional: without it the HashiCorp columns stay empty), ROUNDS (3),
# DURATION (5s), WARMUP (1s), CLIENTS (64), NODES (3 5 7), VALUES
# (16 1024 65536), SCRATCH (data directories; keep it on a disk, not tmpfs),
# OUT (bench/results/scaling-<UTC>.jsonl).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

summary() {
    python3 - "$1" <<'PY'
import json, statistics, sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cells = defaultdict(list)
for r in rows:
    cells[(r["impl"], r["mode"], r.get("nodes", 3), r["value_size"])].append(r)

def med(impl, mode, nodes, value, key):
    xs = [r[key] for r in cells.get((impl, mode, nodes, value), []) if isinstance(r.get(key), (int, float))]
    return statistics.median(xs) if xs else None

def fmt(x, d=0):
    return "-" if x is None else f"{x:,.{d}f}"

nodes = sorted({k[2] for k in cells if k[0] == "raftkit"})
values = sorted({k[3] for k in cells if k[0] == "raftkit"})
modes = [m for m in ("inmem-memory", "tcp-file", "tcp-lmdb") if any(k[1] == m for k in cells)]
hc_mode = {"inmem-memory": "inmem", "tcp-file": "tcp-bolt", "tcp-lmdb": "tcp-bolt"}

print("medians per cell; ops/s and p99 µs; C =", sorted({r["clients"] for r in rows}))
print()
print("voters (256 B values)")
print(f"{'mode':<14}" + "".join(f"{f'n={n} ops/s':>14}{'p99':>9}" for n in nodes) + f"{'n=7 / n=3':>11}")
for m in modes:
    line = f"{m:<14}"
    for n in nodes:
        line += f"{fmt(med('raftkit', m, n, 256, 'ops_per_sec')):>14}{fmt(med('raftkit', m, n, 256, 'p99_us')):>9}"
    a, b = med("raftkit", m, nodes[0], 256, "ops_per_sec"), med("raftkit", m, nodes[-1], 256, "ops_per_sec")
    line += f"{(f'{b / a:.2f}x' if a and b else '-'):>11}"
    print(line)
print()
print("value size (3 voters)")
print(f"{'mode':<14}{'value':>8}{'raftkit ops/s':>15}{'MB/s':>8}{'p99':>9}{'HashiCorp ops/s':>17}{'p99':>9}{'ratio':>8}")
for m in modes:
    for v in values:
        rk = med("raftkit", m, 3, v, "ops_per_sec")
        hc = med("hashicorp", hc_mode[m], 3, v, "ops_per_sec")
        mb = None if rk is None else rk * (v + 16) / 1e6
        print(f"{m:<14}{v:>8}{fmt(rk):>15}{fmt(mb, 1):>8}{fmt(med('raftkit', m, 3, v, 'p99_us')):>9}"
              f"{fmt(hc):>17}{fmt(med('hashicorp', hc_mode[m], 3, v, 'p99_us')):>9}"
              f"{(f'{rk / hc:.2f}x' if rk and hc else '-'):>8}")
unhealthy = [r for r in rows if r["impl"] == "raftkit" and not r.get("healthy", True)]
print()
print(f"raftkit runs: {sum(1 for r in rows if r['impl'] == 'raftkit')}, unhealthy (election, errors or a stalled follower): {len(unhealthy)}")
PY
}

if [ "${1:-}" = summary ]; then
    summary "$2"
    exit 0
fi

RAFTKIT="${RAFTKIT:-$ROOT/target/release/raftkit}"
HC_BENCH="${HC_BENCH:-}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-1s}"
CLIENTS="${CLIENTS:-64}"
NODES="${NODES:-3 5 7}"
VALUES="${VALUES:-16 1024 65536}"
STAMP="$(date -u +%Y%m%dT%H%MZ)"
OUT="${OUT:-$ROOT/bench/results/scaling-$STAMP.jsonl}"
SCRATCH="${SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/raftkit-scaling.XXXXXX")}"

[ -x "$RAFTKIT" ] || { echo "not executable: $RAFTKIT (cargo build -p raftkit-node --release)" >&2; exit 1; }
[ -z "$HC_BENCH" ] || [ -x "$HC_BENCH" ] || { echo "not executable: $HC_BENCH" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")" "$SCRATCH"
trap 'rm -rf "$SCRATCH"/raftkit-bench-* "$SCRATCH"/hcraft-bench-*' EXIT

# shellcheck source=bench/common.sh
. "$HERE/common.sh"

rk() { # label transport storage nodes value
    rk_cell "$1" "$2+$3 n=$4 ${5}B C=$CLIENTS" --transport "$2" --storage "$3" --nodes "$4" \
        --clients "$CLIENTS" --value-size "$5"
}

hc() { # label mode value
    [ -n "$HC_BENCH" ] || return 0
    hc_cell "$1" "$2 ${3}B C=$CLIENTS" -mode "$2" -clients "$CLIENTS" -value-size "$3"
}

echo "# $(date -u +%FT%TZ) $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg); rounds=$ROUNDS duration=$DURATION clients=$CLIENTS; out $OUT" >&2
for round in $(seq 1 "$ROUNDS"); do
    label="round$round"
    for n in $NODES; do
        rk $label inmem memory "$n" 256
        rk $label tcp file "$n" 256
        rk $label tcp lmdb "$n" 256
    done
    for v in $VALUES; do
        [ "$v" = 256 ] && continue
        rk $label inmem memory 3 "$v"; hc $label inmem "$v"
        rk $label tcp file 3 "$v"; rk $label tcp lmdb 3 "$v"; hc $label tcp-bolt "$v"
    done
    hc $label inmem 256
    hc $label tcp-bolt 256
done

echo "rows: $OUT" >&2
summary "$OUT"
