package sqlstore

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
)

// preparer is implemented by *sql.DB. A statement it prepares works on
// every connection of the pool and is safe for concurrent use.
type preparer interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// prepared holds the statement of Get, the verification hot path, prepared
// on first use when the DB can prepare. It saves SQLite a parse per
// lookup and MySQL two round trips per lookup (prepare and close).
type prepared struct {
	mu  sync.Mutex // serialises preparation and Close
	get atomic.Pointer[sql.Stmt]
}

// queryGet runs the Get query, through the prepared statement when there
// is one.
func (s *Store) queryGet(ctx context.Context, id string) (*sql.Rows, error) {
	if st := s.stmts.get.Load(); st != nil {
		return st.QueryContext(ctx, id)
	}
	p, ok := s.db.(preparer)
	if !ok {
		return s.db.QueryContext(ctx, s.q.get, id)
	}
	s.stmts.mu.Lock()
	st := s.stmts.get.Load()
	if st == nil {
		var err error
		if st, err = p.PrepareContext(ctx, s.q.get); err != nil {
			s.stmts.mu.Unlock()
			return nil, err
		}
		s.stmts.get.Store(st)
	}
	s.stmts.mu.Unlock()
	return st.QueryContext(ctx, id)
}

// Close releases the statements s prepared. It does not close the DB.
// Call it before closing the DB if the Store is discarded earlier. A
// Store still works after Close, preparing again when needed. It is safe
// for concurrent use.
func (s *Store) Close() error {
	s.stmts.mu.Lock()
	defer s.stmts.mu.Unlock()
	if st := s.stmts.get.Swap(nil); st != nil {
		return st.Close()
	}
	return nil
}
