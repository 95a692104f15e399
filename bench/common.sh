# common.sh — what compare.sh and scaling.sh share: one raftkit or HashiCorp
# cell, its JSON row tagged and appended to $OUT. Sourced, not run.
#
# The caller sets RAFTKIT, HC_BENCH, DURATION, WARMUP, SCRATCH and OUT.

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

# hc_cell LABEL WHAT ARGS...: the HashiCorp harness with ARGS... over the same
# window; its last output line is the row.
hc_cell() {
    local label="$1" what="$2" line
    shift 2
    echo "hashicorp $label $what" >&2
    line="$("$HC_BENCH" "$@" -duration "$DURATION" -warmup "$WARMUP" -dir "$SCRATCH" \
        2>>"$SCRATCH/stderr.log" | tail -n 1)" || true
    if [ -n "$line" ]; then
        printf '%s\n' "$line" | tag hashicorp "$label" | tee -a "$OUT" | cut -c1-160 >&2
    else
        echo "  hashicorp FAILED (see $SCRATCH/stderr.log)" >&2
    fi
}
