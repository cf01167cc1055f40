package agent

import "time"

// The per-port budget. A booting guest sends a handful of requests (a
// DHCPv4 exchange, a DHCPv6 one, up to three router solicitations, and
// retries), so a burst of 20 serves it at once; after that 5 a second
// keeps every honest client (whose retries back off to seconds) served
// and caps what a flooding guest costs the node to 5 answers a second.
const (
	burst      = 20
	refillRate = 5 // tokens per second
)

// bucket is a token bucket. It is used by its port's reader goroutine
// only, so it needs no lock.
type bucket struct {
	tokens float64
	last   time.Time
}

func newBucket(now time.Time) *bucket { return &bucket{tokens: burst, last: now} }

// take spends a token if there is one.
func (b *bucket) take(now time.Time) bool {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*refillRate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
