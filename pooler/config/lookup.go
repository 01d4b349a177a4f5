package config

import "time"

// The Effective* helpers resolve PgBouncer's precedence, user > database >
// global (src/server.c probably_wrong_pool_pool_mode, pool_pool_size,
// pool_res_pool_size, database_max_connections, pool_server_lifetime).
//
// user is the login user of the client; when the database forces a user
// (db.User), the pool belongs to that user and its [users] entry applies
// instead, as in PgBouncer. db may be nil (no database-level override).

// poolUser returns the [users] entry governing a pool, or nil.
func (c *Config) poolUser(db *Database, user string) *User {
	if db != nil && db.User != "" {
		user = db.User
	}
	return c.Users[user]
}

// EffectivePoolMode returns the pool mode for a pool: the user's pool_mode,
// else the database's, else the global one.
func (c *Config) EffectivePoolMode(db *Database, user string) PoolMode {
	if u := c.poolUser(db, user); u != nil && u.PoolMode != PoolModeUnset {
		return u.PoolMode
	}
	if db != nil && db.PoolMode != PoolModeUnset {
		return db.PoolMode
	}
	return c.PoolMode
}

// EffectivePoolSize returns a pool's size: the user's pool_size, else the
// database's, else default_pool_size. 0 means unlimited (PgBouncer ≥ 1.24).
func (c *Config) EffectivePoolSize(db *Database, user string) int {
	if u := c.poolUser(db, user); u != nil && u.PoolSize >= 0 {
		return u.PoolSize
	}
	if db != nil && db.PoolSize >= 0 {
		return db.PoolSize
	}
	return c.DefaultPoolSize
}

// EffectiveReservePoolSize returns a pool's reserve: the user's
// reserve_pool_size, else the database's, else the global one.
func (c *Config) EffectiveReservePoolSize(db *Database, user string) int {
	if u := c.poolUser(db, user); u != nil && u.ReservePoolSize >= 0 {
		return u.ReservePoolSize
	}
	if db != nil && db.ReservePoolSize >= 0 {
		return db.ReservePoolSize
	}
	return c.ReservePoolSize
}

// EffectiveMinPoolSize returns a database's min_pool_size, else the global
// one.
func (c *Config) EffectiveMinPoolSize(db *Database) int {
	if db != nil && db.MinPoolSize >= 0 {
		return db.MinPoolSize
	}
	return c.MinPoolSize
}

// EffectiveMaxDBConnections returns a database's max_db_connections, else
// the global one; 0 means unlimited. (The loaders store a file's database
// value of 0 as -1, "use the global value", as PgBouncer reads it.)
func (c *Config) EffectiveMaxDBConnections(db *Database) int {
	if db != nil && db.MaxDBConnections >= 0 {
		return db.MaxDBConnections
	}
	return c.MaxDBConnections
}

// EffectiveMaxUserConnections returns a user's max_user_connections, else
// the global one; 0 means unlimited. user is the pool user (see above).
// (The loaders store a file's user value of 0 as -1.)
func (c *Config) EffectiveMaxUserConnections(db *Database, user string) int {
	if u := c.poolUser(db, user); u != nil && u.MaxUserConnections >= 0 {
		return u.MaxUserConnections
	}
	return c.MaxUserConnections
}

// EffectiveServerLifetime returns a database's server_lifetime, else the
// global one. (The loaders store a file's database value of 0 as -1, as
// PgBouncer reads it.)
func (c *Config) EffectiveServerLifetime(db *Database) time.Duration {
	if db != nil && db.ServerLifetime >= 0 {
		return db.ServerLifetime
	}
	return c.ServerLifetime
}

// LookupDatabase returns the database a client names. An unknown name, when
// a "*" fallback exists, gets a copy of the fallback with Name set to the
// requested name and DBName set to it too (unless the fallback names a
// dbname explicitly). The returned value must not be modified when it is a
// configured entry.
func (c *Config) LookupDatabase(name string) (*Database, bool) {
	if db, ok := c.Databases[name]; ok {
		return db, true
	}
	fb, ok := c.Databases["*"]
	if !ok || name == adminDBName {
		return nil, false
	}
	db := *fb
	db.Name = name
	if db.DBName == "" {
		db.DBName = name
	}
	return &db, true
}
