package apikey

import (
	"context"
	"errors"
	"fmt"

	"github.com/gokeys/apikey/limits"
)

// Balance returns what the limits of customer id have left now, without
// spending anything: those of his plan and his grants, as a request of a
// key without limits of its own spends them. Remaining may be negative
// after costs reported post hoc. It needs a Limiter that implements
// limits.Debiter (read with a debit of 0) or limits.Peeker.
func (mw *Middleware) Balance(ctx context.Context, id string) (limits.Result, error) {
	rl := &mw.rl
	d, debits := rl.limiter.(limits.Debiter)
	pk, peeks := rl.limiter.(limits.Peeker)
	if !debits && !peeks {
		return limits.Result{}, fmt.Errorf("apikey: balance: %w: the Limiter implements neither Debiter nor limits.Peeker", errors.ErrUnsupported)
	}
	k := &Key{ID: id, Owner: id}
	var c *Customer
	if mw.m.custs != nil {
		var err error
		if c, err = mw.m.custs.read(ctx, id); err != nil {
			return limits.Result{}, fmt.Errorf("apikey: balance: %w: %w", ErrUnavailable, err)
		}
	}
	_, ls, err := rl.plans.limitsFor(ctx, k, c)
	if err != nil || len(ls) == 0 {
		return limits.Result{Allowed: err == nil}, err
	}
	if debits { // a debit of 0 reads the balances as they are
		res, err := d.Debit(ctx, id, ls, 0)
		res.Allowed = err == nil && res.Remaining > 0 // whether a request of cost 1 would pass
		for _, st := range res.States {
			res.Allowed = res.Allowed && st.Remaining > 0
		}
		return res, err
	}
	res, err := pk.Peek(ctx, id, ls) // what one more request would leave
	if err != nil || !res.Allowed {
		return res, err
	}
	res.Remaining++
	for i := range res.States {
		res.States[i].Remaining++
	}
	return res, nil
}
