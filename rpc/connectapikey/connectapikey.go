// Package connectapikey guards Connect handlers (connectrpc.com/connect)
// with apikey. It provides an interceptor for unary and streaming handlers.
// The interceptor reads the key from the request headers, verifies it with
// Manager.Verify, checks the procedure's scopes and spends its cost with
// the apikey.LimitOptions of the HTTP Middleware. So the Connect, gRPC and
// HTTP surfaces of a service refuse the same keys. They also share each
// customer's budget, plans and failure policy. It serves the Connect, gRPC and
// gRPC-Web protocols alike.
//
//	ic, err := connectapikey.New(m, connectapikey.Options{
//		Limits: limitOpts, // the HTTP routes' MiddlewareOptions.Limits: one budget
//		Methods: map[string]connectapikey.Rule{
//			"/shop.v1.Orders/Create": {Scopes: []string{"write"}},
//		},
//	})
//	if err != nil { ... }
//	mux.Handle(shopv1connect.NewOrdersHandler(srv, connect.WithInterceptors(ic)))
//	// In a handler: key := apikey.FromContext(ctx)
//
// Refusals carry fixed messages, never a dependency's error text. Their
// codes are these.
//
//   - InvalidArgument: credentials sent in a malformed way, or under two
//     headers.
//   - Unauthenticated: no key, or a malformed, invalid, revoked, expired,
//     disabled, paused or suspended one, all alike.
//   - PermissionDenied: a missing scope or a denied procedure, with an
//     ErrorInfo detail.
//   - ResourceExhausted: with RetryInfo and QuotaFailure details.
//   - Unavailable: the store or the Limiter failed.
//   - Internal: a bad cost.
//
// The RateLimit headers are sent as response headers. So are Deprecation
// and Sunset for a key in its grace period.
package connectapikey

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/rpc/internal/rpcauth"
)

// Rule is what calls to a procedure require. The zero value requires a
// valid key, no scope, and spends a cost of 1.
type Rule struct {
	// Scopes are the scopes a key needs, all of them unless AnyScope.
	Scopes []string
	// AnyScope is satisfied by any one of Scopes.
	AnyScope bool
	// Open lets every call through without a key. A key sent is neither
	// verified nor spent, and apikey.FromContext returns nil. It is meant
	// for the health and reflection services. It takes no other field.
	Open bool
	// Deny refuses every key with PermissionDenied (a call without a
	// valid key still gets Unauthenticated). Set it on Options.Default to
	// deny the procedures that Methods does not list.
	Deny bool
	// Cost is what a call spends from its customer's limits, 1 when 0.
	// A negative cost is refused. Options.Cost, if set, replaces it.
	Cost int64
	// Unmetered calls spend nothing.
	Unmetered bool
	// PerMessage makes a stream spend Cost for each message it receives
	// from the client, instead of once when it starts. A refused message
	// fails its Receive with ResourceExhausted. Unary calls spend once
	// either way.
	PerMessage bool
}

// Options configures an Interceptor. The zero value reads the key from the
// Authorization header ("Bearer <key>") and "X-API-Key", requires a valid key
// on every procedure and spends nothing.
type Options struct {
	// Limits is what calls spend with (see apikey.Middleware.Spend): the
	// Limiter, its failure policy and the RateLimit headers, sent as
	// response header metadata. Give it the LimitOptions of the HTTP
	// routes' Middleware (the same Limiter), so that one customer has one
	// budget and one plan across every surface. Each surface has its own
	// circuit breaker. Without a Limiter, calls spend nothing.
	Limits apikey.LimitOptions
	// Metadata names the headers the key is read from, in order. When
	// empty, they are "authorization" (Bearer scheme) and "x-api-key". A header
	// other than Authorization holds the bare token. A call that sends
	// tokens under two of them, or one of them twice, is refused with
	// InvalidArgument.
	Metadata []string
	// HideCredentials removes the key's header from the request headers
	// the handler sees, so that it cannot be logged or forwarded.
	HideCredentials bool
	// Methods maps a procedure ("/pkg.Service/Method") or a service
	// ("pkg.Service") to its Rule. A procedure's own entry wins over its
	// service's.
	Methods map[string]Rule
	// Default is the Rule of every procedure Methods does not cover. Its
	// zero value requires a valid key. A Rule with Deny set refuses them.
	Default Rule
	// Cost, if set, gives the cost of a call in place of Rule.Cost. It
	// computes it from the call's procedure, its request and its key. The
	// request is the request message, a *connect.Request's Any(). When the
	// rule is PerMessage, it is the received message. It is nil at the
	// start of a stream. A cost of 0 spends nothing. A negative cost, or a
	// panic, is refused with Internal and logged.
	Cost func(ctx context.Context, procedure string, req any, k *apikey.Key) int64
	// ErrorDomain is the domain of ErrorInfo details, "apikey" when empty.
	ErrorDomain string
	// Logger, if set, logs failures of dependencies and misconfigurations.
	Logger *slog.Logger
	// TrustedProxies, if set, are the proxies whose forwarding metadata
	// names the client, for keys restricted to IP ranges (see
	// ipallow.Proxies; its Header, in lower case, is the metadata key).
	// Nil: the client is the connection's peer.
	TrustedProxies *ipallow.Proxies
}

// Interceptor is a connect.Interceptor for handlers. On a client it
// passes calls through untouched. Build it with New, since the zero value
// is not usable. It is safe for concurrent use.
type Interceptor struct {
	g *rpcauth.Guard
}

var _ connect.Interceptor = (*Interceptor)(nil)

// New returns an Interceptor verifying keys with m. Some options give an
// error wrapping apikey.ErrInvalidOptions. They are a nil m, a header name
// that is not a valid lower-case metadata key, and a procedure name that
// is neither "/pkg.Service/Method" nor "pkg.Service". So are an invalid
// scope, a negative Cost and an Open rule with other fields.
func New(m *apikey.Manager, opts Options) (*Interceptor, error) {
	c := rpcauth.Config{
		Limits: opts.Limits, Metadata: opts.Metadata, HideCredentials: opts.HideCredentials,
		Default: rpcauth.Rule(opts.Default), ErrorDomain: opts.ErrorDomain, Logger: opts.Logger,
		TrustedProxies: opts.TrustedProxies,
	}
	if opts.Cost != nil {
		c.Cost = opts.Cost
	}
	if opts.Methods != nil {
		c.Methods = make(map[string]rpcauth.Rule, len(opts.Methods))
		for name, r := range opts.Methods {
			c.Methods[name] = rpcauth.Rule(r)
		}
	}
	g, err := rpcauth.New(m, c)
	if err != nil {
		return nil, err
	}
	return &Interceptor{g: g}, nil
}

// header reads a call's request headers.
type header http.Header

func (h header) Values(s *rpcauth.Source) []string { return h[s.Header] }

// WrapUnary authorizes a unary call, spends its cost and calls next with
// the key in the context.
func (ic *Interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		spec := req.Spec()
		if spec.IsClient {
			return next(ctx, req)
		}
		g := ic.g
		r := g.Rule(spec.Procedure)
		if r.Open {
			return next(ctx, req)
		}
		k, from, ref := rpcauth.Authenticate(ctx, g, r, header(req.Header()), ipallow.ParseRemoteAddr(req.Peer().Addr))
		if ref != nil {
			return nil, refusal(ref, nil)
		}
		var h http.Header
		if g.MeteredAtStart(r, false) {
			h, ref = g.Spend(ctx, spec.Procedure, r, req.Any(), k)
			if ref != nil {
				grace(h, k)
				return nil, refusal(ref, h)
			}
		}
		var out http.Header // the response's headers, when there are any to send
		if len(h) > 0 || k.RotatedTo != "" {
			if info, ok := connect.CallInfoForHandlerContext(ctx); ok {
				out = info.ResponseHeader()
				copyHeader(out, h)
				grace(out, k)
			}
		}
		if g.Hide() && from >= 0 {
			req.Header().Del(g.Sources()[from].Header)
		}
		res, err := next(g.WithKey(ctx, k), req)
		if out == nil && res != nil && (len(h) > 0 || k.RotatedTo != "") { // no call info: a direct call
			copyHeader(res.Header(), h)
			grace(res.Header(), k)
		}
		return res, err
	}
}

// WrapStreamingClient returns next, since the Interceptor guards handlers
// only.
func (ic *Interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler authorizes a stream once at its start and spends
// its cost then, or for each message received when the procedure's rule
// is PerMessage.
func (ic *Interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		g := ic.g
		procedure := conn.Spec().Procedure
		r := g.Rule(procedure)
		if r.Open {
			return next(ctx, conn)
		}
		k, from, ref := rpcauth.Authenticate(ctx, g, r, header(conn.RequestHeader()), ipallow.ParseRemoteAddr(conn.Peer().Addr))
		if ref != nil {
			return refusal(ref, nil)
		}
		out := conn.ResponseHeader()
		grace(out, k)
		if g.MeteredAtStart(r, true) {
			h, ref := g.Spend(ctx, procedure, r, nil, k)
			copyHeader(out, h)
			if ref != nil {
				return refusal(ref, nil)
			}
		}
		if g.Hide() && from >= 0 {
			conn.RequestHeader().Del(g.Sources()[from].Header)
		}
		ctx = g.WithKey(ctx, k)
		if g.MeteredPerMessage(r) {
			conn = &meteredConn{StreamingHandlerConn: conn, ctx: ctx, g: g, r: r, k: k, procedure: procedure}
		}
		return next(ctx, conn)
	}
}

// meteredConn spends for each message received.
type meteredConn struct {
	connect.StreamingHandlerConn
	ctx       context.Context
	g         *rpcauth.Guard
	r         *rpcauth.Rule
	k         *apikey.Key
	procedure string
}

func (c *meteredConn) Receive(m any) error {
	if err := c.StreamingHandlerConn.Receive(m); err != nil {
		return err
	}
	if _, ref := c.g.Spend(c.ctx, c.procedure, c.r, m, c.k); ref != nil {
		return refusal(ref, nil)
	}
	return nil
}

// refusal is the *connect.Error of ref, with meta as its metadata (nil
// for none) and a Retry-After for a rate-limit refusal.
func refusal(ref *rpcauth.Refusal, meta http.Header) error {
	e := connect.NewError(connect.Code(ref.Code), errors.New(ref.Message))
	for _, d := range ref.Details {
		if ed, err := connect.NewErrorDetail(d); err == nil {
			e.AddDetail(ed)
		}
	}
	copyHeader(e.Meta(), meta)
	if ref.RetryAfter != "" {
		e.Meta().Set("Retry-After", ref.RetryAfter)
	}
	return e
}

// grace sets Deprecation and Sunset in h for a key in its grace period.
func grace(h http.Header, k *apikey.Key) {
	if dep, sun, ok := rpcauth.Grace(k); ok && h != nil {
		h.Set("Sunset", sun)
		if dep != "" {
			h.Set("Deprecation", dep)
		}
	}
}

// copyHeader copies the values of src into dst.
func copyHeader(dst, src http.Header) {
	for name, vs := range src {
		dst[name] = vs
	}
}
