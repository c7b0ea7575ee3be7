// Package audit is claudeq's tamper-evident audit log: one record per API
// request decision and per admin action, kept in MongoDB as a single hash
// chain, plus periodic anchors.
//
// # The chain
//
// Every Record has a sequence number Seq (its _id: 1, 2, 3, … without gaps)
// and Hash = SHA-256(canonical encoding of its fields ‖ PrevHash), where
// PrevHash is the Hash of record Seq-1 (64 zeros for record 1); with
// Config.Key set it is HMAC-SHA-256 under that key instead, so that someone
// who can write to the database but does not hold the key cannot forge a
// consistent chain. The canonical encoding is fixed-order, length-prefixed
// and versioned (V), and Time is kept to the millisecond that BSON stores;
// see Record.
//
// Editing a record breaks its Hash; deleting one leaves a gap in Seq;
// swapping two breaks their Hash (Seq is hashed) and the PrevHash links;
// rewriting the chain from some record on (recomputing every hash) is caught
// by any anchor or Redis head past that point, and made impossible by a key.
// Truncating the tail is caught by an anchor or the Redis head beyond the
// new end; records written after the last anchor and not yet covered by the
// Redis head can be truncated undetected, which is why the scheduler anchors
// often and, ideally, also ships each anchor to a log store outside MongoDB.
//
// # One chain, many writers
//
// Every api and worker replica writes to the same chain. The order is
// decided by MongoDB's unique _id, so it needs no coordinator to be correct:
// a writer takes the chain head (Seq, Hash), computes its batch as Seq+1…
// Seq+n, and inserts it in order. If another writer took Seq+1 first, the
// insert fails with a duplicate key; the writer re-reads the head from
// MongoDB and recomputes the rest of its batch on top of it. A record is thus
// only ever stored right after the record whose Hash it names as PrevHash,
// and records are never updated, so the chain stays valid under any
// interleaving. Each record also carries a random EventID under a unique
// index, so that a batch whose insert outcome was unknown (a timeout) is not
// stored twice when retried.
//
// Redis only makes this fast: a writer holds a short lease
// (SET NX PX, Config.LeaseTTL) while it appends a batch, and the lease script
// hands it the current head from Redis, which the writer advances (never
// backwards) when it is done. Replicas therefore take turns per batch instead
// of colliding, and need no MongoDB read per batch. If the lease expires
// mid-write or Redis is down, writers fall back to the optimistic protocol
// above: slower under contention, never wrong. Batches keep the turns cheap
// (one lease round trip, one insert, one release per batch of up to
// MaxBatch records).
//
// Seq is the commit order; Time is when the event happened. Across replicas
// (and for records replayed from a spill file) the two orders can differ by
// up to a batch's latency.
//
// # Writing without slowing requests down
//
// Writer.Log never touches the network: it puts the record in a bounded
// buffer (WriterOptions.Buffer) that one goroutine drains, batches and
// appends (group commit). When MongoDB is down the goroutine keeps its
// batch, retries with backoff, and the buffer fills. When the buffer is full,
// Log applies backpressure: it waits up to WriterOptions.BlockTimeout for
// room (counted in Stats.Blocked); if there is still none it appends the
// record to a local spill file in WriterOptions.SpillDir (Stats.Spilled),
// which the writer replays into the chain, oldest file first, once the store
// answers again. Without a SpillDir, or if the spill write fails, Log
// returns ErrOverloaded (Stats.Refused). A request that cannot be audited
// is not served, so the api takes the room first: Writer.Reserve before it
// handles the request (refusing it with 503 when Reserve fails), the
// Ticket's Log after, which cannot then fail for want of room. Nothing is
// dropped silently. Close flushes what is buffered and, if the
// store is still down when its context ends, spills it too.
//
// A spill file survives a process restart, not the loss of its disk: give
// the api pods a persistent volume (or accept that an emptyDir spill dies
// with its pod, which the Refused/Spilled metrics make visible).
//
// # Checking it
//
// Chain.Anchor (run by the scheduler every few minutes) verifies the records
// since the previous anchor and stores a checkpoint (Seq, Hash) in the
// audit_anchors collection. Chain.Verify (the CLI's `claudeq audit verify`,
// the admin API) walks the whole chain, checks every hash, link and anchor
// and the Redis head, and reports the first broken or missing record.
//
// Records hold no prompt or response text: identities, a hash of the
// request, numbers, and for the content policy the kinds found and their
// counts.
package audit
