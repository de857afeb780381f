package rpcauth

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gokeys/apikey"
)

// Code is a status code. The codes of gRPC and Connect share their numbers.
type Code uint32

// The codes of refusals.
const (
	InvalidArgument   Code = 3
	PermissionDenied  Code = 7
	ResourceExhausted Code = 8
	Internal          Code = 13
	Unavailable       Code = 14
	Unauthenticated   Code = 16
)

// The messages of refusals are the HTTP middleware's problem details. So a
// customer reads the same sentence on every surface. Keys get one message
// per code (malformed, invalid, revoked, expired, disabled, paused and
// suspended alike).
const (
	msgBadRequest      = "The request carries its credentials in a malformed way."
	msgUnauthenticated = "A valid API key is required."
	msgScope           = "The API key lacks a scope this resource requires."
	msgPlan            = "The API key's plan is not configured on this server."
	msgDenied          = "The API key may not call this method."
	msgIP              = "The API key may not be used from this IP address: it is restricted to other IP ranges."
	msgRateLimited     = "The API key's rate limit is exceeded."
	msgInternal        = "The server could not process the request."
	msgUnavailable     = "Authentication is temporarily unavailable."
)

// The ErrorInfo reasons of PermissionDenied.
const (
	ReasonScope  = "INSUFFICIENT_SCOPE"
	ReasonPlan   = "PLAN_NOT_CONFIGURED"
	ReasonDenied = "METHOD_NOT_ALLOWED"
	ReasonIP     = "IP_NOT_ALLOWED"
)

// Refusal is a call refused. It holds the code, the fixed message and the
// details (errdetails messages). It never carries a dependency's error
// text.
type Refusal struct {
	Code    Code
	Message string
	Details []proto.Message
	// RetryAfter is the Retry-After header value of a rate-limited call
	// ("" when none), in whole seconds as over HTTP.
	RetryAfter string
}

// refuse maps an error of extraction, Verify or Spend to its refusal:
// the one table of outcomes of the RPC surfaces.
func (g *Guard) refuse(ctx context.Context, err error) *Refusal {
	var rl *apikey.RateLimitError
	switch {
	case errors.As(err, &rl):
		return g.rateLimited(rl)
	case errors.Is(err, apikey.ErrBadRequest):
		return &Refusal{Code: InvalidArgument, Message: msgBadRequest}
	case errors.Is(err, apikey.ErrMissingKey), errors.Is(err, apikey.ErrMalformed),
		errors.Is(err, apikey.ErrInvalid), errors.Is(err, apikey.ErrExpired),
		errors.Is(err, apikey.ErrRevoked), errors.Is(err, apikey.ErrDisabled),
		errors.Is(err, apikey.ErrPaused), errors.Is(err, apikey.ErrSuspended):
		return &Refusal{Code: Unauthenticated, Message: msgUnauthenticated}
	case errors.Is(err, apikey.ErrIPNotAllowed):
		return &Refusal{Code: PermissionDenied, Message: msgIP,
			Details: []proto.Message{&errdetails.ErrorInfo{Reason: ReasonIP, Domain: g.domain}}}
	case errors.Is(err, apikey.ErrUnknownPlan):
		return &Refusal{Code: PermissionDenied, Message: msgPlan,
			Details: []proto.Message{&errdetails.ErrorInfo{Reason: ReasonPlan, Domain: g.domain}}}
	case errors.Is(err, apikey.ErrInvalidOptions):
		g.logError(ctx, "apikey: rate limiting misconfigured", err)
		return &Refusal{Code: Internal, Message: msgInternal}
	}
	if err != apikey.ErrUnavailable { // the bare sentinel was logged where it was made
		g.logError(ctx, "apikey: dependency failed", err)
	}
	return &Refusal{Code: Unavailable, Message: msgUnavailable}
}

// scopeRefusal refuses a key without the scopes of r.
func (g *Guard) scopeRefusal(r *Rule) *Refusal {
	match := "all"
	if r.AnyScope {
		match = "any"
	}
	return &Refusal{Code: PermissionDenied, Message: msgScope, Details: []proto.Message{&errdetails.ErrorInfo{
		Reason: ReasonScope, Domain: g.domain,
		Metadata: map[string]string{"scopes": strings.Join(r.Scopes, " "), "match": match},
	}}}
}

// denied refuses a key calling a method whose rule is Deny.
func (g *Guard) denied() *Refusal {
	return &Refusal{Code: PermissionDenied, Message: msgDenied,
		Details: []proto.Message{&errdetails.ErrorInfo{Reason: ReasonDenied, Domain: g.domain}}}
}

// rateLimited refuses a call over its limit, with RetryInfo (unless only
// credits that are never refilled deny: a retry would not help) and a
// QuotaFailure naming the tightest limit.
func (g *Guard) rateLimited(e *apikey.RateLimitError) *Refusal {
	res := &e.Result
	ref := &Refusal{Code: ResourceExhausted, Message: msgRateLimited}
	if res.RetryAfter > 0 {
		ref.Details = append(ref.Details, &errdetails.RetryInfo{RetryDelay: durationpb.New(res.RetryAfter)})
		ref.RetryAfter = strconv.FormatInt(max(1, int64((res.RetryAfter+1e9-1)/1e9)), 10)
	}
	l := &res.Limit
	ref.Details = append(ref.Details, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
		Subject:     "limit:" + l.Name,
		Description: l.Kind.String() + " " + l.Name + " of " + strconv.FormatInt(l.Count, 10) + " exhausted",
		QuotaId:     l.Name,
		QuotaValue:  l.Count,
	}}})
	return ref
}
