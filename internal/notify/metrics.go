package notify

import "github.com/prometheus/client_golang/prometheus"

// Values of the result label of aitrail_alert_deliveries_total and of the
// reason label of aitrail_alert_deliveries_dropped_total.
const (
	resultDelivered = "delivered"
	resultFailed    = "failed"
	reasonQueueFull = "queue_full"
	reasonRejected  = "rejected"
)

type metrics struct {
	deliveries *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	queue      *prometheus.GaugeVec
	firing     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, targets []*target) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aitrail_alert_deliveries_total",
			Help: "Alert delivery requests by target and result (delivered, or failed and to be retried or dropped).",
		}, []string{"target", "result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aitrail_alert_deliveries_dropped_total",
			Help: "Alerts given up for a target: its queue was full (the oldest is dropped) or it rejected them as invalid.",
		}, []string{"target", "reason"}),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "aitrail_alert_delivery_queue",
			Help: "Alerts waiting to be delivered to a target.",
		}, []string{"target"}),
		firing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "aitrail_alerts_firing",
			Help: "Alerts firing: sent and not yet resolved.",
		}),
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.dropped, m.queue, m.firing} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every series exists from the start, so that rate() and absent()
	// work before the first delivery.
	for _, t := range targets {
		m.deliveries.WithLabelValues(t.name, resultDelivered)
		m.deliveries.WithLabelValues(t.name, resultFailed)
		m.dropped.WithLabelValues(t.name, reasonQueueFull)
		m.dropped.WithLabelValues(t.name, reasonRejected)
		m.queue.WithLabelValues(t.name)
	}
	return m, nil
}
