package audit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"math"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// Record kinds.
const (
	KindRequest = "request"
	KindAdmin   = "admin"
)

// Decisions on a request.
const (
	DecisionAllowed     = "allowed"
	DecisionRateLimited = "rate_limited"
	DecisionQuota       = "quota"
	DecisionPolicy      = "policy"
	DecisionAuthFailed  = "auth_failed"
)

// Admin actions. Others may be added; Action is free text.
const (
	ActionKeyCreated   = "key_created"
	ActionKeyRevoked   = "key_revoked"
	ActionKeyRotated   = "key_rotated"
	ActionKeyUpdated   = "key_updated"
	ActionNodeChanged  = "node_changed"
	ActionQuotaChanged = "quota_changed"
	ActionCachePurged  = "cache_purged"
)

// Version is the canonical-encoding version new records get.
const Version = 1

// genesis is the PrevHash of record 1.
var genesis = strings.Repeat("0", 64)

// Record is one audit log entry. Callers fill the event fields; Seq, V,
// PrevHash and Hash are set when the record joins the chain, EventID and
// Time when it is logged if they are empty.
//
// EventID is unique in the chain: a record whose EventID is already stored
// is not stored again. Leave it empty for a random one, or derive it from
// the event ("job:<id>:done") to make logging idempotent where the event
// itself may repeat, e.g. a job that asynq delivers twice.
//
// It never holds prompt or response text. Strings are made valid UTF-8 and
// cut to a bounded length (UserAgent 512 bytes, the others 256) before
// hashing, so that what is stored is what was hashed.
type Record struct {
	Seq         int64          `bson:"_id" json:"seq"`
	EventID     string         `bson:"eid" json:"event_id"`
	V           int            `bson:"v" json:"v"`
	Time        time.Time      `bson:"time" json:"time"`
	Kind        string         `bson:"kind" json:"kind"`
	UserID      string         `bson:"user_id,omitempty" json:"user_id,omitempty"`
	KeyID       string         `bson:"key_id,omitempty" json:"key_id,omitempty"`
	RequestHash string         `bson:"request_hash,omitempty" json:"request_hash,omitempty"`
	Model       string         `bson:"model,omitempty" json:"model,omitempty"`
	Tokens      int64          `bson:"tokens,omitempty" json:"tokens,omitempty"`
	CostMicros  int64          `bson:"cost_micros,omitempty" json:"cost_micros,omitempty"`
	ClientIP    string         `bson:"client_ip,omitempty" json:"client_ip,omitempty"`
	UserAgent   string         `bson:"user_agent,omitempty" json:"user_agent,omitempty"`
	Decision    string         `bson:"decision,omitempty" json:"decision,omitempty"`
	PolicyKinds map[string]int `bson:"policy_kinds,omitempty" json:"policy_kinds,omitempty"`
	Action      string         `bson:"action,omitempty" json:"action,omitempty"`
	Target      string         `bson:"target,omitempty" json:"target,omitempty"`
	PrevHash    string         `bson:"prev_hash" json:"prev_hash"`
	Hash        string         `bson:"hash" json:"hash"`

	// body is the record's BSON without the chain fields, encoded where
	// it is logged (see encodeBody); nil until then.
	body bsoncore.Document
}

// normalize prepares a logged record: identity, time and bounded, valid
// strings; chain fields cleared.
func normalize(r *Record, now time.Time) {
	if r.EventID == "" {
		r.EventID = newEventID()
	}
	if r.Time.IsZero() {
		r.Time = now
	}
	r.Time = r.Time.UTC().Truncate(time.Millisecond) // what BSON keeps
	r.Seq, r.V, r.PrevHash, r.Hash = 0, Version, "", ""
	r.EventID = clean(r.EventID, 64)
	r.Kind = clean(r.Kind, 32)
	r.UserID = clean(r.UserID, 256)
	r.KeyID = clean(r.KeyID, 256)
	r.RequestHash = clean(r.RequestHash, 256)
	r.Model = clean(r.Model, 256)
	r.ClientIP = clean(r.ClientIP, 256)
	r.UserAgent = clean(r.UserAgent, 512)
	r.Decision = clean(r.Decision, 64)
	r.Action = clean(r.Action, 64)
	r.Target = clean(r.Target, 256)
	if len(r.PolicyKinds) > 0 {
		pk := make(map[string]int, len(r.PolicyKinds))
		for k, n := range r.PolicyKinds {
			// Keys become BSON field names: no dots or $ (and valid UTF-8).
			k = fieldName.Replace(clean(k, 64))
			pk[k] += n
		}
		r.PolicyKinds = pk
	} else {
		r.PolicyKinds = nil
	}
}

// fieldName makes a policy kind a valid BSON field name.
var fieldName = strings.NewReplacer(".", "_", "$", "_")

// clean makes s valid UTF-8 of at most n bytes, without splitting a rune.
func clean(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hasher computes record hashes: SHA-256, or HMAC-SHA-256 under a key.
type hasher struct{ key []byte }

// sum returns the hex hash of r's canonical encoding followed by prev.
func (h hasher) sum(r *Record, prev string) string {
	var d hash.Hash
	if len(h.key) > 0 {
		d = hmac.New(sha256.New, h.key)
	} else {
		d = sha256.New()
	}
	d.Write(canonical(r, prev))
	return hex.EncodeToString(d.Sum(nil))
}

// canonical is the byte string a record's hash covers: a version tag, then
// every field except Hash in a fixed order, each integer as 8 bytes big
// endian and each string length-prefixed (uvarint), PolicyKinds sorted by
// kind, and finally PrevHash. Being length-prefixed, no two different
// records encode the same.
func canonical(r *Record, prev string) []byte {
	b := make([]byte, 0, 256)
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	num := func(n int64) { b = binary.BigEndian.AppendUint64(b, uint64(n)) }
	str("claudeq.audit")
	num(int64(r.V))
	num(r.Seq)
	str(r.EventID)
	num(r.Time.UnixMilli())
	str(r.Kind)
	str(r.UserID)
	str(r.KeyID)
	str(r.RequestHash)
	str(r.Model)
	num(r.Tokens)
	num(r.CostMicros)
	str(r.ClientIP)
	str(r.UserAgent)
	str(r.Decision)
	kinds := make([]string, 0, len(r.PolicyKinds))
	for k := range r.PolicyKinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	num(int64(len(kinds)))
	for _, k := range kinds {
		str(k)
		num(int64(r.PolicyKinds[k]))
	}
	str(r.Action)
	str(r.Target)
	str(prev)
	return b
}

// The chain fields, which the writer sets; every other field is known when
// the record is logged.
const (
	fieldSeq      = "_id"
	fieldPrevHash = "prev_hash"
	fieldHash     = "hash"
)

// encodeBody sets r.body: r's BSON document without the chain fields, the
// same bytes the driver makes of a Record (TestStoredDocumentIsTheRecordsEncoding;
// policy kinds in sorted order). A Writer calls it on the goroutine that logs
// the record, so that the writer's goroutine, which chains and inserts whole
// batches, only adds three fields to bytes it copies: on a single CPU,
// encoding a batch at once would hold up the requests behind it. It is
// written out field by field because the driver's reflection took most of
// the audit log's CPU per request.
func encodeBody(r *Record) {
	idx, b := bsoncore.AppendDocumentStart(make([]byte, 0, 320))
	str := func(k, v string, always bool) {
		if always || v != "" {
			b = bsoncore.AppendStringElement(b, k, v)
		}
	}
	i64 := func(k string, v int64) {
		if v != 0 {
			b = bsoncore.AppendInt64Element(b, k, v)
		}
	}
	str("eid", r.EventID, true)
	b = appendInt(b, "v", r.V)
	b = bsoncore.AppendDateTimeElement(b, "time", r.Time.UnixMilli())
	str("kind", r.Kind, true)
	str("user_id", r.UserID, false)
	str("key_id", r.KeyID, false)
	str("request_hash", r.RequestHash, false)
	str("model", r.Model, false)
	i64("tokens", r.Tokens)
	i64("cost_micros", r.CostMicros)
	str("client_ip", r.ClientIP, false)
	str("user_agent", r.UserAgent, false)
	str("decision", r.Decision, false)
	if len(r.PolicyKinds) > 0 {
		kinds := make([]string, 0, len(r.PolicyKinds))
		for k := range r.PolicyKinds {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		var pi int32
		pi, b = bsoncore.AppendDocumentElementStart(b, "policy_kinds")
		for _, k := range kinds {
			b = appendInt(b, k, r.PolicyKinds[k])
		}
		b, _ = bsoncore.AppendDocumentEnd(b, pi)
	}
	str("action", r.Action, false)
	str("target", r.Target, false)
	r.body, _ = bsoncore.AppendDocumentEnd(b, idx) // errors only on a bad index
}

// appendInt appends a Go int as the driver does: int32 when it fits.
func appendInt(b []byte, k string, v int) []byte {
	if v >= math.MinInt32 && v <= math.MaxInt32 {
		return bsoncore.AppendInt32Element(b, k, int32(v))
	}
	return bsoncore.AppendInt64Element(b, k, int64(v))
}

// document is the stored form of r once chained: its body (encoded now if
// it was not when logged) with _id first and the hashes last, which is the
// order of Record's fields.
func (r *Record) document() (bson.Raw, error) {
	if r.body == nil {
		encodeBody(r)
	}
	idx, doc := bsoncore.AppendDocumentStart(make([]byte, 0, len(r.body)+len(r.PrevHash)+len(r.Hash)+48))
	doc = bsoncore.AppendInt64Element(doc, fieldSeq, r.Seq)
	doc = append(doc, r.body[4:len(r.body)-1]...) // its elements
	doc = bsoncore.AppendStringElement(doc, fieldPrevHash, r.PrevHash)
	doc = bsoncore.AppendStringElement(doc, fieldHash, r.Hash)
	doc, err := bsoncore.AppendDocumentEnd(doc, idx)
	return bson.Raw(doc), err
}
