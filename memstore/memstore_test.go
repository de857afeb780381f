package memstore_test

import (
	"testing"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) apikey.Store { return memstore.New() })
}
