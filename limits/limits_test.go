package limits_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limits"
)

// Limits are stored as JSON: kinds and windows by name, Subject never.
func TestLimitJSON(t *testing.T) {
	t.Parallel()
	c := limits.Credits("credits", 1000, limits.Never)
	c.Subject = "secret-subject"
	ls := []limits.Limit{limits.Rate("per-second", 10, time.Second, 20), limits.Quota("daily", 100, limits.Day), c, limits.Credits("monthly", 5, limits.Month)}
	b, err := json.Marshal(ls)
	require.NoError(t, err)
	assert.JSONEq(t, `[
		{"name":"per-second","kind":"rate","count":10,"period":1000000000,"burst":20},
		{"name":"daily","kind":"quota","count":100,"window":"day"},
		{"name":"credits","kind":"credits","count":1000},
		{"name":"monthly","kind":"credits","count":5,"window":"month"}]`, string(b))
	var back []limits.Limit
	require.NoError(t, json.Unmarshal(b, &back))
	c.Subject = ""
	assert.Equal(t, []limits.Limit{ls[0], ls[1], c, ls[3]}, back)
	for _, bad := range []string{`[{"name":"a","kind":"burst","count":1}]`, `[{"name":"a","kind":"quota","count":1,"window":"week"}]`} {
		assert.ErrorIs(t, json.Unmarshal([]byte(bad), &back), limits.ErrInvalid, bad)
	}
	_, err = json.Marshal(limits.Limit{Name: "x", Kind: 9})
	assert.Error(t, err)
	assert.Equal(t, "Kind(9)", limits.Kind(9).String())
	assert.Equal(t, "month", limits.Month.String())
}

func TestLimitValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		limit limits.Limit
		ok    bool
	}{
		{"Rate", limits.Rate("per-second", 100, time.Second, 0), true},
		{"TokenName", limits.Rate("a:b/c.d-e_f*", 1, time.Second, 0), true},
		{"NameWithSpace", limits.Quota("a b", 1, limits.Day), false},
		{"NameWithQuote", limits.Quota(`a"b`, 1, limits.Day), false},
		{"NameWithComma", limits.Quota("a,b", 1, limits.Day), false},
		{"NameWithEquals", limits.Quota("a=b", 1, limits.Day), false},
		{"NameStartsWithDigit", limits.Quota("1a", 1, limits.Day), false},
		{"NameNonASCII", limits.Quota("café", 1, limits.Day), false},
		{"NameTooLong", limits.Quota("a"+string(make([]byte, 64)), 1, limits.Day), false},
		{"OnePerNanosecond", limits.Rate("r", 1e9, time.Second, 0), true},
		{"AboveOnePerNanosecond", limits.Rate("r", 1e9+1, time.Second, 0), false},
		{"HugeCount", limits.Rate("r", math.MaxInt64, time.Second, 0), false},
		{"HugeCountHugePeriod", limits.Rate("r", math.MaxInt64, math.MaxInt64, 0), false},
		{"HugeBurst", limits.Rate("r", 1, time.Second, math.MaxInt64), false},
		{"LongBurstWindow", limits.Rate("r", 1, 24*time.Hour, 1e6), false},
		{"QuotaCountLimit", limits.Quota("q", 1e14-1, limits.Day), true},
		{"QuotaCountAbove", limits.Quota("q", 1e14, limits.Day), false},
		{"QuotaNever", limits.Quota("q", 1, limits.Never), false},
		{"CreditsNever", limits.Credits("c", 1, limits.Never), true},
		{"CreditsDay", limits.Credits("c", 1, limits.Day), true},
		{"CreditsMonth", limits.Credits("c", 1, limits.Month), true},
		{"CreditsHour", limits.Credits("c", 1, limits.Hour), false},
		{"CreditsZero", limits.Credits("c", 0, limits.Never), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.limit.Validate()
			if tc.ok {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, limits.ErrInvalid)
			}
		})
	}
	err := limits.Plans{"p": {limits.Quota("a", 1, limits.Day), limits.Rate("a", 1, time.Second, 0)}}.Validate()
	assert.ErrorIs(t, err, limits.ErrInvalid, "one name twice in a plan")
}

// The internal arithmetic numbers kinds and windows as the API does.
func TestLimitConstants(t *testing.T) {
	t.Parallel()
	assert.EqualValues(t, gcra.KindRate, limits.KindRate)
	assert.EqualValues(t, gcra.KindQuota, limits.KindQuota)
	assert.EqualValues(t, gcra.KindCredits, limits.KindCredits)
	assert.EqualValues(t, gcra.Never, limits.Never)
	assert.EqualValues(t, gcra.Minute, limits.Minute)
	assert.EqualValues(t, gcra.Hour, limits.Hour)
	assert.EqualValues(t, gcra.Day, limits.Day)
	assert.EqualValues(t, gcra.Month, limits.Month)
}
