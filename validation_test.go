package apikey_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Bad input is an *InputError naming its field (ErrInvalidInput, 400 over HTTP), never
// a store failure nor ErrInvalidOptions, and nothing is stored; values at
// the limits are accepted.
func TestBadInputIsAnInputErrorNamingItsField(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("x", n) }
	m := newManager(t, memstore.New(), apikey.Options{Plans: limits.Plans{"free": nil, long(apikey.MaxPlanLength): nil}})
	ctx := context.Background()
	scopes := func(n int) []string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("s%d", i)
		}
		return s
	}
	meta := func(n int) map[string]string {
		md := map[string]string{}
		for i := range n {
			md[fmt.Sprintf("k%d", i)] = "v"
		}
		return md
	}
	lims := func(n int) []limits.Limit {
		ls := make([]limits.Limit, n)
		for i := range ls {
			ls[i] = limits.Quota(fmt.Sprintf("q%d", i), 10, limits.Day)
		}
		return ls
	}
	for _, tc := range []struct {
		name  string
		field string
		p     apikey.IssueParams
	}{
		{"NULInName", "name", apikey.IssueParams{Name: "a\x00b"}},
		{"NULInOwner", "owner", apikey.IssueParams{Owner: "a\x00b"}},
		{"NULInPlan", "plan", apikey.IssueParams{Plan: "fr\x00ee"}},
		{"NULInScope", "scopes", apikey.IssueParams{Scopes: []string{"a\x00"}}},
		{"NULInMetadataKey", "metadata", apikey.IssueParams{Metadata: map[string]string{"k\x00": "v"}}},
		{"NULInMetadataValue", "metadata", apikey.IssueParams{Metadata: map[string]string{"k": "v\x00"}}},
		{"ControlInName", "name", apikey.IssueParams{Name: "bell\a"}},
		{"C1ControlInOwner", "owner", apikey.IssueParams{Owner: "a\u0085b"}},
		{"NewlineInMetadata", "metadata", apikey.IssueParams{Metadata: map[string]string{"k": "a\nb"}}},
		{"InvalidUTF8", "name", apikey.IssueParams{Name: "\xff\xfe"}},
		{"EmptyMetadataKey", "metadata", apikey.IssueParams{Metadata: map[string]string{"": "v"}}},
		{"LongName", "name", apikey.IssueParams{Name: long(apikey.MaxNameLength + 1)}},
		{"LongOwner", "owner", apikey.IssueParams{Owner: long(apikey.MaxOwnerLength + 1)}},
		{"LongPlan", "plan", apikey.IssueParams{Plan: long(apikey.MaxPlanLength + 1)}},
		{"LongScope", "scopes", apikey.IssueParams{Scopes: []string{long(apikey.MaxScopeLength + 1)}}},
		{"ManyScopes", "scopes", apikey.IssueParams{Scopes: scopes(apikey.MaxScopes + 1)}},
		{"LongMetadataKey", "metadata", apikey.IssueParams{Metadata: map[string]string{long(apikey.MaxMetadataKeyLength + 1): "v"}}},
		{"LongMetadataValue", "metadata", apikey.IssueParams{Metadata: map[string]string{"k": long(apikey.MaxMetadataValueLength + 1)}}},
		{"ManyMetadata", "metadata", apikey.IssueParams{Metadata: meta(apikey.MaxMetadataEntries + 1)}},
		{"ManyLimits", "limits", apikey.IssueParams{Limits: lims(apikey.MaxLimits + 1)}},
		{"InvalidLimit", "limits", apikey.IssueParams{Limits: []limits.Limit{{Name: "x", Kind: limits.KindQuota}}}},
		{"UnknownPlan", "plan", apikey.IssueParams{Plan: "enterprise"}},
		{"PastExpiry", "expires_at", apikey.IssueParams{ExpiresAt: time.Now().Add(-time.Hour)}},
		{"ExpiryAfter9999", "expires_at", apikey.IssueParams{ExpiresAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"NegativeTTL", "ttl", apikey.IssueParams{TTL: -time.Second}},
		{"UnknownPrefix", "prefix", apikey.IssueParams{Prefix: "sk_other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := m.Issue(ctx, tc.p)
			assertInputError(t, err, tc.field)
		})
	}
	// An InputError never holds the value it refuses.
	for _, p := range []apikey.IssueParams{
		{Name: "hunter2\x00"}, {Owner: "hunter2\n"}, {Metadata: map[string]string{"k": "hunter2\x1b"}}, {Scopes: []string{"hunter2 "}},
	} {
		_, _, err := m.Issue(ctx, p)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "hunter2")
	}
	list, err := m.List(ctx, "", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, list, "nothing was stored")

	_, k, err := m.Issue(ctx, apikey.IssueParams{
		Name: long(apikey.MaxNameLength-2) + "é", Owner: long(apikey.MaxOwnerLength), Plan: long(apikey.MaxPlanLength),
		Scopes: scopes(apikey.MaxScopes), Metadata: map[string]string{long(apikey.MaxMetadataKeyLength): long(apikey.MaxMetadataValueLength)},
		Limits: lims(apikey.MaxLimits),
	})
	require.NoError(t, err, "values at the limits")
	_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Metadata = meta(apikey.MaxMetadataEntries); return nil })
	require.NoError(t, err)
}
