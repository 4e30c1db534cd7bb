#!/usr/bin/env bash
# The CI step both recipes call: write a SARIF report for the code-scanning UI, then gate the file.
#
#   examples/ci/trainguard-ci.sh DATA [POLICY]
#
# Environment: TRAINGUARD_LEDGER (ledger path, default .trainguard/ledger.db),
#              TRAINGUARD_OUT (output folder, default trainguard-out),
#              TRAINGUARD_INGEST_SOURCE (if set, record DATA under this source first: for pipelines
#              where CI itself is the ingestion point; otherwise the data team ingests it).
# Exit code: the gate's (0 pass, 3 quarantine, 1 fail, 2 bad input), so the job fails unless the
# data passes. The SARIF file is written whatever the verdict, for the upload step.
set -uo pipefail
data=${1:?usage: trainguard-ci.sh DATA [POLICY]}
policy=${2:-}
ledger=${TRAINGUARD_LEDGER:-.trainguard/ledger.db}
out=${TRAINGUARD_OUT:-trainguard-out}
mkdir -p "$out"

if [ -n "${TRAINGUARD_INGEST_SOURCE:-}" ]; then
  trainguard ingest "$data" --ledger "$ledger" --source "$TRAINGUARD_INGEST_SOURCE" \
    --licence "${TRAINGUARD_INGEST_LICENCE:-unknown}" --owner "${TRAINGUARD_INGEST_OWNER:-ci}" --by ci || exit 2
fi

trainguard scan "$data" --quiet --format sarif --out "$out/trainguard.sarif" --fail-on none
scan_rc=$?
if [ "$scan_rc" -eq 2 ]; then
  echo "trainguard: could not read $data" >&2
  exit 2
fi

gate_args=(gate "$data" --ledger "$ledger" --by ci --format json)
[ -n "$policy" ] && gate_args+=(--policy "$policy")
trainguard "${gate_args[@]}" > "$out/gate.json"
rc=$?
echo "trainguard gate: exit $rc (0 pass, 3 quarantine, 1 fail); details in $out/gate.json" >&2
exit "$rc"
