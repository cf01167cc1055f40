package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp4"
	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
	"github.com/tapbridge/tapbridge-cni/internal/ra"
	"github.com/tapbridge/tapbridge-cni/internal/spoof"
)

// Protocol labels. "frame" is a frame the agent could not attribute to a
// protocol (truncated, oversized).
const (
	protoDHCP4 = "dhcp4"
	protoDHCP6 = "dhcp6"
	protoRA    = "ra"
	// protoLinkLocal is a learning port's DAD claims (see learnService).
	protoLinkLocal = "linklocal"
	protoFrame     = "frame"
)

// Refusals the agent makes itself, before a protocol handler sees a frame.
const (
	refusedForeignMAC  = "foreign-mac"  // Ethernet source is not the guest MAC
	refusedRateLimited = "rate-limited" // the port's budget is spent
	refusedMalformed   = "malformed"    // headers that do not add up
	refusedOversized   = "oversized"    // larger than any request (maxFrame)
	refusedUnserved    = "unserved"     // the guest has no address of the protocol's family
	refusedHeld        = "held"         // a link-local another attachment or the node holds
	refusedFailed      = "failed"       // the port's table could not take it (see the logs)
)

// metrics are the agent's counters, exported under tapbridge_agent_*.
type metrics struct {
	served     prometheus.Gauge
	requests   *prometheus.CounterVec // protocol, type
	replies    *prometheus.CounterVec // protocol, type
	refusals   *prometheus.CounterVec // protocol, reason
	learned    prometheus.Counter
	portErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, ports func() []*port) *metrics {
	m := &metrics{
		served: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tapbridge_agent_attachments_served",
			Help: "Attachments whose port the agent reads now (served, learning link-locals, or both).",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tapbridge_agent_requests_total",
			Help: "Requests read from guests, by protocol and message type.",
		}, []string{"protocol", "type"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tapbridge_agent_replies_total",
			Help: "Replies sent to guests, by protocol and message type.",
		}, []string{"protocol", "type"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tapbridge_agent_refusals_total",
			Help: "Requests not served as asked, by protocol and reason.",
		}, []string{"protocol", "reason"}),
		learned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tapbridge_agent_linklocals_learned_total",
			Help: "IPv6 link-locals learned into a port's table from its guest's DAD (refused ones: refusals_total{protocol=\"linklocal\"}).",
		}),
		portErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tapbridge_agent_port_errors_total",
			Help: "Attachments the agent failed to start serving (see the logs).",
		}),
	}
	reg.MustRegister(m.served, m.requests, m.replies, m.refusals, m.learned, m.portErrors, &portCollector{ports: ports})
	m.zero()
	return m
}

// zero exports every refusal reason at 0, so a rate() works from the
// first scrape and an alert can tell "none" from "never seen".
func (m *metrics) zero() {
	for _, r := range dhcp4.Refusals() {
		m.refusals.WithLabelValues(protoDHCP4, r.String())
	}
	for _, r := range dhcp6.Reasons() {
		m.refusals.WithLabelValues(protoDHCP6, r.String())
	}
	for _, r := range ra.Reasons() {
		m.refusals.WithLabelValues(protoRA, r.String())
	}
	for _, p := range []string{protoDHCP4, protoDHCP6, protoRA} {
		for _, r := range []string{refusedForeignMAC, refusedRateLimited, refusedMalformed, refusedUnserved} {
			m.refusals.WithLabelValues(p, r)
		}
	}
	for _, r := range []string{refusedForeignMAC, refusedRateLimited, refusedMalformed, refusedHeld, refusedFailed} {
		m.refusals.WithLabelValues(protoLinkLocal, r)
	}
	m.refusals.WithLabelValues(protoFrame, refusedMalformed)
	m.refusals.WithLabelValues(protoFrame, refusedOversized)
}

func (m *metrics) refused(protocol, reason string) {
	m.refusals.WithLabelValues(protocol, reason).Inc()
}

// portLabels names a served port in the per-port series.
type portLabels struct {
	port, namespace, pod string
}

var (
	spoofDroppedDesc = prometheus.NewDesc("tapbridge_port_spoof_dropped_total",
		"Frames the anti-spoofing table of a port the agent reads dropped.", []string{"port", "namespace", "pod"}, nil)
	interceptedDesc = prometheus.NewDesc("tapbridge_port_intercepted_total",
		"DHCP and router-solicitation frames a served port's table kept off the L2 (the agent reads them first).",
		[]string{"port", "namespace", "pod"}, nil)
	droppedFramesDesc = prometheus.NewDesc("tapbridge_agent_dropped_frames_total",
		"Frames the kernel dropped before the agent could read them: the port's socket queue was full (a flood, or the agent starved of CPU).",
		[]string{"port", "namespace", "pod"}, nil)
)

// portCollector reads each port's counters at scrape time: the
// nftables counters and the socket's drops live in the kernel, so
// copying them on a timer would only make them stale.
type portCollector struct {
	ports func() []*port
}

func (c *portCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- spoofDroppedDesc
	ch <- interceptedDesc
	ch <- droppedFramesDesc
}

func (c *portCollector) Collect(ch chan<- prometheus.Metric) {
	ports := c.ports()
	for _, p := range ports {
		l := p.labels
		ch <- prometheus.MustNewConstMetric(droppedFramesDesc, prometheus.CounterValue, float64(p.countDrops()), l.port, l.namespace, l.pod)
	}
	r, err := spoof.NewCountReader()
	if err != nil {
		return
	}
	defer r.Close()
	for _, p := range ports {
		l := p.labels
		n, err := r.Read(l.port)
		if err != nil {
			// A port without a table (spoofCheck off and nothing
			// intercepted, or going away) has no series.
			continue
		}
		ch <- prometheus.MustNewConstMetric(spoofDroppedDesc, prometheus.CounterValue, float64(n.Dropped), l.port, l.namespace, l.pod)
		ch <- prometheus.MustNewConstMetric(interceptedDesc, prometheus.CounterValue, float64(n.Intercepted), l.port, l.namespace, l.pod)
	}
}
