package claudeq

import (
	"strings"
	"time"
)

// JobBatch is the kind of a job that is one request of a Message Batch.
const JobBatch = "batch"

// BatchIDPrefix starts every Message Batch id, as Anthropic's do.
const BatchIDPrefix = "msgbatch_"

// BatchStatus is a Message Batch's processing_status.
type BatchStatus string

// The processing statuses of a batch: in_progress until every request is
// done; canceling once a cancel was asked for and queued requests are being
// canceled (running ones finish); ended when every request has a result.
const (
	BatchInProgress BatchStatus = "in_progress"
	BatchCanceling  BatchStatus = "canceling"
	BatchEnded      BatchStatus = "ended"
)

// BatchResultType is the result type of one request of a batch.
type BatchResultType string

// The result types of a batch request, as in the Message Batches API.
const (
	ResultSucceeded BatchResultType = "succeeded"
	ResultErrored   BatchResultType = "errored"
	ResultCanceled  BatchResultType = "canceled"
	ResultExpired   BatchResultType = "expired"
)

// BatchCounts tallies a batch's requests by state; their sum is always the
// number of requests in the batch.
type BatchCounts struct {
	Processing int64 `json:"processing" bson:"processing"`
	Succeeded  int64 `json:"succeeded" bson:"succeeded"`
	Errored    int64 `json:"errored" bson:"errored"`
	Canceled   int64 `json:"canceled" bson:"canceled"`
	Expired    int64 `json:"expired" bson:"expired"`
}

// Total returns the number of requests counted.
func (c BatchCounts) Total() int64 {
	return c.Processing + c.Succeeded + c.Errored + c.Canceled + c.Expired
}

// Batch is a Message Batch: its owner, status and counts. Its live state is
// in Redis while it runs; the store keeps the durable copy, written when it
// is created and when it ends.
type Batch struct {
	ID         string      `json:"id" bson:"_id"`
	UserID     string      `json:"user_id" bson:"user_id"`
	Department string      `json:"department,omitempty" bson:"department,omitempty"`
	KeyID      string      `json:"-" bson:"key_id,omitempty"`
	Status     BatchStatus `json:"processing_status" bson:"processing_status"`
	Counts     BatchCounts `json:"request_counts" bson:"request_counts"`
	// Requests is the number of requests in the batch.
	Requests int64 `json:"requests" bson:"requests"`
	// ReservedMicros is the worst-case cost reserved at submit (micro-USD).
	ReservedMicros int64 `json:"-" bson:"reserved_micros"`
	// WebhookURL receives the batch.ended event (the key's default webhook).
	WebhookURL        string     `json:"-" bson:"webhook_url,omitempty"`
	CreatedAt         time.Time  `json:"created_at" bson:"created_at"`
	ExpiresAt         time.Time  `json:"expires_at" bson:"expires_at"`
	EndedAt           *time.Time `json:"ended_at" bson:"ended_at,omitempty"`
	CancelInitiatedAt *time.Time `json:"cancel_initiated_at" bson:"cancel_initiated_at,omitempty"`
}

// IsBatchID reports whether id names a Message Batch.
func IsBatchID(id string) bool {
	return strings.HasPrefix(id, BatchIDPrefix) && !strings.Contains(id, ":")
}

// BatchItemID returns the job id of request customID of batch batchID:
// "<batch id>:<custom id>". Custom ids hold only letters, digits, _ and -,
// so the id splits back unambiguously (SplitBatchItemID).
func BatchItemID(batchID, customID string) string { return batchID + ":" + customID }

// SplitBatchItemID returns the batch and custom id of a batch request's job
// id, and false for any other job id.
func SplitBatchItemID(jobID string) (batchID, customID string, ok bool) {
	if !strings.HasPrefix(jobID, BatchIDPrefix) {
		return "", "", false
	}
	b, c, ok := strings.Cut(jobID, ":")
	if !ok || c == "" {
		return "", "", false
	}
	return b, c, true
}

// BatchResultOf returns the result type of a terminal batch request's job
// record: succeeded, errored (failed), canceled or expired (canceled with
// an error of type "expired").
func BatchResultOf(j *Job) BatchResultType {
	switch j.Status {
	case StatusSucceeded:
		return ResultSucceeded
	case StatusCanceled:
		if j.Error != nil && j.Error.Type == string(ResultExpired) {
			return ResultExpired
		}
		return ResultCanceled
	}
	return ResultErrored
}
