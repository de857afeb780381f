package webhook_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/webhook"
)

// The known answer of the Standard Webhooks reference libraries.
const (
	vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorBody   = `{"test": 2432232314}`
	vectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

var vectorTime = time.Unix(1614265330, 0)

func TestSignMatchesTheSpecificationsVector(t *testing.T) {
	sig, err := webhook.Sign(vectorID, vectorTime, []byte(vectorBody), vectorSecret)
	require.NoError(t, err)
	assert.Equal(t, vectorSig, sig)
}

func TestSignWithSeveralSecrets(t *testing.T) {
	other := webhook.NewSecret()
	sig, err := webhook.Sign(vectorID, vectorTime, []byte(vectorBody), other, vectorSecret)
	require.NoError(t, err)
	parts := strings.Split(sig, " ")
	require.Len(t, parts, 2, "one signature per secret, space-separated")
	assert.Equal(t, vectorSig, parts[1])
	for _, secret := range []string{other, vectorSecret} {
		v, err := webhook.NewVerifier([]string{secret}, webhook.VerifierOptions{Now: func() time.Time { return vectorTime }})
		require.NoError(t, err)
		assert.NoError(t, v.Verify(headers(vectorID, vectorTime, sig), []byte(vectorBody)), "a receiver holding either secret")
	}
}

func headers(id string, ts time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", sig)
	return h
}

func TestVerify(t *testing.T) {
	now := vectorTime
	v, err := webhook.NewVerifier([]string{webhook.NewSecret(), vectorSecret}, webhook.VerifierOptions{Now: func() time.Time { return now }})
	require.NoError(t, err)
	tests := []struct {
		name   string
		header func() http.Header
		body   string
		want   error
	}{
		{"Valid", func() http.Header { return headers(vectorID, vectorTime, vectorSig) }, vectorBody, nil},
		{"AmongOtherSignatures", func() http.Header {
			return headers(vectorID, vectorTime, "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,abc "+vectorSig+" v2,xyz")
		}, vectorBody, nil},
		{"TamperedBody", func() http.Header { return headers(vectorID, vectorTime, vectorSig) }, `{"test": 2432232315}`, webhook.ErrSignature},
		{"OtherID", func() http.Header { return headers("msg_other", vectorTime, vectorSig) }, vectorBody, webhook.ErrSignature},
		{"WrongSignature", func() http.Header {
			return headers(vectorID, vectorTime, "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=")
		}, vectorBody, webhook.ErrSignature},
		{"NotBase64", func() http.Header { return headers(vectorID, vectorTime, "v1,!!!") }, vectorBody, webhook.ErrSignature},
		{"AsymmetricOnly", func() http.Header { return headers(vectorID, vectorTime, "v1a,"+vectorSig[3:]) }, vectorBody, webhook.ErrSignature},
		{"TooOld", func() http.Header { return headers(vectorID, vectorTime.Add(-5*time.Minute-time.Second), vectorSig) }, vectorBody, webhook.ErrTimestamp},
		{"TooNew", func() http.Header { return headers(vectorID, vectorTime.Add(5*time.Minute+time.Second), vectorSig) }, vectorBody, webhook.ErrTimestamp},
		{"TimestampNotANumber", func() http.Header {
			h := headers(vectorID, vectorTime, vectorSig)
			h.Set("webhook-timestamp", "2021-02-25T15:02:10Z")
			return h
		}, vectorBody, webhook.ErrTimestamp},
		{"NoID", func() http.Header { h := headers(vectorID, vectorTime, vectorSig); h.Del("webhook-id"); return h }, vectorBody, webhook.ErrMissingHeader},
		{"NoTimestamp", func() http.Header {
			h := headers(vectorID, vectorTime, vectorSig)
			h.Del("webhook-timestamp")
			return h
		}, vectorBody, webhook.ErrMissingHeader},
		{"NoSignature", func() http.Header {
			h := headers(vectorID, vectorTime, vectorSig)
			h.Del("webhook-signature")
			return h
		}, vectorBody, webhook.ErrMissingHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Verify(tc.header(), []byte(tc.body))
			if tc.want == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, tc.want)
		})
	}
}

func TestVerifyToleranceIsConfigurable(t *testing.T) {
	v, err := webhook.NewVerifier([]string{vectorSecret}, webhook.VerifierOptions{
		Tolerance: time.Hour, Now: func() time.Time { return vectorTime.Add(59 * time.Minute) },
	})
	require.NoError(t, err)
	assert.NoError(t, v.Verify(headers(vectorID, vectorTime, vectorSig), []byte(vectorBody)))
}

func TestSecrets(t *testing.T) {
	s := webhook.NewSecret()
	assert.True(t, strings.HasPrefix(s, "whsec_"))
	assert.NotEqual(t, s, webhook.NewSecret(), "random")
	for _, bad := range []string{
		"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // no prefix
		"whsec_not base64!", "whsec_c2hvcnQ=", // too short
		"whsec_" + strings.Repeat("QUFB", 22), // 66 bytes
	} {
		_, err := webhook.NewVerifier([]string{bad}, webhook.VerifierOptions{})
		assert.ErrorIs(t, err, webhook.ErrSecret, "%q", bad)
		_, err = webhook.Sign("msg_x", vectorTime, nil, bad)
		assert.ErrorIs(t, err, webhook.ErrSecret, "%q", bad)
	}
	_, err := webhook.NewVerifier(nil, webhook.VerifierOptions{})
	assert.ErrorIs(t, err, webhook.ErrSecret, "no secret")
	_, err = webhook.NewVerifier([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, webhook.VerifierOptions{})
	assert.NoError(t, err, "24 bytes")
	for _, bad := range []string{"whsec_c2hvcnQ=", "whsec_" + strings.Repeat("QUFB", 22)} {
		_, err := webhook.NewVerifier([]string{bad}, webhook.VerifierOptions{})
		assert.NotContains(t, err.Error(), strings.TrimPrefix(bad, "whsec_"), "an error never shows the secret")
	}
}
