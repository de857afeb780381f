package rpcauth

import (
	"context"
	"errors"
	"net/http"
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

// msgDenied refuses a method whose rule is Deny. Every other message is
// the HTTP middleware's problem detail (apikey.Outcome), so a customer
// reads the same sentence on every surface.
const msgDenied = "The API key may not call this method."

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

// refuse maps an error of extraction, Verify or Spend to its refusal.
// The code follows the HTTP status of its row in the core's table of
// outcomes (apikey.Outcome), and the message is that row's detail.
func (g *Guard) refuse(ctx context.Context, err error) *Refusal {
	var rl *apikey.RateLimitError
	if errors.As(err, &rl) {
		return g.rateLimited(rl)
	}
	name, status, detail := apikey.Outcome(err)
	switch status {
	case http.StatusBadRequest:
		return &Refusal{Code: InvalidArgument, Message: detail}
	case http.StatusUnauthorized:
		return &Refusal{Code: Unauthenticated, Message: detail}
	case http.StatusForbidden:
		return &Refusal{Code: PermissionDenied, Message: detail,
			Details: []proto.Message{&errdetails.ErrorInfo{Reason: reasons[name], Domain: g.domain}}}
	case http.StatusInternalServerError:
		g.logError(ctx, "apikey: rate limiting misconfigured", err)
		return &Refusal{Code: Internal, Message: detail}
	}
	if err != apikey.ErrUnavailable { // the bare sentinel was logged where it was made
		g.logError(ctx, "apikey: dependency failed", err)
	}
	return &Refusal{Code: Unavailable, Message: detail}
}

// reasons names the ErrorInfo reason of each outcome answered 403.
var reasons = map[string]string{
	"insufficient_scope": ReasonScope,
	"unknown_plan":       ReasonPlan,
	"ip_not_allowed":     ReasonIP,
}

// scopeRefusal refuses a key without the scopes of r.
func (g *Guard) scopeRefusal(r *Rule) *Refusal {
	match := "all"
	if r.AnyScope {
		match = "any"
	}
	return &Refusal{Code: PermissionDenied, Message: scopeDetail, Details: []proto.Message{&errdetails.ErrorInfo{
		Reason: ReasonScope, Domain: g.domain,
		Metadata: map[string]string{"scopes": strings.Join(r.Scopes, " "), "match": match},
	}}}
}

// denied refuses a key calling a method whose rule is Deny.
func (g *Guard) denied() *Refusal {
	return &Refusal{Code: PermissionDenied, Message: msgDenied,
		Details: []proto.Message{&errdetails.ErrorInfo{Reason: ReasonDenied, Domain: g.domain}}}
}

// The details of the refusals that carry more than their outcome's row.
var (
	_, _, scopeDetail       = apikey.Outcome(apikey.ErrInsufficientScope)
	_, _, rateLimitedDetail = apikey.Outcome(apikey.ErrRateLimited)
)

// rateLimited refuses a call over its limit, with RetryInfo (unless only
// credits that are never refilled deny: a retry would not help) and a
// QuotaFailure naming the tightest limit.
func (g *Guard) rateLimited(e *apikey.RateLimitError) *Refusal {
	res := &e.Result
	ref := &Refusal{Code: ResourceExhausted, Message: rateLimitedDetail}
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
