package config

import "fmt"

// defaultServerPort is a [databases] entry's port when none is given.
const defaultServerPort = 5432

// defaultPeerPort is a [peers] entry's port when none is given.
const defaultPeerPort = 6432

// newConfig returns a Config holding every default, ready for a loader to
// override.
func newConfig(path, format string) *Config {
	c := &Config{Path: path, Format: format}
	applyDefaults(c)
	return c
}

// applyDefaults sets every global setting to PgBouncer 1.25's default (the
// def column of the params table, so SHOW CONFIG's "default" column and the
// effective defaults cannot drift apart) and makes the maps non-nil. Both
// loaders start from it, then override what the file sets.
//
// It does not touch per-database and per-user overrides: their "unset"
// markers (-1, PoolModeUnset, negative durations) stay, and the Effective*
// helpers resolve user > database > global at lookup.
func applyDefaults(c *Config) {
	for i := range params {
		p := &params[i]
		if p.set == nil {
			continue
		}
		var v any = 0 // verbose: NULL in PgBouncer, read as 0
		if p.def != "" || p.kind != kindInt {
			var err error
			if v, err = parseValue(p.kind, p.def); err != nil {
				panic(fmt.Sprintf("config: bad default for %s: %v", p.name, err))
			}
		}
		p.set(c, v)
	}
	applyEntraDefaults(c)
	if c.Databases == nil {
		c.Databases = map[string]*Database{}
	}
	if c.Users == nil {
		c.Users = map[string]*User{}
	}
	if c.AuthUsers == nil {
		c.AuthUsers = map[string]string{}
	}
}

// newDatabase returns a [databases] entry with nothing overridden.
func newDatabase(name, file string, line int) *Database {
	return &Database{
		Name:             name,
		Port:             defaultServerPort,
		PoolSize:         -1,
		MinPoolSize:      -1,
		ReservePoolSize:  -1,
		MaxDBConnections: -1,
		PoolMode:         PoolModeUnset,
		ServerLifetime:   -1,
		File:             file,
		Line:             line,
	}
}

// newUser returns a [users] entry with nothing overridden.
func newUser(name, file string, line int) *User {
	return &User{
		Name:                   name,
		PoolMode:               PoolModeUnset,
		PoolSize:               -1,
		ReservePoolSize:        -1,
		MaxUserConnections:     -1,
		QueryTimeout:           -1,
		IdleTransactionTimeout: -1,
		ClientIdleTimeout:      -1,
		File:                   file,
		Line:                   line,
	}
}

// normalizeOverrides maps the per-database and per-user values PgBouncer
// treats as "inherit" onto the Config's unset markers: a database's
// max_db_connections or server_lifetime of 0, and a user's
// max_user_connections or timeouts of 0, mean "use the global value" in
// PgBouncer (server.c database_max_connections, pool_server_lifetime,
// user_max_connections; janitor.c checks user timeouts with "> 0").
// It also fills an empty DBName with the entry's name, except for the "*"
// fallback (LookupDatabase fills that one per requested name).
//
// It also normalises the Entra settings (normalizeEntra).
func normalizeOverrides(c *Config) {
	normalizeEntra(c)
	for name, db := range c.Databases {
		if db.MaxDBConnections == 0 {
			db.MaxDBConnections = -1
		}
		if db.ServerLifetime == 0 {
			db.ServerLifetime = -1
		}
		if db.DBName == "" && name != "*" {
			db.DBName = name
		}
	}
	for _, u := range c.Users {
		if u.MaxUserConnections == 0 {
			u.MaxUserConnections = -1
		}
		if u.QueryTimeout == 0 {
			u.QueryTimeout = -1
		}
		if u.IdleTransactionTimeout == 0 {
			u.IdleTransactionTimeout = -1
		}
		if u.ClientIdleTimeout == 0 {
			u.ClientIdleTimeout = -1
		}
	}
}
