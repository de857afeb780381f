// Package grpcapikey guards a gRPC server (google.golang.org/grpc) with
// apikey. It provides unary and streaming server interceptors. They read
// the key from the call's metadata, verify it with Manager.Verify, check
// the method's scopes and spend its cost with the apikey.LimitOptions of
// the HTTP Middleware. So the RPC and HTTP surfaces of a service refuse the
// same keys. They also share each customer's budget, plans and failure
// policy.
//
//	ic, err := grpcapikey.New(m, grpcapikey.Options{
//		Limits: limitOpts, // the HTTP routes' MiddlewareOptions.Limits: one budget
//		Methods: map[string]grpcapikey.Rule{
//			"/shop.v1.Orders/Create":  {Scopes: []string{"write"}},
//			"grpc.health.v1.Health":   {Open: true},
//			"grpc.reflection.v1.ServerReflection": {Open: true},
//		},
//	})
//	if err != nil { ... }
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(ic.Unary),
//		grpc.ChainStreamInterceptor(ic.Stream),
//	)
//	// In a handler: key := apikey.FromContext(ctx)
//
// Refusals carry fixed messages, never a dependency's error text. Their
// codes are these.
//
//   - InvalidArgument: credentials sent in a malformed way, or under two
//     metadata keys.
//   - Unauthenticated: no key, or a malformed, invalid, revoked, expired,
//     disabled, paused or suspended one, all alike.
//   - PermissionDenied: a missing scope or a denied method, with an
//     ErrorInfo detail.
//   - ResourceExhausted: with RetryInfo and QuotaFailure details.
//   - Unavailable: the store or the Limiter failed.
//   - Internal: a bad cost.
//
// The RateLimit headers are sent as response header metadata. So are
// Deprecation and Sunset for a key in its grace period.
package grpcapikey

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/rpc/internal/rpcauth"
)

// Rule is what calls to a method require. The zero value requires a valid
// key, no scope, and spends a cost of 1.
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
	// deny the methods that Methods does not list.
	Deny bool
	// Cost is what a call spends from its customer's limits, 1 when 0.
	// A negative cost is refused. Options.Cost, if set, replaces it.
	Cost int64
	// Unmetered calls spend nothing.
	Unmetered bool
	// PerMessage makes a stream spend Cost for each message it receives
	// from the client, instead of once when it starts. A refused message
	// fails its RecvMsg with ResourceExhausted. Unary calls spend once
	// either way.
	PerMessage bool
}

// Options configures an Interceptor. The zero value reads the key from
// "authorization" ("Bearer <key>") and "x-api-key", requires a valid key on
// every method and spends nothing.
type Options struct {
	// Limits is what calls spend with (see apikey.Middleware.Spend): the
	// Limiter, its failure policy and the RateLimit headers, sent as
	// response header metadata. Give it the LimitOptions of the HTTP
	// routes' Middleware (the same Limiter), so that one customer has one
	// budget and one plan across every surface. Each surface has its own
	// circuit breaker. Without a Limiter, calls spend nothing.
	Limits apikey.LimitOptions
	// Metadata names the metadata keys the key is read from, in order. When
	// empty, they are "authorization" (Bearer scheme) and "x-api-key". A key
	// other than "authorization" holds the bare token. A call that sends
	// tokens under two of them, or one of them twice, is refused with
	// InvalidArgument.
	Metadata []string
	// HideCredentials removes the key's metadata from the incoming
	// metadata the handler sees, so that it cannot be logged or forwarded.
	HideCredentials bool
	// Methods maps a full method name ("/pkg.Service/Method") or a service
	// ("pkg.Service") to its Rule. A method's own entry wins over its
	// service's.
	Methods map[string]Rule
	// Default is the Rule of every method Methods does not cover. Its
	// zero value requires a valid key. A Rule with Deny set refuses them.
	Default Rule
	// Cost, if set, gives the cost of a call in place of Rule.Cost. It
	// computes it from the call's full method name, its request and its
	// key. The request is the received message when the rule is
	// PerMessage, and nil at the start of a stream. A cost of 0 spends
	// nothing. A negative cost, or a panic, is refused with Internal and
	// logged.
	Cost func(ctx context.Context, method string, req any, k *apikey.Key) int64
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

// Interceptor holds the unary and streaming server interceptors. Build it
// with New, since the zero value is not usable. It is safe for concurrent
// use.
type Interceptor struct {
	g     *rpcauth.Guard
	mdKey any // see incomingKey; nil: read through metadata.ValueFromIncomingContext
}

// New returns an Interceptor verifying keys with m. Some options give an
// error wrapping apikey.ErrInvalidOptions. They are a nil m, a metadata
// key that is not a lower-case text key, and a method name that is
// neither "/pkg.Service/Method" nor "pkg.Service". So are an invalid
// scope, a negative Cost and an Open rule with other fields.
func New(m *apikey.Manager, opts Options) (*Interceptor, error) {
	c := rpcauth.Config{
		Limits: opts.Limits, Metadata: opts.Metadata, HideCredentials: opts.HideCredentials,
		Default: rpcauth.Rule(opts.Default), Cost: opts.Cost, ErrorDomain: opts.ErrorDomain, Logger: opts.Logger,
		TrustedProxies: opts.TrustedProxies,
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
	return &Interceptor{g: g, mdKey: incomingKey()}, nil
}

// incomingKey returns the context key of the incoming metadata, which the
// metadata package does not export, or nil if it cannot be learnt. With
// it, a call's metadata is read in place, once, where each
// metadata.ValueFromIncomingContext walks the context and copies the
// values it returns.
func incomingKey() any {
	key := rpcauth.ContextKey(func(ctx context.Context) { metadata.ValueFromIncomingContext(ctx, "k") })
	if key == nil {
		return nil
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.MD{"k": {"v"}})
	if md, ok := ctx.Value(key).(metadata.MD); !ok || len(md["k"]) != 1 || md["k"][0] != "v" {
		return nil
	}
	return key
}

// incoming reads a call's incoming metadata.
type incoming struct {
	md  metadata.MD
	ctx context.Context // set: read through metadata.ValueFromIncomingContext
}

// metadataOf returns the reader of ctx's incoming metadata.
func (ic *Interceptor) metadataOf(ctx context.Context) incoming {
	if ic.mdKey == nil {
		return incoming{ctx: ctx}
	}
	md, _ := ctx.Value(ic.mdKey).(metadata.MD)
	return incoming{md: md}
}

func (in incoming) Values(s *rpcauth.Source) []string {
	if in.ctx != nil {
		return metadata.ValueFromIncomingContext(in.ctx, s.Key)
	}
	if vs, ok := in.md[s.Key]; ok {
		return vs
	}
	// Keys are lower case when the transport made them; metadata put in a
	// context by other code may not be (ValueFromIncomingContext's rule).
	for k, vs := range in.md {
		if len(k) == len(s.Key) && strings.EqualFold(k, s.Key) {
			return vs
		}
	}
	return nil
}

// peerAddr returns the address of the call's peer, or the zero Addr
// (which no IP range holds) when it is unknown.
func peerAddr(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	if a, ok := p.Addr.(*net.TCPAddr); ok {
		return a.AddrPort().Addr()
	}
	return ipallow.ParseRemoteAddr(p.Addr.String())
}

// Unary is a grpc.UnaryServerInterceptor. It authorizes the call, spends
// its cost and calls handler with the key in the context.
func (ic *Interceptor) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	g := ic.g
	r := g.Rule(info.FullMethod)
	if r.Open {
		return handler(ctx, req)
	}
	k, from, ref := rpcauth.Authenticate(ctx, g, r, ic.metadataOf(ctx), peerAddr(ctx))
	if ref != nil {
		return nil, refusal(ref)
	}
	hdr := graceHeader(k)
	if g.MeteredAtStart(r, false) {
		h, ref := g.Spend(ctx, info.FullMethod, r, req, k)
		hdr = appendHeader(hdr, h, ref)
		if ref != nil {
			setHeader(ctx, hdr)
			return nil, refusal(ref)
		}
	}
	setHeader(ctx, hdr)
	return handler(ic.context(ctx, k, from), req)
}

// Stream is a grpc.StreamServerInterceptor. It authorizes the stream once
// at its start and spends its cost then, or for each message received
// when the method's rule is PerMessage.
func (ic *Interceptor) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	g := ic.g
	r := g.Rule(info.FullMethod)
	if r.Open {
		return handler(srv, ss)
	}
	ctx := ss.Context()
	k, from, ref := rpcauth.Authenticate(ctx, g, r, ic.metadataOf(ctx), peerAddr(ctx))
	if ref != nil {
		return refusal(ref)
	}
	hdr := graceHeader(k)
	if g.MeteredAtStart(r, true) {
		h, ref := g.Spend(ctx, info.FullMethod, r, nil, k)
		hdr = appendHeader(hdr, h, ref)
		if ref != nil {
			sendHeader(ss, hdr)
			return refusal(ref)
		}
	}
	sendHeader(ss, hdr)
	w := &stream{ServerStream: ss, ctx: ic.context(ctx, k, from)}
	if g.MeteredPerMessage(r) {
		w.g, w.r, w.k, w.method = g, r, k, info.FullMethod
	}
	return handler(srv, w)
}

// context returns ctx carrying k, without the credentials' metadata when
// they are hidden.
func (ic *Interceptor) context(ctx context.Context, k *apikey.Key, from int) context.Context {
	if ic.g.Hide() && from >= 0 {
		if md, ok := metadata.FromIncomingContext(ctx); ok { // a copy
			delete(md, ic.g.Sources()[from].Key)
			ctx = metadata.NewIncomingContext(ctx, md)
		}
	}
	return ic.g.WithKey(ctx, k)
}

// stream is a server stream whose context carries the key and which, for
// a PerMessage rule (g set), spends for each message received.
type stream struct {
	grpc.ServerStream
	ctx    context.Context
	g      *rpcauth.Guard
	r      *rpcauth.Rule
	k      *apikey.Key
	method string
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil || s.g == nil {
		return err
	}
	if _, ref := s.g.Spend(s.ctx, s.method, s.r, m, s.k); ref != nil {
		return refusal(ref)
	}
	return nil
}

// refusal is the status error of ref.
func refusal(ref *rpcauth.Refusal) error {
	st := status.New(codes.Code(ref.Code), ref.Message)
	if len(ref.Details) == 0 {
		return st.Err()
	}
	ds := make([]protoadapt.MessageV1, len(ref.Details))
	for i, d := range ref.Details {
		ds[i] = protoadapt.MessageV1Of(d)
	}
	if withDetails, err := st.WithDetails(ds...); err == nil {
		st = withDetails
	}
	return st.Err()
}

// graceHeader returns the Deprecation and Sunset metadata of a key in its
// grace period, nil for any other key.
func graceHeader(k *apikey.Key) metadata.MD {
	dep, sun, ok := rpcauth.Grace(k)
	if !ok {
		return nil
	}
	md := metadata.MD{"sunset": {sun}}
	if dep != "" {
		md["deprecation"] = []string{dep}
	}
	return md
}

// appendHeader adds the RateLimit headers h (nil when nothing was spent)
// and the Retry-After of a rate-limit refusal to md.
func appendHeader(md metadata.MD, h http.Header, ref *rpcauth.Refusal) metadata.MD {
	if len(h) == 0 && (ref == nil || ref.RetryAfter == "") {
		return md
	}
	if md == nil {
		md = make(metadata.MD, len(h)+1)
	}
	for name, vs := range h {
		md[lower(name)] = vs
	}
	if ref != nil && ref.RetryAfter != "" {
		md["retry-after"] = []string{ref.RetryAfter}
	}
	return md
}

// lower is the metadata key of a header the Middleware writes.
func lower(name string) string {
	switch name {
	case "Ratelimit":
		return "ratelimit"
	case "Ratelimit-Policy":
		return "ratelimit-policy"
	case "X-Ratelimit-Limit":
		return "x-ratelimit-limit"
	case "X-Ratelimit-Remaining":
		return "x-ratelimit-remaining"
	case "X-Ratelimit-Reset":
		return "x-ratelimit-reset"
	}
	return lowerASCII(name)
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// setHeader sends md as the unary call's response header metadata.
func setHeader(ctx context.Context, md metadata.MD) {
	if len(md) > 0 {
		_ = grpc.SetHeader(ctx, md) // fails only without a transport stream (a direct call in a test)
	}
}

// sendHeader sets md as the stream's response header metadata.
func sendHeader(ss grpc.ServerStream, md metadata.MD) {
	if len(md) > 0 {
		_ = ss.SetHeader(md)
	}
}
