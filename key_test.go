package apikey_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

func TestKeyPrintsNoHash(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	_, k := issue(t, m, apikey.IssueParams{Name: "n"})
	hash := fmt.Sprintf("%x", k.Hash)
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("key", "key", k, "value", *k)
	js, err := json.Marshal(k)
	require.NoError(t, err)
	for _, out := range []string{
		fmt.Sprintf("%v", k), fmt.Sprintf("%+v", k), fmt.Sprintf("%#v", k),
		fmt.Sprintf("%v", *k), fmt.Sprintf("%+v", *k), fmt.Sprintf("%s", k), string(js), logged.String(),
	} {
		assert.Contains(t, out, k.ID)
		assert.Contains(t, out, k.Hint)
		assert.NotContains(t, out, hash)
		assert.NotContains(t, out, string(k.Hash))
		assert.NotContains(t, strings.ToLower(out), `"hash"`)
	}
}
