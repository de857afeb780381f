package leak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/httpjson"
)

// Defaults of ReportsOptions.
const (
	defaultMaxCredentials = 1000
	defaultReportBody     = 256 << 10
	defaultRequests       = 60
	defaultPeriod         = time.Hour
	defaultMaxAddresses   = 10_000
	defaultQueue          = 64
	reportAttempts        = 3                // tries of a token while the store fails
	reportTimeout         = 10 * time.Second // bounds one try
)

// ReportsOptions configures a Reports handler. The zero value is ready.
// It revokes the keys of the tokens reported and takes up to 1,000 tokens
// in a body of at most 256 KiB. Like GitHub's POST /credentials/revoke, it
// admits 60 requests an hour from each client address (a burst of 60, then
// one a minute).
type ReportsOptions struct {
	// Action is what is done to the key of each token, Revoke when zero.
	Action Action

	// MaxCredentials is the most tokens one request may hold, 1,000 when
	// 0. More is answered 400.
	MaxCredentials int

	// MaxBody bounds a request's body, 256 KiB when 0. A larger one is
	// answered 413 without being read further.
	MaxBody int64

	// Requests is how many requests each client address may make per
	// Period, 60 when 0. The first ones may come at once, then one every
	// Period/Requests. Further requests are answered 429 with Retry-After,
	// before their body is read. IPv6 addresses are counted by /64
	// network.
	Requests int
	// Period is the window of Requests, one hour when 0.
	Period time.Duration

	// MaxAddresses bounds the client addresses tracked, 10,000 when 0.
	// While that many are still limited, new addresses are answered 429,
	// so memory stays bounded whatever the number of clients.
	MaxAddresses int

	// ClientAddr returns the client address of a request, RemoteAddr
	// when nil. Behind a reverse proxy, return the address it forwards,
	// read from the right of the header your trusted proxies set (never a
	// header a client could forge). Otherwise every client shares the
	// proxy's budget.
	ClientAddr func(r *http.Request) string

	// Queue is how many accepted requests may wait for processing, 64
	// when 0. When it is full, requests are answered 503 with Retry-After.
	Queue int

	// OnLeak, if set, is called for each token that matched a key, after
	// the action, on the handler's worker goroutine. Notify the key's
	// owner from it.
	OnLeak func(ctx context.Context, l Leak)

	// Logger, if set, receives failures (Error), never a token. The
	// audit record of each leak goes to the Manager's Logger.
	Logger *slog.Logger

	// Now is the clock of the rate limit, time.Now when nil.
	Now func() time.Time
}

// Reports is the http.Handler of a public "report a leaked key" endpoint
// (mount it on POST /credentials/revoke). Anyone may POST a body like this
// one.
//
//	{"credentials": ["sk_live_...", ...]}
//
// The answer is 202 Accepted, the same bytes whether or not any token
// matched a key, and it is given before any token is looked up. A worker
// goroutine handles the tokens afterwards, one at a time, so neither the
// answer nor its timing tells whether a token is a key. The worker calls
// apikey.Manager.Leaked with each distinct token and the Action. A token
// that is no key's is ignored. A store failure is retried twice, a second
// apart, then logged.
//
// Requests are refused before any token is looked at. Beyond the rate of
// their client address they get 429, and a body over MaxBody gets 413. A
// body gets 400 unless it is such an object, with "credentials" an array
// of at most MaxCredentials strings. When the queue is full or the handler
// is closed, they get 503. It is safe for concurrent use, and Close stops
// it.
type Reports struct {
	m          *apikey.Manager
	action     Action
	maxCreds   int
	maxBody    int64
	limiter    *addrLimiter
	clientAddr func(*http.Request) string
	onLeak     func(context.Context, Leak)
	log        *slog.Logger
	now        func() time.Time
	accepted   []byte // the answer to every accepted request

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	queue  chan []string

	ctx    context.Context // the worker's; cancelled when Close gives up
	cancel context.CancelFunc
	done   chan struct{}
}

// NewReports returns the report endpoint for the keys of m, and starts
// its worker goroutine (Close stops it). A nil Manager, an unknown Action
// or a negative bound is refused with an error wrapping
// apikey.ErrInvalidOptions.
func NewReports(m *apikey.Manager, opts ReportsOptions) (*Reports, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: leak: nil Manager", apikey.ErrInvalidOptions)
	}
	action, err := opts.Action.check()
	if err != nil {
		return nil, err
	}
	if opts.MaxCredentials < 0 || opts.MaxBody < 0 || opts.Requests < 0 || opts.Period < 0 ||
		opts.MaxAddresses < 0 || opts.Queue < 0 {
		return nil, fmt.Errorf("%w: leak: negative bound in ReportsOptions", apikey.ErrInvalidOptions)
	}
	p := &Reports{
		m: m, action: action, maxCreds: opts.MaxCredentials, maxBody: opts.MaxBody,
		clientAddr: opts.ClientAddr, onLeak: opts.OnLeak, log: opts.Logger, now: opts.Now,
		done: make(chan struct{}),
	}
	if p.maxCreds == 0 {
		p.maxCreds = defaultMaxCredentials
	}
	if p.maxBody == 0 {
		p.maxBody = defaultReportBody
	}
	if p.clientAddr == nil {
		p.clientAddr = RemoteAddr
	}
	if p.now == nil {
		p.now = time.Now
	}
	n, period, addrs, queue := opts.Requests, opts.Period, opts.MaxAddresses, opts.Queue
	if n == 0 {
		n = defaultRequests
	}
	if period == 0 {
		period = defaultPeriod
	}
	if addrs == 0 {
		addrs = defaultMaxAddresses
	}
	if queue == 0 {
		queue = defaultQueue
	}
	p.limiter = newAddrLimiter(n, period, addrs)
	p.queue = make(chan []string, queue)
	verb := map[Action]string{Revoke: "revoked", Disable: "disabled", Report: "reviewed"}[action]
	p.accepted, _ = json.Marshal(map[string]string{"message": "Accepted. Every credential of this service among them will be " + verb + "."})
	p.ctx, p.cancel = context.WithCancel(context.Background())
	go p.work()
	return p, nil
}

// reportBody is the body of a report.
type reportBody struct {
	Credentials []string `json:"credentials"`
}

// ServeHTTP accepts one report. See Reports.
func (p *Reports) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpjson.WriteProblem(w, http.StatusMethodNotAllowed, "Reports are POSTed.", "")
		return
	}
	if ok, wait := p.limiter.allow(bucketOf(p.clientAddr(r)), p.now()); !ok {
		w.Header().Set("Retry-After", retryAfter(wait))
		httpjson.WriteProblem(w, http.StatusTooManyRequests, "Too many reports from this address; try again later.", "")
		return
	}
	if r.ContentLength > p.maxBody {
		httpjson.WriteProblem(w, http.StatusRequestEntityTooLarge, "The report is too large.", "")
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			httpjson.WriteProblem(w, http.StatusRequestEntityTooLarge, "The report is too large.", "")
			return
		}
		httpjson.WriteProblem(w, http.StatusBadRequest, "The report could not be read.", "")
		return
	}
	var body reportBody
	if err := json.Unmarshal(raw, &body); err != nil || body.Credentials == nil {
		httpjson.WriteProblem(w, http.StatusBadRequest, `The body must be {"credentials": ["..."]}.`, "credentials")
		return
	}
	if len(body.Credentials) > p.maxCreds {
		httpjson.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("At most %d credentials per request.", p.maxCreds), "credentials")
		return
	}
	tokens := distinct(body.Credentials)
	if !p.enqueue(tokens) {
		w.Header().Set("Retry-After", "60")
		httpjson.WriteProblem(w, http.StatusServiceUnavailable, "Reports cannot be taken now; try again later.", "")
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusAccepted)
	w.Write(p.accepted)
}

// distinct returns the distinct tokens of creds that could be tokens of
// some format (no longer than apikey.MaxTokenLength), in their order.
func distinct(creds []string) []string {
	seen := make(map[string]bool, len(creds))
	out := make([]string, 0, len(creds))
	for _, c := range creds {
		if c == "" || len(c) > apikey.MaxTokenLength || seen[c] {
			continue
		}
		seen[c] = true
		out = append(out, c)
	}
	return out
}

// enqueue hands tokens to the worker, unless the queue is full or the
// handler is closed.
func (p *Reports) enqueue(tokens []string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return false
	}
	if len(tokens) == 0 {
		return true
	}
	select {
	case p.queue <- tokens:
		return true
	default:
		return false
	}
}

// work handles the queued reports until the queue is closed and empty.
func (p *Reports) work() {
	defer close(p.done)
	for tokens := range p.queue {
		for _, t := range tokens {
			if p.ctx.Err() != nil {
				return
			}
			p.handle(t)
		}
	}
}

// handle acts on one reported token.
func (p *Reports) handle(token string) {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(p.ctx, reportTimeout)
		k, err := p.m.Leaked(ctx, token, "", string(p.action))
		cancel()
		switch {
		case err == nil:
			tell(p.ctx, p.onLeak, Leak{Key: k, Source: "report", Action: p.action}, p.log)
			return
		case errors.Is(err, apikey.ErrMalformed), errors.Is(err, apikey.ErrInvalid):
			return // no key's: nothing to do, nothing to tell
		case !errors.Is(err, apikey.ErrUnavailable) || attempt == reportAttempts || !p.sleep(time.Second):
			if p.log != nil {
				p.log.LogAttrs(p.ctx, slog.LevelError, "leak: a reported token could not be acted on",
					slog.Int("attempts", attempt), slog.String("error", err.Error()))
			}
			return
		}
	}
}

// sleep waits d, or less if the worker is stopped. It reports whether it
// waited d.
func (p *Reports) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Close stops taking reports (they are answered 503) and waits until the
// worker has handled those accepted. If ctx is done first, it stops the
// worker, leaves the rest unhandled and returns ctx.Err(). It is safe to
// call more than once.
func (p *Reports) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.queue)
	}
	p.mu.Unlock()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.cancel()
		return ctx.Err()
	}
}
