package apikey_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/gcra"
)

// Limits are stored as JSON: kinds and windows by name, Subject never.
func TestLimitJSON(t *testing.T) {
	t.Parallel()
	c := apikey.Credits("credits", 1000, apikey.Never)
	c.Subject = "secret-subject"
	ls := []apikey.Limit{apikey.Rate("per-second", 10, time.Second, 20), apikey.Quota("daily", 100, apikey.Day), c, apikey.Credits("monthly", 5, apikey.Month)}
	b, err := json.Marshal(ls)
	require.NoError(t, err)
	assert.JSONEq(t, `[
		{"name":"per-second","kind":"rate","count":10,"period":1000000000,"burst":20},
		{"name":"daily","kind":"quota","count":100,"window":"day"},
		{"name":"credits","kind":"credits","count":1000},
		{"name":"monthly","kind":"credits","count":5,"window":"month"}]`, string(b))
	var back []apikey.Limit
	require.NoError(t, json.Unmarshal(b, &back))
	c.Subject = ""
	assert.Equal(t, []apikey.Limit{ls[0], ls[1], c, ls[3]}, back)
	for _, bad := range []string{`[{"name":"a","kind":"burst","count":1}]`, `[{"name":"a","kind":"quota","count":1,"window":"week"}]`} {
		assert.ErrorIs(t, json.Unmarshal([]byte(bad), &back), apikey.ErrInvalidOptions, bad)
	}
	_, err = json.Marshal(apikey.Limit{Name: "x", Kind: 9})
	assert.Error(t, err)
	assert.Equal(t, "LimitKind(9)", apikey.LimitKind(9).String())
	assert.Equal(t, "month", apikey.Month.String())
}

func TestLimitValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		limit apikey.Limit
		ok    bool
	}{
		{"Rate", apikey.Rate("per-second", 100, time.Second, 0), true},
		{"TokenName", apikey.Rate("a:b/c.d-e_f*", 1, time.Second, 0), true},
		{"NameWithSpace", apikey.Quota("a b", 1, apikey.Day), false},
		{"NameWithQuote", apikey.Quota(`a"b`, 1, apikey.Day), false},
		{"NameWithComma", apikey.Quota("a,b", 1, apikey.Day), false},
		{"NameWithEquals", apikey.Quota("a=b", 1, apikey.Day), false},
		{"NameStartsWithDigit", apikey.Quota("1a", 1, apikey.Day), false},
		{"NameNonASCII", apikey.Quota("café", 1, apikey.Day), false},
		{"NameTooLong", apikey.Quota("a"+string(make([]byte, 64)), 1, apikey.Day), false},
		{"OnePerNanosecond", apikey.Rate("r", 1e9, time.Second, 0), true},
		{"AboveOnePerNanosecond", apikey.Rate("r", 1e9+1, time.Second, 0), false},
		{"HugeCount", apikey.Rate("r", math.MaxInt64, time.Second, 0), false},
		{"HugeCountHugePeriod", apikey.Rate("r", math.MaxInt64, math.MaxInt64, 0), false},
		{"HugeBurst", apikey.Rate("r", 1, time.Second, math.MaxInt64), false},
		{"LongBurstWindow", apikey.Rate("r", 1, 24*time.Hour, 1e6), false},
		{"QuotaCountLimit", apikey.Quota("q", 1e14-1, apikey.Day), true},
		{"QuotaCountAbove", apikey.Quota("q", 1e14, apikey.Day), false},
		{"QuotaNever", apikey.Quota("q", 1, apikey.Never), false},
		{"CreditsNever", apikey.Credits("c", 1, apikey.Never), true},
		{"CreditsDay", apikey.Credits("c", 1, apikey.Day), true},
		{"CreditsMonth", apikey.Credits("c", 1, apikey.Month), true},
		{"CreditsHour", apikey.Credits("c", 1, apikey.Hour), false},
		{"CreditsZero", apikey.Credits("c", 0, apikey.Never), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.limit.Validate()
			if tc.ok {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
			}
		})
	}
	err := apikey.Plans{"p": {apikey.Quota("a", 1, apikey.Day), apikey.Rate("a", 1, time.Second, 0)}}.Validate()
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions, "one name twice in a plan")
}

// The internal arithmetic numbers kinds and windows as the API does.
func TestLimitConstants(t *testing.T) {
	t.Parallel()
	assert.EqualValues(t, gcra.KindRate, apikey.KindRate)
	assert.EqualValues(t, gcra.KindQuota, apikey.KindQuota)
	assert.EqualValues(t, gcra.KindCredits, apikey.KindCredits)
	assert.EqualValues(t, gcra.Never, apikey.Never)
	assert.EqualValues(t, gcra.Minute, apikey.Minute)
	assert.EqualValues(t, gcra.Hour, apikey.Hour)
	assert.EqualValues(t, gcra.Day, apikey.Day)
	assert.EqualValues(t, gcra.Month, apikey.Month)
}
