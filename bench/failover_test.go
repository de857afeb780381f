package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/testserver"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/redislimit"
	"github.com/gokeys/apikey/redisnotify"
)

// The failover of a Redis Cluster shard under load, on a private cluster
// (three masters, three replicas, cluster-node-timeout 1 s unless
// APIKEY_BENCH_FAILOVER_NODE_TIMEOUT says otherwise). Run with
//
//	cd bench && APIKEY_BENCH_FAILOVER=1 go test -run TestRedisClusterFailover -v -timeout 10m .
//
// Each run: 16 goroutines spend one customer's daily quota of
// failoverBudget through Middleware.Spend (redislimit on a cluster client
// configured as the example server's), while 2 goroutines spend another
// customer's, whose keys live on another shard. Once a quarter of the
// budget is spent, the master of the customer's slot is killed (SIGKILL)
// or handed over (CLUSTER FAILOVER on its replica); the goroutines go on
// until the budget is exhausted. Two notifiers subscribe to a channel of
// the same slot, and one publishes on it every 5 ms. The runs are repeated
// with the middleware's two refusing policies: fail-closed (the default)
// and a memlimit Fallback limiter (LimitOptions.Fallback).
func TestRedisClusterFailover(t *testing.T) {
	if os.Getenv("APIKEY_BENCH_FAILOVER") == "" {
		t.Skip("set APIKEY_BENCH_FAILOVER=1 to measure a Redis Cluster failover under load")
	}
	nodeTimeout := time.Second
	if v := os.Getenv("APIKEY_BENCH_FAILOVER_NODE_TIMEOUT"); v != "" {
		var err error
		if nodeTimeout, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	cluster := testserver.StartRedisCluster(t, nodeTimeout)
	measureWait(t, cluster)
	for round := 1; round <= 3; round++ {
		for _, policy := range []string{"fail-closed", "fallback"} {
			for _, event := range []string{"kill", "handover"} {
				t.Run(fmt.Sprintf("%s/%s/%d", policy, event, round), func(t *testing.T) { failoverRun(t, cluster, event, policy) })
			}
		}
	}
}

const (
	failoverBudget  = 20_000 // the customer's daily quota
	failoverWorkers = 16
)

// limiterClusterClient is a cluster client for a limiter, failing fast as
// the example server's -redis-cluster does.
func limiterClusterClient(addrs []string) *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true,
		DialTimeout: 100 * time.Millisecond, DialerRetries: 1, ReadTimeout: 50 * time.Millisecond,
		WriteTimeout: 50 * time.Millisecond, PoolTimeout: 50 * time.Millisecond, MaxRetries: -1})
}

// outcome is what one Spend came to.
type outcome uint8

const (
	admitted         outcome = iota // Redis allowed
	denied                          // Redis denied (429)
	failedClosed                    // Redis failed, 503
	fallbackAdmitted                // Redis failed, the fallback allowed
	fallbackDenied                  // Redis failed, the fallback denied
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"admitted", "denied", "503", "fallback-admitted", "fallback-denied"}

// probe wraps a Limiter and records, through the call's context, whether
// it answered.
type probe struct {
	limits.Limiter
	fallback bool
}

type probeKey struct{}

type callRecord struct{ primaryFailed, breakerOpen, fallbackUsed bool }

func (p probe) Allow(ctx context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	res, err := p.Limiter.Allow(ctx, subject, ls, cost)
	if rec, _ := ctx.Value(probeKey{}).(*callRecord); rec != nil {
		if p.fallback {
			rec.fallbackUsed = true
		} else {
			rec.primaryFailed = err != nil
		}
	}
	return res, err
}

// event is one Spend: when it ended (since the failover began; negative
// before) and its outcome.
type event struct {
	at      time.Duration
	outcome outcome
	breaker bool
	lat     time.Duration
}

func failoverRun(t *testing.T, cluster *testserver.RedisCluster, kind, policy string) {
	ctx := context.Background()
	subject := "failover-" + strings.ToLower(rand.Text()[:10])
	master, replica := cluster.Shard("{"+subject+"}", 30*time.Second)
	// A bystander on another shard.
	var other string
	for {
		other = "bystander-" + strings.ToLower(rand.Text()[:10])
		if m, _ := cluster.Shard("{"+other+"}", 30*time.Second); m != master {
			break
		}
	}

	client := limiterClusterClient(cluster.Addrs())
	defer client.Close()
	rl, err := redislimit.New(client, redislimit.Options{Prefix: "failover:"})
	if err != nil {
		t.Fatal(err)
	}
	fallback, err := memlimit.New(memlimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := apikey.New(memstore.New(), apikey.Options{LastUsedInterval: -1,
		Plans: limits.Plans{"": {limits.Quota("budget", failoverBudget, limits.Day)}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	opts := apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: probe{Limiter: rl}}}
	if policy == "fallback" {
		opts.Limits.Fallback = probe{Limiter: fallback, fallback: true}
	}
	mw, err := apikey.NewMiddleware(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := m.Issue(ctx, apikey.IssueParams{Owner: subject})
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := m.Issue(ctx, apikey.IssueParams{Owner: other})
	if err != nil {
		t.Fatal(err)
	}

	// The notifiers: B subscribes, A publishes a sequence number every 5 ms
	// on a channel of the customer's slot.
	channel := "failover:{" + subject + "}"
	notifier := func() (*redisnotify.Notifier, *redis.ClusterClient) {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), DialTimeout: time.Second,
			ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
		n, err := redisnotify.New(c, redisnotify.Options{Channel: channel})
		if err != nil {
			t.Fatal(err)
		}
		return n, c
	}
	na, ca := notifier()
	defer ca.Close()
	nb, cb := notifier()
	defer cb.Close()
	var (
		nmu          sync.Mutex
		resubscribed []time.Time // changed("") calls of B
		received     []time.Time // messages B received
		published    atomic.Int64
		publishFails atomic.Int64
	)
	sctx, stopSub := context.WithCancel(ctx)
	subDone := make(chan struct{})
	go func() {
		defer close(subDone)
		_ = nb.Subscribe(sctx, func(id string) {
			nmu.Lock()
			defer nmu.Unlock()
			if id == "" {
				resubscribed = append(resubscribed, time.Now())
			} else {
				received = append(received, time.Now())
			}
		})
	}()
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
			pctx, cancel := context.WithTimeout(sctx, 100*time.Millisecond)
			if na.Publish(pctx, fmt.Sprint(i)) != nil {
				publishFails.Add(1)
			} else {
				published.Add(1)
			}
			cancel()
		}
	}()
	defer func() { stopSub(); <-subDone; <-pubDone }()
	// heard reports whether B subscribed after since and then received a
	// message.
	heard := func(since time.Time) bool {
		nmu.Lock()
		defer nmu.Unlock()
		i := slices.IndexFunc(resubscribed, func(at time.Time) bool { return at.After(since) })
		return i >= 0 && len(received) > 0 && received[len(received)-1].After(resubscribed[i])
	}
	for deadline := time.Now().Add(30 * time.Second); !heard(time.Time{}); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the notifier did not subscribe and receive within 30 s")
		}
	}

	var (
		start    = time.Now()
		t0       atomic.Int64 // nanoseconds since start at the failover; 0 before
		spent    atomic.Int64
		deniedAt atomic.Int64 // denials after the failover
		mu       sync.Mutex
		events   []event
		bystand  [numOutcomes]atomic.Int64
		stop     atomic.Bool
		started  = make(chan struct{})
		once     sync.Once
	)
	spend := func(k *apikey.Key) (outcome, bool, time.Duration) {
		rec := &callRecord{}
		begin := time.Now()
		err := mw.Spend(context.WithValue(ctx, probeKey{}, rec), k, 1, nil)
		lat := time.Since(begin)
		var rle *apikey.RateLimitError
		switch {
		case rec.fallbackUsed && err == nil:
			return fallbackAdmitted, false, lat
		case rec.fallbackUsed:
			return fallbackDenied, false, lat
		case err == nil:
			return admitted, false, lat
		case errors.As(err, &rle):
			return denied, false, lat
		case errors.Is(err, apikey.ErrUnavailable):
			return failedClosed, !rec.primaryFailed, lat // no call made: the breaker was open
		}
		t.Errorf("Spend: %v", err)
		return failedClosed, false, lat
	}
	var wg sync.WaitGroup
	for range failoverWorkers {
		wg.Go(func() {
			denials := 0
			for !stop.Load() {
				o, breaker, lat := spend(key)
				now := time.Since(start)
				at := now - time.Duration(t0.Load())
				if t0.Load() == 0 {
					at = -time.Duration(1)
				}
				mu.Lock()
				events = append(events, event{at: at, outcome: o, breaker: breaker, lat: lat})
				mu.Unlock()
				if o == admitted && spent.Add(1) >= failoverBudget/4 {
					once.Do(func() { close(started) })
				}
				// Done once the budget is exhausted after the failover.
				if o == denied && t0.Load() != 0 {
					deniedAt.Add(1)
					if denials++; denials >= 3 {
						return
					}
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				o, _, _ := spend(otherKey)
				if t0.Load() != 0 {
					bystand[o].Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		t.Fatal("a quarter of the budget was not spent within 60 s")
	}
	var how string
	switch kind {
	case "kill":
		t0.Store(int64(time.Since(start)))
		cluster.Kill(master)
		how = fmt.Sprintf("SIGKILL of the master %s; its replica %s takes over", master.Addr, replica.Addr)
	case "handover":
		t0.Store(int64(time.Since(start)))
		if _, err := testserver.Command(replica.Addr, "CLUSTER", "FAILOVER"); err != nil {
			t.Fatal(err)
		}
		how = fmt.Sprintf("CLUSTER FAILOVER on the replica %s of the master %s", replica.Addr, master.Addr)
	}
	failoverAt := start.Add(time.Duration(t0.Load()))
	deadline := time.AfterFunc(90*time.Second, func() { stop.Store(true) })
	// The 16 workers stop once the budget is exhausted; then the bystanders.
	done := make(chan struct{})
	go func() {
		for {
			if deniedAt.Load() >= 3*failoverWorkers || stop.Load() {
				stop.Store(true)
				close(done)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	<-done
	wg.Wait()
	deadline.Stop()
	for deadline := time.Now().Add(30 * time.Second); !heard(failoverAt); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Error("the notifier did not subscribe again and receive within 30 s of the failover's end")
			break
		}
	}

	// The figures.
	var before, after [numOutcomes]int
	var breakerOpen int
	var lats []time.Duration
	var answers []time.Duration // when Redis answered the customer, from the last answer before the failover on
	for _, e := range events {
		if e.at < 0 {
			before[e.outcome]++
			lats = append(lats, e.lat)
			if e.outcome == admitted || e.outcome == denied {
				answers = append(answers[:0], 0)
			}
			continue
		}
		after[e.outcome]++
		if e.breaker {
			breakerOpen++
		}
		if e.outcome == admitted || e.outcome == denied {
			answers = append(answers, e.at)
		}
	}
	// The outage: the longest time without an answer of Redis for the
	// customer, and the calls that ended in it.
	slices.Sort(answers)
	var from, to time.Duration
	for i := 1; i < len(answers); i++ {
		if answers[i]-answers[i-1] > to-from {
			from, to = answers[i-1], answers[i]
		}
	}
	var in, out int
	for _, e := range events {
		if e.at >= 0 && e.outcome != admitted && e.outcome != denied {
			if e.at > from && e.at < to {
				in++
			} else {
				out++
			}
		}
	}
	total := func(o outcome) int { return before[o] + after[o] }
	line := func(name string, c [numOutcomes]int) string {
		var parts []string
		for o := range numOutcomes {
			if c[o] != 0 || o <= failedClosed {
				parts = append(parts, fmt.Sprintf("%s %d", outcomeNames[o], c[o]))
			}
		}
		return name + ": " + strings.Join(parts, ", ")
	}
	slices.Sort(lats)
	t.Logf("policy %s; %s", policy, how)
	t.Logf("customer %s: daily quota %d, %d goroutines; the failover began after %d admissions (Spend p50 %v, p99 %v before it)",
		subject, failoverBudget, failoverWorkers, before[admitted], pct(lats, 0.5), pct(lats, 0.99))
	t.Log(line("before the failover", before))
	t.Logf("%s; the circuit breaker was open for %d of them", line("from the failover on", after), breakerOpen)
	t.Logf("outage: no answer of Redis for the customer from %v to %v after the failover began (%v); %d calls not answered by Redis ended in it, %d outside it",
		from.Round(time.Millisecond), to.Round(time.Millisecond), (to - from).Round(time.Millisecond), in, out)
	t.Logf("bystander on another shard, from the failover on: answered by Redis %d, 503 %d",
		bystand[admitted].Load()+bystand[denied].Load(), bystand[failedClosed].Load())
	over := total(admitted) - failoverBudget
	t.Logf("over-admission: %d admitted by Redis for a quota of %d: %+d; admitted by the fallback: %d",
		total(admitted), failoverBudget, over, total(fallbackAdmitted))

	nmu.Lock()
	var resub time.Duration = -1
	for _, at := range resubscribed {
		if at.After(failoverAt) {
			resub = at.Sub(failoverAt)
			break
		}
	}
	var lastBefore, firstAfter time.Time
	for _, at := range received {
		if !at.After(failoverAt) {
			lastBefore = at
		} else if firstAfter.IsZero() && (resub < 0 || at.After(failoverAt.Add(resub))) {
			firstAfter = at
		}
	}
	nmu.Unlock()
	t.Logf("notifier: subscribed again %v after the failover began (%d subscriptions in all); no message received for %v; %d publishes failed, %d succeeded",
		resub.Round(time.Millisecond), nb.Subscriptions(), firstAfter.Sub(lastBefore).Round(time.Millisecond), publishFails.Load(), published.Load())

	// A crash loses the writes the master had not yet sent to its
	// replica: at most those of the calls in flight (see docs/scale.md). A
	// handover waits for the replica to catch up, and loses none.
	if bound := map[string]int{"kill": failoverWorkers, "handover": 0}[kind]; over > bound {
		t.Errorf("over-admission of %d, above the bound %d", over, bound)
	}
	if kind == "kill" {
		cluster.Start(master) // it rejoins as a replica of the new master
	}
	cluster.WaitOK(60 * time.Second)
}

// pct returns the q-quantile of sorted durations.
func pct(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(q*float64(len(s))))].Round(time.Microsecond)
}

// measureWait compares a write alone with a write followed by WAIT 1
// (returning once a replica acknowledged it), on the master of one slot,
// interleaved, serially: the latency WAIT would add to every limiter call.
func measureWait(t *testing.T, cluster *testserver.RedisCluster) {
	ctx := context.Background()
	key := "wait:{" + strings.ToLower(rand.Text()[:10]) + "}"
	master, _ := cluster.Shard(key, 30*time.Second)
	c := redis.NewClient(&redis.Options{Addr: master.Addr})
	defer c.Close()
	const n = 3000
	var plain, waited []time.Duration
	for i := range 2 * n {
		begin := time.Now()
		if i%2 == 0 {
			if err := c.Incr(ctx, key).Err(); err != nil {
				t.Fatal(err)
			}
			plain = append(plain, time.Since(begin))
			continue
		}
		pipe := c.Pipeline()
		pipe.Incr(ctx, key)
		w := pipe.Do(ctx, "WAIT", 1, 100)
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if acks, _ := w.Int(); acks < 1 {
			t.Fatalf("WAIT 1 100: %d replicas", acks)
		}
		waited = append(waited, time.Since(begin))
	}
	slices.Sort(plain)
	slices.Sort(waited)
	t.Logf("WAIT: INCR alone p50 %v p99 %v; INCR+WAIT 1 (one replica acknowledged) p50 %v p99 %v; %d each, interleaved, serial",
		pct(plain, 0.5), pct(plain, 0.99), pct(waited, 0.5), pct(waited, 0.99), n)
}
