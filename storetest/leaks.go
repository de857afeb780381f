package storetest

import (
	"context"
	"fmt"
	"testing"
)

// raceLeakReports reports one leaked token four times at once (GitHub
// sending an alert again while the first is in flight, a user reporting
// it too). Every report succeeds, and the key is revoked by exactly one
// write, so a repeated report changes nothing.
func raceLeakReports(t *testing.T, e raceEnv, n int) string {
	token, k := raceIssue(t, e.m, n)
	errs := make([]error, 4)
	fns := make([]func(), len(errs))
	for i := range fns {
		fns[i] = func() { _, errs[i] = e.m.Leaked(context.Background(), token, "https://example.com/leak", "revoke") }
	}
	together(fns...)
	for i, err := range errs {
		if err != nil {
			return fmt.Sprintf("report %d: %v", i, err)
		}
	}
	if v := mustBeRevoked(e.m, "the leaked key", token); v != "" {
		return v
	}
	got, err := e.m.Get(context.Background(), k.ID)
	if err != nil {
		return err.Error()
	}
	if got.Revision != k.Revision+1 {
		return fmt.Sprintf("revision %d after four reports of a key of revision %d: want one write", got.Revision, k.Revision)
	}
	return ""
}

// raceLeakRevokeVsDisable runs a report that revokes against one that
// disables and an operator's Enable. The key ends revoked whatever the
// order, since nothing undoes a revocation.
func raceLeakRevokeVsDisable(t *testing.T, e raceEnv, n int) string {
	token, k := raceIssue(t, e.m, n)
	var revokeErr, disableErr error
	together(
		func() { _, revokeErr = e.m.Leaked(context.Background(), token, "", "revoke") },
		func() { _, disableErr = e.m.Leaked(context.Background(), token, "", "disable") },
		func() { _, _ = e.m.Enable(context.Background(), k.ID) },
	)
	for what, err := range map[string]error{"revoke": revokeErr, "disable": disableErr} {
		if err != nil {
			return fmt.Sprintf("the %s report: %v", what, err)
		}
	}
	return mustBeRevoked(e.m, "the key reported for revocation", token)
}
