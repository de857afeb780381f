// Package rpcauth is what the gRPC and Connect interceptors share. It holds
// the compiled configuration and the extraction of a key from request
// metadata. It also holds the decision for one call (Verify, the method's
// rule, Middleware.Spend over the Config's LimitOptions) and the table of
// refusals. The adapters only move
// metadata and errors in and out of their framework.
package rpcauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/ipallow"
)

// Rule is what a method requires. The adapters' own Rule types convert to
// it, so that their fields stay identical.
type Rule struct {
	Scopes     []string
	AnyScope   bool
	Open       bool
	Deny       bool
	Cost       int64
	Unmetered  bool
	PerMessage bool
}

// Config is the adapters' Options, less what belongs to one framework.
type Config struct {
	Limits          apikey.LimitOptions
	Metadata        []string
	HideCredentials bool
	Methods         map[string]Rule
	Default         Rule
	Cost            func(ctx context.Context, method string, req any, k *apikey.Key) int64
	ErrorDomain     string
	Logger          *slog.Logger
	TrustedProxies  *ipallow.Proxies
}

// Source is one metadata key a token is read from.
type Source struct {
	// Key is the gRPC metadata key, in lower case.
	Key string
	// Header is the canonical HTTP header name of Key.
	Header string
	// Bearer reports whether the value is "Bearer <token>"
	// (authorization). Otherwise it is the bare token.
	Bearer bool
}

// Guard is a compiled Config. It is safe for concurrent use.
type Guard struct {
	m       *apikey.Manager
	mw      *apikey.Middleware
	sources []Source
	hide    bool
	rules   map[string]*Rule // by full method and by service
	def     *Rule
	cost    func(ctx context.Context, method string, req any, k *apikey.Key) int64
	domain  string
	log     *slog.Logger
	proxies *ipallow.Proxies // nil: the client is the peer
	fwd     Source           // the proxies' forwarding header
}

// defaultDomain is the ErrorInfo domain when Config.ErrorDomain is empty.
const defaultDomain = "apikey"

// New compiles c for m. It returns an error wrapping
// apikey.ErrInvalidOptions for a nil m, a bad metadata key, a bad method
// name, an invalid scope, a negative cost, a rule that is both Open and
// something else, or LimitOptions that apikey.NewMiddleware refuses.
func New(m *apikey.Manager, c Config) (*Guard, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil Manager", apikey.ErrInvalidOptions)
	}
	g := &Guard{
		m: m, hide: c.HideCredentials, cost: c.Cost,
		domain: c.ErrorDomain, log: c.Logger, rules: make(map[string]*Rule, len(c.Methods)),
		proxies: c.TrustedProxies,
	}
	if h := c.TrustedProxies.Header(); c.TrustedProxies != nil {
		g.fwd = Source{Key: strings.ToLower(h), Header: h}
	}
	if c.Limits.Limiter != nil { // the calls spend as the HTTP Middleware's requests do
		mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: c.Limits, Logger: c.Logger})
		if err != nil {
			return nil, err
		}
		g.mw = mw
	}
	if g.domain == "" {
		g.domain = defaultDomain
	}
	names := c.Metadata
	if len(names) == 0 {
		names = []string{"authorization", "x-api-key"}
	}
	for _, n := range names {
		key := strings.ToLower(n)
		if !validMetadataKey(key) {
			return nil, fmt.Errorf("%w: metadata key %q", apikey.ErrInvalidOptions, n)
		}
		for _, s := range g.sources {
			if s.Key == key {
				return nil, fmt.Errorf("%w: metadata key %q listed twice", apikey.ErrInvalidOptions, n)
			}
		}
		g.sources = append(g.sources, Source{Key: key, Header: textproto.CanonicalMIMEHeaderKey(key), Bearer: key == "authorization"})
	}
	def, err := compile("Default", c.Default)
	if err != nil {
		return nil, err
	}
	g.def = def
	for name, r := range c.Methods {
		if !validMethodName(name) {
			return nil, fmt.Errorf("%w: method %q is neither /pkg.Service/Method nor pkg.Service", apikey.ErrInvalidOptions, name)
		}
		if g.rules[name], err = compile(name, r); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// compile checks r and returns a copy the Guard owns.
func compile(name string, r Rule) (*Rule, error) {
	switch {
	case r.Cost < 0:
		return nil, fmt.Errorf("%w: %s: negative Cost", apikey.ErrInvalidOptions, name)
	case r.Open && (r.Deny || len(r.Scopes) > 0 || r.Cost != 0 || r.PerMessage || r.AnyScope):
		return nil, fmt.Errorf("%w: %s: an Open rule has no scopes, cost or Deny", apikey.ErrInvalidOptions, name)
	case r.AnyScope && len(r.Scopes) == 0:
		return nil, fmt.Errorf("%w: %s: AnyScope without Scopes", apikey.ErrInvalidOptions, name)
	}
	for _, s := range r.Scopes {
		if !validScope(s) {
			return nil, fmt.Errorf("%w: %s: scope %q is not an RFC 6749 scope-token", apikey.ErrInvalidOptions, name, s)
		}
	}
	r.Scopes = append([]string(nil), r.Scopes...)
	if r.Cost == 0 {
		r.Cost = 1
	}
	return &r, nil
}

// validScope reports whether s is a scope the Manager could have issued.
func validScope(s string) bool {
	if s == "" || len(s) > apikey.MaxScopeLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// validMetadataKey reports whether k is a lower-case gRPC metadata key
// for text values: [0-9a-z-_.], not reserved ("grpc-"), not binary
// ("-bin").
func validMetadataKey(k string) bool {
	if k == "" || strings.HasPrefix(k, "grpc-") || strings.HasSuffix(k, "-bin") || k[0] == ':' {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// validMethodName reports whether n is "/pkg.Service/Method" or
// "pkg.Service".
func validMethodName(n string) bool {
	if n == "" || strings.ContainsAny(n, " \t\r\n") {
		return false
	}
	if n[0] != '/' {
		return !strings.Contains(n, "/")
	}
	svc, method, ok := strings.Cut(n[1:], "/")
	return ok && svc != "" && method != "" && !strings.Contains(method, "/")
}

// Rule returns the rule of the full method name method. That is its own,
// else its service's, else the default.
func (g *Guard) Rule(method string) *Rule {
	if len(method) == 0 || method[0] != '/' {
		return g.def
	}
	if r := g.rules[method]; r != nil {
		return r
	}
	if i := strings.LastIndexByte(method, '/'); i > 0 {
		if r := g.rules[method[1:i]]; r != nil {
			return r
		}
	}
	return g.def
}

// Sources returns the metadata keys read, in order. The slice must not be
// modified.
func (g *Guard) Sources() []Source { return g.sources }

// Hide reports whether the credentials are removed from the metadata the
// handler sees.
func (g *Guard) Hide() bool { return g.hide }

// Authenticate extracts the token of a call to a method with rule r from
// md, verifies it from the client address (peer, or what trusted proxies
// say) and checks r. It returns the key and the index in Sources of the
// metadata key that carried it, or a refusal.
func Authenticate[M Metadata](ctx context.Context, g *Guard, r *Rule, md M, peer netip.Addr) (*apikey.Key, int, *Refusal) {
	token, from, err := Extract(g.sources, md)
	if err != nil {
		return nil, -1, g.refuse(ctx, err)
	}
	client := ipallow.Addr(peer)
	if g.proxies != nil {
		client = g.proxies.Client(peer, md.Values(&g.fwd))
	}
	if r.Deny {
		if _, err := g.m.VerifyFrom(ctx, token, client); err != nil {
			return nil, -1, g.refuse(ctx, err)
		}
		return nil, -1, g.denied()
	}
	if g.mw != nil { // the Middleware's decision, counted in usage as over HTTP
		k, err := g.mw.AuthorizeFrom(ctx, token, client, r.Scopes, r.AnyScope)
		var se *apikey.ScopeError
		switch {
		case errors.As(err, &se):
			return nil, -1, g.scopeRefusal(r)
		case err != nil:
			return nil, -1, g.refuse(ctx, err)
		}
		return k, from, nil
	}
	k, err := g.m.VerifyFrom(ctx, token, client)
	if err != nil {
		return nil, -1, g.refuse(ctx, err)
	}
	if !hasScopes(k, r) {
		return nil, -1, g.scopeRefusal(r)
	}
	return k, from, nil
}

func hasScopes(k *apikey.Key, r *Rule) bool {
	for _, s := range r.Scopes {
		if k.HasScope(s) == r.AnyScope {
			return r.AnyScope
		}
	}
	return !r.AnyScope
}

// MeteredAtStart reports whether a call with rule r spends when it
// starts. Every unary call does, and a stream does unless r.PerMessage.
func (g *Guard) MeteredAtStart(r *Rule, stream bool) bool {
	return g.mw != nil && !r.Unmetered && !(stream && r.PerMessage)
}

// MeteredPerMessage reports whether a stream with rule r spends for each
// message it receives.
func (g *Guard) MeteredPerMessage(r *Rule) bool {
	return g.mw != nil && !r.Unmetered && r.PerMessage
}

// Spend takes the cost of a call to method with rule r (req is the
// request message, nil at a stream's start) from k's limits with
// Middleware.Spend. It returns the RateLimit headers to send (nil when
// nothing was spent) and a refusal or nil.
func (g *Guard) Spend(ctx context.Context, method string, r *Rule, req any, k *apikey.Key) (http.Header, *Refusal) {
	cost := r.Cost
	if g.cost != nil {
		var ref *Refusal
		if cost, ref = g.callCost(ctx, method, req, k); ref != nil {
			return nil, ref
		}
	}
	if cost == 0 {
		g.mw.Spend(ctx, k, 0, nil) // spends nothing; counts the call in usage
		return nil, nil
	}
	h := make(http.Header, 4)
	if err := g.mw.Spend(ctx, k, cost, h); err != nil {
		return h, g.refuse(ctx, err)
	}
	return h, nil
}

// callCost runs Config.Cost, turning a negative cost or a panic into an
// internal error.
func (g *Guard) callCost(ctx context.Context, method string, req any, k *apikey.Key) (cost int64, ref *Refusal) {
	defer func() {
		if p := recover(); p != nil {
			g.logError(ctx, "apikey: panic in Cost", fmt.Errorf("%v", p))
			cost, ref = 0, g.refuse(ctx, apikey.ErrInvalidOptions)
		}
	}()
	if cost = g.cost(ctx, method, req, k); cost < 0 {
		return 0, g.refuse(ctx, fmt.Errorf("%w: Cost returned %d", apikey.ErrInvalidOptions, cost))
	}
	return cost, nil
}

// logError logs err unless the call went away.
func (g *Guard) logError(ctx context.Context, msg string, err error) {
	if g.log != nil && ctx.Err() == nil {
		g.log.LogAttrs(ctx, slog.LevelError, msg, slog.String("error", err.Error()))
	}
}
