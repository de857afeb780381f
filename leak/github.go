package leak

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/httpjson"
)

// The headers of a signed alert.
const (
	HeaderKeyID     = "Github-Public-Key-Identifier"
	HeaderSignature = "Github-Public-Key-Signature"
)

// GitHub's feedback labels.
const (
	TruePositive  = "true_positive"
	FalsePositive = "false_positive"
)

// Defaults of GitHubOptions.
const (
	defaultMaxBody      = 1 << 20
	defaultMaxTokens    = 1000
	defaultKeysInterval = time.Minute
	defaultKeysMaxAge   = 24 * time.Hour
)

// GitHubOptions configures a GitHub handler. The zero value is ready. It
// revokes the key of each token and trusts the keys GitHub publishes at
// DefaultKeysURL, fetched at most once a minute. It refuses bodies over
// 1 MiB and alerts of more than 1,000 tokens.
type GitHubOptions struct {
	// Action is what is done to the key of each token, Revoke when zero.
	Action Action

	// KeysURL is where GitHub's public keys are fetched, DefaultKeysURL
	// when empty. The document has the shape below, with "key" in PEM.
	//
	//	{"public_keys": [{"key_identifier", "key", "is_current"}]}
	//
	// Keys other than ECDSA P-256 are ignored.
	KeysURL string

	// Fetch, if set, fetches the document at url in place of a plain GET
	// with a 10-second timeout. Use it, for example, to send a token, since
	// GitHub rate-limits unauthenticated requests to its API. Or use it to
	// read a local copy in tests.
	Fetch func(ctx context.Context, url string) ([]byte, error)

	// KeysInterval is the least time between two fetches, one minute when
	// 0. The keys are fetched when an alert names a key not held, and when
	// the copy held is older than a day. An alert naming an unknown key
	// while no fetch is allowed is answered 503 with Retry-After.
	KeysInterval time.Duration

	// MaxBody bounds an alert's body, 1 MiB when 0. A larger one is
	// answered 413 without being read further.
	MaxBody int64

	// MaxTokens bounds the tokens of one alert, and so the store reads of
	// a request, 1,000 when 0. An alert with more is answered 413 and
	// logged. Raise it if GitHub sends larger batches. Each well-formed
	// token costs one store read (and one write when it is acted on), and
	// GitHub waits 30 seconds for an answer.
	MaxTokens int

	// OnLeak, if set, is called for each token that matched a key, after
	// the action, on the request's goroutine. Notify the key's owner from
	// it, or hand the work off to answer GitHub quickly.
	OnLeak func(ctx context.Context, l Leak)

	// Logger, if set, receives refused alerts (Warn) and failures
	// (Error), never a token. The audit record of each leak goes to the
	// Manager's Logger.
	Logger *slog.Logger

	// Now is the clock of the key cache, time.Now when nil.
	Now func() time.Time
}

// GitHub is the http.Handler of GitHub's secret scanning partner alerts
// (mount it on POST). It answers an alert in four steps.
//
//  1. It refuses a body over MaxBody with 413. It refuses with 403 a
//     request without the headers Github-Public-Key-Identifier and
//     Github-Public-Key-Signature, and one whose signature is not an ECDSA
//     P-256 SHA-256 signature of the raw body by a key GitHub publishes.
//     It answers 503 when that key cannot be fetched.
//  2. It refuses with 400 a body that is not a JSON array of objects with
//     a string token, and with 413 one of more than MaxTokens tokens.
//  3. For each token, it calls apikey.Manager.Leaked with the token, its
//     url and the Action. A token that matches a stored key, in any state,
//     is labelled true_positive, so a repeated alert is labelled the same
//     (and changes nothing). A token that matches none, checksum-valid or
//     not, is labelled false_positive.
//  4. It answers 200 with one {token_hash, token_type, label} per token.
//     The token_hash is the hex SHA-256 of the token, never the token.
//
// Nothing reaches the store before step 3. A store failure is answered
// 503, and GitHub may send the alert again, since what was done stays
// done. It is safe for concurrent use.
type GitHub struct {
	m         *apikey.Manager
	action    Action
	keys      *keyring
	maxBody   int64
	maxTokens int
	onLeak    func(context.Context, Leak)
	log       *slog.Logger
}

// NewGitHub returns the handler of GitHub's alerts for the keys of m. A
// nil Manager, an unknown Action or a negative bound is refused with an
// error wrapping apikey.ErrInvalidOptions.
func NewGitHub(m *apikey.Manager, opts GitHubOptions) (*GitHub, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: leak: nil Manager", apikey.ErrInvalidOptions)
	}
	action, err := opts.Action.check()
	if err != nil {
		return nil, err
	}
	if opts.MaxBody < 0 || opts.MaxTokens < 0 || opts.KeysInterval < 0 {
		return nil, fmt.Errorf("%w: leak: negative MaxBody, MaxTokens or KeysInterval", apikey.ErrInvalidOptions)
	}
	g := &GitHub{
		m: m, action: action, onLeak: opts.OnLeak, log: opts.Logger,
		maxBody: opts.MaxBody, maxTokens: opts.MaxTokens,
		keys: &keyring{url: opts.KeysURL, fetch: opts.Fetch, interval: opts.KeysInterval,
			maxAge: defaultKeysMaxAge, now: opts.Now},
	}
	if g.maxBody == 0 {
		g.maxBody = defaultMaxBody
	}
	if g.maxTokens == 0 {
		g.maxTokens = defaultMaxTokens
	}
	if g.keys.url == "" {
		g.keys.url = DefaultKeysURL
	}
	if g.keys.fetch == nil {
		g.keys.fetch = httpFetch
	}
	if g.keys.interval == 0 {
		g.keys.interval = defaultKeysInterval
	}
	if g.keys.now == nil {
		g.keys.now = time.Now
	}
	return g, nil
}

// alert is one match in GitHub's alert body.
type alert struct {
	Token  *string `json:"token"`
	Type   string  `json:"type"`
	URL    string  `json:"url"`
	Source string  `json:"source"`
}

// Feedback is one element of the answer to an alert. It is GitHub's label
// for one token, named by its hash.
type Feedback struct {
	// TokenHash is the hex SHA-256 of the token.
	TokenHash string `json:"token_hash"`
	// TokenType is the type GitHub sent with the token.
	TokenType string `json:"token_type"`
	// Label is TruePositive or FalsePositive.
	Label string `json:"label"`
}

// ServeHTTP answers one alert. See GitHub.
func (g *GitHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpjson.WriteProblem(w, http.StatusMethodNotAllowed, "Alerts are POSTed.", "")
		return
	}
	id, sig := r.Header.Get(HeaderKeyID), r.Header.Get(HeaderSignature)
	if id == "" || sig == "" {
		g.refuse(ctx, w, http.StatusForbidden, "The alert is not signed.", errUnsigned)
		return
	}
	if r.ContentLength > g.maxBody {
		g.refuse(ctx, w, http.StatusRequestEntityTooLarge, "The alert is too large.", nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			g.refuse(ctx, w, http.StatusRequestEntityTooLarge, "The alert is too large.", nil)
			return
		}
		g.refuse(ctx, w, http.StatusBadRequest, "The alert could not be read.", nil)
		return
	}
	if err := g.keys.verify(ctx, id, sig, body); err != nil {
		if errors.Is(err, errKeysUnavailable) {
			w.Header().Set("Retry-After", retryAfter(g.keys.retryAfter()))
			g.fail(ctx, w, "leak: cannot check GitHub's signature", err)
			return
		}
		g.refuse(ctx, w, http.StatusForbidden, "The alert's signature is not GitHub's.", err)
		return
	}
	var alerts []alert
	if err := json.Unmarshal(body, &alerts); err != nil || alerts == nil {
		g.refuse(ctx, w, http.StatusBadRequest, "The alert is not a JSON array of matches.", nil)
		return
	}
	for _, a := range alerts {
		if a.Token == nil {
			g.refuse(ctx, w, http.StatusBadRequest, "A match has no token.", nil)
			return
		}
	}
	if len(alerts) > g.maxTokens {
		if g.log != nil {
			g.log.LogAttrs(ctx, slog.LevelError, "leak: a GitHub alert holds more tokens than MaxTokens; raise it",
				slog.Int("tokens", len(alerts)), slog.Int("max_tokens", g.maxTokens))
		}
		httpjson.WriteProblem(w, http.StatusRequestEntityTooLarge, "The alert holds too many tokens.", "")
		return
	}
	answer := make([]Feedback, 0, len(alerts))
	for _, a := range alerts {
		label, err := g.handle(ctx, a)
		if err != nil {
			w.Header().Set("Retry-After", "5")
			g.fail(ctx, w, "leak: acting on a GitHub alert failed", err)
			return
		}
		sum := sha256.Sum256([]byte(*a.Token))
		answer = append(answer, Feedback{TokenHash: hex.EncodeToString(sum[:]), TokenType: a.Type, Label: label})
	}
	httpjson.WriteJSON(w, http.StatusOK, answer)
}

// handle acts on one match and returns its label.
func (g *GitHub) handle(ctx context.Context, a alert) (string, error) {
	k, err := g.m.Leaked(ctx, *a.Token, a.URL, string(g.action))
	switch {
	case errors.Is(err, apikey.ErrMalformed), errors.Is(err, apikey.ErrInvalid):
		return FalsePositive, nil
	case err != nil:
		return "", err
	}
	tell(ctx, g.onLeak, Leak{Key: k, URL: a.URL, Source: a.Source, Action: g.action}, g.log)
	return TruePositive, nil
}

// refuse answers a refused alert with status and detail, and logs it
// (cause, when set, is one of this package's errors).
func (g *GitHub) refuse(ctx context.Context, w http.ResponseWriter, status int, detail string, cause error) {
	if g.log != nil {
		attrs := []slog.Attr{slog.Int("status", status), slog.String("reason", detail)}
		if cause != nil {
			attrs = append(attrs, slog.String("error", cause.Error()))
		}
		g.log.LogAttrs(ctx, slog.LevelWarn, "leak: GitHub alert refused", attrs...)
	}
	httpjson.WriteProblem(w, status, detail, "")
}

// fail answers 503 for a failing dependency, and logs err.
func (g *GitHub) fail(ctx context.Context, w http.ResponseWriter, msg string, err error) {
	if g.log != nil {
		g.log.LogAttrs(ctx, slog.LevelError, msg, slog.String("error", err.Error()))
	}
	httpjson.WriteProblem(w, http.StatusServiceUnavailable, "The alert could not be processed now; send it again later.", "")
}
