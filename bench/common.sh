# common.sh — what compare.sh and scaling.sh share: one raftkit, HashiCorp or
# openraft cell, its JSON row tagged and appended to $OUT. Sourced, not run.
#
# The caller sets RAFTKIT, HC_BENCH (and OR_BENCH for openraft cells),
# DURATION, WARMUP, SCRATCH and OUT.

# Adds "impl" and "label" to a JSON object line.
tag() { sed -e "s/^{/{\"impl\":\"$1\",\"label\":\"$2\",/"; }

# rk_cell LABEL WHAT ARGS...: `raftkit bench cluster ARGS...` over the common
# window; WHAT names the cell in the progress lines.
rk_cell() {
    local label="$1" what="$2" tmp="$SCRATCH/rk.jsonl"
    shift 2
    rm -f "$tmp"
    echo "raftkit   $label $what" >&2
    if "$RAFTKIT" bench cluster "$@" --duration "$DURATION" --warmup "$WARMUP" \
        --data-dir "$SCRATCH" --json "$tmp" >/dev/null 2>>"$SCRATCH/stderr.log"; then
        tag raftkit "$label" <"$tmp" | tee -a "$OUT" | cut -c1-160 >&2
    else
        echo "  raftkit FAILED (see $SCRATCH/stderr.log)" >&2
    fi
}

# peer_cell IMPL BIN LABEL WHAT ARGS...: a peer's harness (shared/bench/*)
# with ARGS... over the same window; its last output line is the row, tagged
# with IMPL.
peer_cell() {
    local impl="$1" bin="$2" label="$3" what="$4" line
    shift 4
    printf '%-9s %s %s\n' "$impl" "$label" "$what" >&2
    line="$("$bin" "$@" -duration "$DURATION" -warmup "$WARMUP" \
        2>>"$SCRATCH/stderr.log" | tail -n 1)" || true
    if [ -n "$line" ]; then
        printf '%s\n' "$line" | tag "$impl" "$label" | tee -a "$OUT" | cut -c1-160 >&2
    else
        echo "  $impl FAILED (see $SCRATCH/stderr.log)" >&2
    fi
}

# hc_cell LABEL WHAT ARGS...: the HashiCorp harness (its bolt files under SCRATCH).
hc_cell() {
    local label="$1" what="$2"
    shift 2
    peer_cell hashicorp "$HC_BENCH" "$label" "$what" "$@" -dir "$SCRATCH"
}

# or_cell LABEL WHAT ARGS...: the openraft harness (memory only; no -dir).
or_cell() {
    local label="$1" what="$2"
    shift 2
    peer_cell openraft "$OR_BENCH" "$label" "$what" "$@"
}
