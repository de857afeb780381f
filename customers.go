package apikey

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errNoCustomerStore is returned by the customer methods of a Manager
// whose store keeps no customers.
var errNoCustomerStore = fmt.Errorf("apikey: %w: the store keeps no customers (CustomerStore)", errors.ErrUnsupported)

// Customer returns the current record of customer id, read from its
// source without the cache. It is the zero record (Revision 0) when none
// is stored. Without a customer source it is always the zero record.
func (m *Manager) Customer(ctx context.Context, id string) (*Customer, error) {
	if m.custs == nil {
		return &Customer{ID: id}, nil
	}
	c, err := m.custs.read(ctx, id)
	if err != nil {
		return nil, storeErr("customer", err)
	}
	return c.Clone(), nil
}

// SetCustomer changes the stored record of customer id with change, which
// receives a copy of the record (the zero record when none is stored) and
// may set every field but ID, CreatedAt, UpdatedAt and Revision. The write
// is conditional on the record not having changed since it was read, and
// is retried on a lost race like Update. Invalid values give an
// *InputError. The error change returns is returned as it is. The change reaches
// every verification through m at once, and other instances through the
// Notifier. It needs a store that implements CustomerStore.
func (m *Manager) SetCustomer(ctx context.Context, id string, change func(*Customer) error) (*Customer, error) {
	cs := m.custs
	if cs == nil || cs.store == nil {
		return nil, errNoCustomerStore
	}
	if err := validText("id", id, MaxOwnerLength); err != nil || id == "" {
		return nil, &InputError{Field: "id", Reason: "must be 1 to 255 bytes of text"}
	}
	var err error
	for range maxAttempts {
		var c *Customer
		c, err = cs.store.GetCustomer(ctx, id)
		if errors.Is(err, ErrNotFound) {
			c, err = &Customer{ID: id}, nil
		}
		if err != nil {
			return nil, storeErr("set customer", err)
		}
		before := c.Clone()
		if err := change(c); err != nil {
			return nil, err
		}
		c.ID, c.CreatedAt, c.Revision = before.ID, before.CreatedAt, before.Revision
		if err := validCustomer(c, m.plans); err != nil {
			return nil, err
		}
		now := m.now().UTC().Truncate(time.Microsecond)
		if c.CreatedAt.IsZero() {
			c.CreatedAt = now
		}
		c.UpdatedAt = now
		if err = cs.store.PutCustomer(m.hooks.customerSet(ctx, before, c), c); err == nil {
			m.CustomerChanged(ctx, id)
			m.events.emit(ctx, event{Type: eventCustomer, Owner: id, Time: now})
			return c.Clone(), nil
		}
		if !isConflict(err) {
			break
		}
	}
	return nil, storeErr("set customer", err)
}

// Customers returns a page of stored customers by ID, after the id after.
func (m *Manager) Customers(ctx context.Context, after string, limit int) ([]*Customer, error) {
	if m.custs == nil || m.custs.store == nil {
		return nil, errNoCustomerStore
	}
	cs, err := m.custs.store.ListCustomers(ctx, after, ListOptions{Size: limit}.PageSize())
	if err != nil {
		return nil, storeErr("list customers", err)
	}
	return cs, nil
}

// CustomerChanged tells m, and through the Notifier every instance, that
// the record of customer id changed. SetCustomer calls it. An application
// that answers Options.Customers from its own records calls it after
// changing one.
func (m *Manager) CustomerChanged(ctx context.Context, id string) {
	if m.custs != nil {
		m.custs.invalidate(id)
	}
	m.fleet.publish(ctx, customerTopic+id)
}

// customerOf returns the customer record of k for the request path (nil
// without customer records).
func (m *Manager) customerOf(ctx context.Context, k *Key, now time.Time) (*Customer, error) {
	if m.custs == nil {
		return nil, nil
	}
	return m.custs.lookup(ctx, k.Customer(), now)
}
