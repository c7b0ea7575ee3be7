package metrics

import (
	"log/slog"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
)

// The asynq queue metrics. Names, labels and meanings are those of asynq's
// own collector (github.com/hibiken/asynq/x/metrics), so that dashboards
// and alerts written for it work unchanged; that collector lives in a
// separate Go module (github.com/hibiken/asynq/x, last published 2021, built
// against go-redis v8), which is why claudeq carries this copy.
// asynq_tasks_enqueued_total is a gauge despite its suffix, as upstream.
var (
	queueTasksDesc = prometheus.NewDesc("asynq_tasks_enqueued_total",
		"Number of tasks enqueued; broken down by queue and state.", []string{"queue", "state"}, nil)
	queueSizeDesc = prometheus.NewDesc("asynq_queue_size",
		"Number of tasks in a queue", []string{"queue"}, nil)
	queueLatencyDesc = prometheus.NewDesc("asynq_queue_latency_seconds",
		"Number of seconds the oldest pending task is waiting in pending state to be processed.", []string{"queue"}, nil)
	queueMemoryDesc = prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes",
		"Number of memory used by a given queue (approximated number by sampling).", []string{"queue"}, nil)
	queueProcessedDesc = prometheus.NewDesc("asynq_tasks_processed_total",
		"Number of tasks processed (both succeeded and failed); broken down by queue", []string{"queue"}, nil)
	queueFailedDesc = prometheus.NewDesc("asynq_tasks_failed_total",
		"Number of tasks failed; broken down by queue", []string{"queue"}, nil)
	queuePausedDesc = prometheus.NewDesc("asynq_queue_paused_total",
		"Number of queues paused", []string{"queue"}, nil)
	queueUpDesc = prometheus.NewDesc("claudeq_queue_metrics_up",
		"1 when the last scrape read every asynq queue from Redis, 0 when it failed (the asynq_* series are then missing).", nil, nil)
)

// QueueCollector exports the state of the asynq queues (size by state,
// latency of the oldest pending task, processed and failed totals, paused)
// by asking Redis through an asynq.Inspector at every scrape. The queue
// label is an asynq queue name: critical, default, batch or webhooks (the
// set is fixed in code). It is safe for concurrent use.
type QueueCollector struct {
	inspector *asynq.Inspector
	log       *slog.Logger
}

// NewQueueCollector returns a collector over inspector; collection errors
// go to log (nil: discarded) and to claudeq_queue_metrics_up.
func NewQueueCollector(inspector *asynq.Inspector, log *slog.Logger) *QueueCollector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &QueueCollector{inspector: inspector, log: log}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueTasksDesc, queueSizeDesc, queueLatencyDesc, queueMemoryDesc,
		queueProcessedDesc, queueFailedDesc, queuePausedDesc, queueUpDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. It reads every queue first and
// reports nothing but claudeq_queue_metrics_up 0 when any read fails, so
// that a scrape never mixes queues from different moments with gaps.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	infos, err := c.read()
	if err != nil {
		c.log.Warn("collect asynq queue metrics", "err", err)
		ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, 1)
	for _, q := range infos {
		for _, s := range []struct {
			state string
			n     int
		}{
			{"active", q.Active}, {"pending", q.Pending}, {"scheduled", q.Scheduled}, {"retry", q.Retry},
			{"archived", q.Archived}, {"completed", q.Completed}, {"aggregating", q.Aggregating},
		} {
			ch <- prometheus.MustNewConstMetric(queueTasksDesc, prometheus.GaugeValue, float64(s.n), q.Queue, s.state)
		}
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(queueSizeDesc, prometheus.GaugeValue, float64(q.Size), q.Queue)
		ch <- prometheus.MustNewConstMetric(queueLatencyDesc, prometheus.GaugeValue, q.Latency.Seconds(), q.Queue)
		ch <- prometheus.MustNewConstMetric(queueMemoryDesc, prometheus.GaugeValue, float64(q.MemoryUsage), q.Queue)
		ch <- prometheus.MustNewConstMetric(queueProcessedDesc, prometheus.CounterValue, float64(q.ProcessedTotal), q.Queue)
		ch <- prometheus.MustNewConstMetric(queueFailedDesc, prometheus.CounterValue, float64(q.FailedTotal), q.Queue)
		ch <- prometheus.MustNewConstMetric(queuePausedDesc, prometheus.GaugeValue, paused, q.Queue)
	}
}

func (c *QueueCollector) read() ([]*asynq.QueueInfo, error) {
	names, err := c.inspector.Queues()
	if err != nil {
		return nil, err
	}
	infos := make([]*asynq.QueueInfo, 0, len(names))
	for _, n := range names {
		qi, err := c.inspector.GetQueueInfo(n)
		if err != nil {
			return nil, err
		}
		infos = append(infos, qi)
	}
	return infos, nil
}
