// Package chaos holds claudeq's reliability proof: tests that run the real
// binaries (cmd/api, cmd/worker, cmd/scheduler, cmd/claude-sim) as separate
// processes against a real redis-server (appendonly yes, appendfsync
// always, maxmemory-policy noeviction) and the MongoDB-wire store, kill,
// restart and starve each part under load, and end every scenario with an
// accounting check: each job that got a 202 ends succeeded or failed with a
// clear error; one job record, one ledger entry (succeeded jobs only), one
// conversation and one webhook event (after de-duplication by webhook-id)
// per job; the Redis quota counters equal the ledger with nothing left
// reserved; nothing is left queued, running or retrying.
//
// The package has no code outside its tests, which build only with the
// "chaos" tag, so that go test ./... (under -race, with every other
// package) does not run them: they load the machine for minutes and their
// processes need its CPUs. make test runs them after the rest, at the
// short scale (go test -tags chaos ./internal/chaos, 2–6 minutes);
// make chaos at full scale, one at a time. The scale is chosen by the environment
// variable CLAUDEQ_CHAOS: unset or "short" (a few minutes) or "full" (make
// chaos).
package chaos
