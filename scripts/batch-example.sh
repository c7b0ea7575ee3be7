#!/usr/bin/env bash
# A worked example of batch processing through claudeq: copy it and change
# the prompts. It writes a small prompts file, runs it as a Message Batch
# and turns the results into a CSV of custom_id, result type and answer.
#
#   CLAUDEQ_URL=http://127.0.0.1:8080 CLAUDEQ_API_KEY=cqk_... scripts/batch-example.sh [workdir]
#
# Against `make run` (claudeq dev) the URL is the default and the key is the
# one it prints. The key needs the batches scope. With the claudeq CLI on
# PATH (go install ./cmd/claudeq) it uses `claudeq batch`; without it, plain
# curl and jq (USE_CURL=1 forces curl).
set -euo pipefail

: "${CLAUDEQ_URL:=http://127.0.0.1:8080}"
: "${CLAUDEQ_API_KEY:?set CLAUDEQ_API_KEY to a claudeq key with the batches scope}"
export CLAUDEQ_URL CLAUDEQ_API_KEY
dir="${1:-$(mktemp -d)}"
mkdir -p "$dir"
cd "$dir"

# 1. The prompts: one JSON object per line. Simple lines give a prompt
#    (model and max_tokens are optional); Anthropic lines give full params.
#    custom_id ties each result to its line: 1-64 letters, digits, _ or -.
cat > prompts.jsonl <<'EOF'
{"custom_id": "ticket-1001", "prompt": "Classify this support ticket as billing, bug or question: 'I was charged twice this month.'", "model": "haiku", "max_tokens": 50}
{"custom_id": "ticket-1002", "prompt": "Classify this support ticket as billing, bug or question: 'The export button does nothing.'", "model": "haiku", "max_tokens": 50}
{"custom_id": "ticket-1003", "prompt": "Classify this support ticket as billing, bug or question: 'How do I add a teammate?'", "model": "haiku", "max_tokens": 50}
{"custom_id": "summary-1", "params": {"model": "sonnet", "max_tokens": 300, "system": "You write one-paragraph summaries.", "messages": [{"role": "user", "content": "Summarize: queues decouple producers from consumers, absorb bursts and make retries safe."}]}}
EOF
echo "prompts: $dir/prompts.jsonl ($(wc -l < prompts.jsonl) requests)"

if command -v claudeq >/dev/null 2>&1 && [ -z "${USE_CURL:-}" ]; then
  # 2a. Submit, wait with a progress bar, write the results. Above 100,000
  #     requests or 256 MB the CLI splits the file into several batches and
  #     prints each id; an interrupted wait resumes with
  #     `claudeq batch wait ID...` and `claudeq batch results ID... --out FILE`.
  claudeq batch submit prompts.jsonl --wait --out results.jsonl
else
  # 2b. The same with curl: build {"requests": [{"custom_id", "params"}]} ...
  command -v jq >/dev/null || { echo "install jq, or the claudeq CLI" >&2; exit 1; }
  jq -c 'if .params then {custom_id, params}
         else {custom_id, params: {model: (.model // "sonnet"), max_tokens: (.max_tokens // 1024),
                                   messages: [{role: "user", content: .prompt}]}} end' prompts.jsonl \
    | jq -s '{requests: .}' > batch.json
  auth=(-H "Authorization: Bearer $CLAUDEQ_API_KEY")
  id=$(curl -fsS "${auth[@]}" -H 'Content-Type: application/json' --data-binary @batch.json \
         "$CLAUDEQ_URL/v1/messages/batches" | jq -r .id)
  echo "batch: $id"
  # ... poll until processing_status is "ended" ...
  while :; do
    b=$(curl -fsS "${auth[@]}" "$CLAUDEQ_URL/v1/messages/batches/$id")
    echo "$b" | jq -c '{processing_status, request_counts}'
    [ "$(echo "$b" | jq -r .processing_status)" = ended ] && break
    sleep 2
  done
  # ... and download the results (JSONL, one line per request, any order).
  curl -fsS "${auth[@]}" "$CLAUDEQ_URL/v1/messages/batches/$id/results" > results.jsonl
fi

# 3. Use the results: succeeded lines carry the Anthropic Message, errored
#    ones an error object; canceled and expired ones nothing else.
command -v jq >/dev/null || { echo "results: $dir/results.jsonl"; exit 0; }
jq -r '[.custom_id, .result.type,
        (if .result.type == "succeeded" then ([.result.message.content[] | select(.type == "text") | .text] | join(" "))
         elif .result.type == "errored" then .result.error.error.message else "" end)] | @csv' results.jsonl > results.csv
echo "results: $dir/results.jsonl, $dir/results.csv"
cat results.csv
