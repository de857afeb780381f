package lease

import "time"

// sweep gives back, every quarter of a lease's life, the leases that
// ended on instances that no longer call for their subject, and forgets
// the subjects and limits not called for two lease lives.
func (l *Limiter) sweep() {
	defer l.wg.Done()
	t := time.NewTicker(max(l.life/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			for i := range l.shards {
				l.sweepShard(&l.shards[i])
			}
		}
	}
}

// sweepShard sweeps the subjects of one shard.
func (l *Limiter) sweepShard(sh *shard) {
	var idle []*subject
	for _, s := range sh.list() {
		s.mu.Lock()
		now := l.now()
		var backs []*entry
		held := false
		for k, e := range s.entries {
			e.refresh(l, now)
			switch {
			case e.back > 0:
				backs = append(backs, e)
			case len(e.pools) > 0:
				held = true
			case s.flying == nil && now.Sub(e.seen) > 2*l.life:
				delete(s.entries, k)
			}
		}
		if len(backs) > 0 && s.flying == nil {
			l.flyAsync(s, backs, now, false)
		}
		if s.flying == nil && !held && len(backs) == 0 && now.Sub(s.seen) > 2*l.life {
			s.dead = true
			idle = append(idle, s)
		}
		s.mu.Unlock()
	}
	if len(idle) > 0 {
		sh.mu.Lock()
		for _, s := range idle {
			if sh.m[s.name] == s {
				delete(sh.m, s.name)
			}
		}
		sh.mu.Unlock()
	}
}

// list returns the subjects of the shard.
func (sh *shard) list() []*subject {
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	out := make([]*subject, 0, len(sh.m))
	for _, s := range sh.m {
		out = append(out, s)
	}
	return out
}
