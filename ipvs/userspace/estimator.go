package userspace

import (
	"sync"
	"time"

	"github.com/lbha/lbha/ipvs"
)

// estimateEvery is the kernel's estimator period (ip_vs_est runs every 2 s).
const estimateEvery = 2 * time.Second

// estimator keeps rates as the kernel does: every period the rate of the
// last period moves the average a quarter of the way (avg += (rate-avg)/4).
type estimator struct {
	mu   sync.Mutex
	last ipvs.Stats
	avg  [5]float64
}

func (c *counters) tick(period time.Duration) {
	now := c.snapshot()
	e := &c.est
	e.mu.Lock()
	defer e.mu.Unlock()
	secs := period.Seconds()
	cur := [5]float64{
		float64(now.Conns-e.last.Conns) / secs,
		float64(now.InPkts-e.last.InPkts) / secs,
		float64(now.OutPkts-e.last.OutPkts) / secs,
		float64(now.InBytes-e.last.InBytes) / secs,
		float64(now.OutBytes-e.last.OutBytes) / secs,
	}
	for i := range e.avg {
		e.avg[i] += (cur[i] - e.avg[i]) / 4
	}
	e.last = now
}

func (c *counters) rates() ipvs.Rates {
	e := &c.est
	e.mu.Lock()
	defer e.mu.Unlock()
	r := func(i int) uint64 { return uint64(e.avg[i] + 0.5) }
	return ipvs.Rates{CPS: r(0), InPPS: r(1), OutPPS: r(2), InBPS: r(3), OutBPS: r(4)}
}

// estimator updates every service's and real server's rates.
func (p *Proxy) estimator() {
	defer p.wg.Done()
	t := time.NewTicker(estimateEvery)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		for _, s := range *p.index.Load() {
			s.stats.tick(estimateEvery)
			for _, d := range *s.dests.Load() {
				d.stats.tick(estimateEvery)
			}
		}
	}
}
