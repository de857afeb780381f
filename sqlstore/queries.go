package sqlstore

// queries holds the statements of one Store, built once by New with the
// table names and the dialect's placeholders.
type queries struct {
	insert, get, update, delete, exists     string
	markUsed, revoke, revokeOwner, ownerIDs string
	rotateOld, endGrace, state              string
	purge, deadIDs                          string

	// list holds List's statements by kind of cursor, and with or
	// without the UsableAt filter (index 1).
	listFirst, listAfter, listNull, listNullBefore [2]string

	owners, customerInsert, customerUpdate, customerGet, customerList, customerExists string

	// usageByKey and usageByCustomer select a key's or a customer's
	// records from a start (index 1) or from any (index 0), up to an end.
	usageByKey, usageByCustomer [2]string
	usagePurge                  string
	// addUsageChunk is the upsert of a full chunk (usageChunk records),
	// built once.
	addUsageChunk string
}

func buildQueries(d Dialect, t, ct, ut tableName) queries {
	tb, ctb, utb := t.quoted(d), ct.quoted(d), ut.quoted(d)
	// List's order: newest first. NULL (a zero CreatedAt) is the oldest:
	// last, which is where MySQL and SQLite put NULLs in a descending
	// order anyway.
	order, nullOrder := " ORDER BY created_at DESC, id DESC LIMIT ?", " ORDER BY id DESC LIMIT ?"
	if d == Postgres {
		order = " ORDER BY created_at DESC NULLS LAST, id DESC LIMIT ?"
	}
	list := "SELECT " + columns + " FROM " + tb + " WHERE owner = ?"
	usable := [2]string{"", " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"}
	q := queries{
		insert: "INSERT INTO " + tb + " (" + columns + ") VALUES (" + placeholders(numColumns) + ")",
		get:    "SELECT " + columns + " FROM " + tb + " WHERE id = ?",
		// Every column but id is replaced; last_used_at only moves
		// forward, and a NULL argument keeps it (the comparison is NULL).
		// It is conditional on the revision read, which it increments; a
		// stored revoked_at is never cleared or changed.
		update: "UPDATE " + tb + " SET prefix = ?, hint = ?, hash = ?, hash_version = ?, name = ?, owner = ?, " +
			"scopes = ?, plan = ?, metadata = ?, created_at = ?, expires_at = ?, " +
			"revoked_at = COALESCE(revoked_at, ?), rotated_from = ?, rotated_to = ?, " +
			"rotated_at = ?, lineage = ?, disabled = ?, limits = ?, paused = ?, allowed_ips = ?, revision = revision + 1, " +
			"last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ? THEN ? ELSE last_used_at END " +
			"WHERE id = ? AND revision = ?",
		delete:   "DELETE FROM " + tb + " WHERE id = ?",
		exists:   "SELECT 1 FROM " + tb + " WHERE id = ?",
		markUsed: "UPDATE " + tb + " SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
		revoke:   "UPDATE " + tb + " SET revoked_at = ?, revision = revision + 1 WHERE id = ? AND revoked_at IS NULL",
		// MariaDB has no UPDATE ... RETURNING: RevokeOwner locks the ids
		// with ownerIDs and updates them in the same transaction.
		revokeOwner: "UPDATE " + tb + " SET revoked_at = ?, revision = revision + 1 WHERE owner = ? AND revoked_at IS NULL RETURNING id",
		ownerIDs:    "SELECT id FROM " + tb + " WHERE owner = ? AND revoked_at IS NULL ORDER BY id FOR UPDATE",
		// The old key keeps a stored expiry earlier than the grace end;
		// the write is conditional on the revision the Manager read.
		rotateOld: "UPDATE " + tb + " SET expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at < ? " +
			"THEN expires_at ELSE ? END, rotated_to = ?, rotated_at = ?, revision = revision + 1 " +
			"WHERE id = ? AND revoked_at IS NULL AND rotated_to = '' AND revision = ?",
		// The predecessor's grace ends, unless it is revoked or ends sooner.
		endGrace: "UPDATE " + tb + " SET expires_at = ?, revision = revision + 1 " +
			"WHERE id = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
		state: "SELECT revoked_at, rotated_to FROM " + tb + " WHERE id = ?",
		// The condition is checked again on the rows deleted, in case one
		// changed since the subquery read it.
		purge: "DELETE FROM " + tb + " WHERE id IN (SELECT id FROM " + tb +
			" WHERE revoked_at < ? OR expires_at < ? LIMIT ?) AND (revoked_at < ? OR expires_at < ?) RETURNING id",
		deadIDs: "SELECT id FROM " + tb + " WHERE revoked_at < ? OR expires_at < ? LIMIT ?",

		owners: "SELECT DISTINCT owner FROM " + tb + " WHERE owner > ? ORDER BY owner LIMIT ?",
		customerInsert: "INSERT INTO " + ctb + " (" + customerColumns + ") VALUES (" +
			placeholders(numCustomerColumns) + ")",
		customerUpdate: "UPDATE " + ctb + " SET plan = ?, scopes = ?, max_keys = ?, limits = ?, credits = ?, " +
			"suspended = ?, metadata = ?, created_at = ?, updated_at = ?, allowed_ips = ?, revision = revision + 1 " +
			"WHERE id = ? AND revision = ?",
		customerGet:    "SELECT " + customerColumns + " FROM " + ctb + " WHERE id = ?",
		customerList:   "SELECT " + customerColumns + " FROM " + ctb + " WHERE id > ? ORDER BY id LIMIT ?",
		customerExists: "SELECT 1 FROM " + ctb + " WHERE id = ?",
	}
	from := [2]string{"", " AND start >= ?"}
	for i, f := range from {
		sel := "SELECT " + usageColumns + " FROM " + utb + " WHERE "
		// One key: ordered by start alone, which MariaDB reads from the
		// primary key without a sort.
		q.usageByKey[i] = sel + "key_id = ?" + f + " AND start < ? ORDER BY start"
		q.usageByCustomer[i] = sel + "customer = ?" + f + " AND start < ? ORDER BY start, key_id"
	}
	q.addUsageChunk = addUsageStatement(d, ut, usageChunk)
	q.usagePurge = "DELETE FROM " + utb + " WHERE start < ?"
	if d == MySQL { // in batches: InnoDB locks every row the DELETE reads
		q.usagePurge += " LIMIT ?"
	}
	for i, u := range usable {
		// The first page: no cursor.
		q.listFirst[i] = list + u + order
		// After a cursor with a creation time: the keys created earlier,
		// or at the same time with a lower id, as one range of the index
		// (created_at <= ?) filtered; then the keys without creation time.
		q.listAfter[i] = list + " AND created_at <= ? AND (created_at < ? OR id < ?)" + u + order
		q.listNull[i] = list + " AND created_at IS NULL" + u + nullOrder
		// After a cursor without creation time: the keys without one and
		// a lower id.
		q.listNullBefore[i] = list + " AND created_at IS NULL AND id < ?" + u + nullOrder
	}
	for _, s := range []*string{
		&q.insert, &q.get, &q.update, &q.delete, &q.exists, &q.markUsed, &q.revoke, &q.revokeOwner,
		&q.ownerIDs, &q.rotateOld, &q.endGrace, &q.state, &q.purge, &q.deadIDs, &q.owners,
		&q.customerInsert, &q.customerUpdate, &q.customerGet, &q.customerList, &q.customerExists,
		&q.listFirst[0], &q.listFirst[1], &q.listAfter[0], &q.listAfter[1],
		&q.listNull[0], &q.listNull[1], &q.listNullBefore[0], &q.listNullBefore[1],
		&q.usageByKey[0], &q.usageByKey[1], &q.usageByCustomer[0], &q.usageByCustomer[1], &q.usagePurge,
	} {
		*s = d.rebind(*s)
	}
	return q
}
