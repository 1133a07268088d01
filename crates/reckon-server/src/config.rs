//! Typed settings, read once at start from flags and environment. The
//! environment names of the seed systems are honoured so their deployments
//! keep working unchanged.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database: Database,
    /// Service-scope keys (any of several variables may set one).
    pub service_keys: Vec<String>,
    pub admin_keys: Vec<String>,
    /// Origins allowed by CORS; empty disables CORS, `*` allows any.
    pub cors_origins: Vec<String>,
    pub idempotency_retention_secs: u64,
    pub sweep_interval_secs: u64,
    pub hold_ttl_default_secs: u64,
    pub hold_ttl_max_secs: u64,
    /// Bytes for the SQLite writer cache's compact tier
    /// (`reckon_store::sqlite::COMPACT_BYTES_MAX` by default).
    pub sqlite_compact_cache_bytes: usize,
}

/// Keys never print, even in debug output.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database", &self.database)
            .field(
                "service_keys",
                &format_args!("[{} redacted]", self.service_keys.len()),
            )
            .field(
                "admin_keys",
                &format_args!("[{} redacted]", self.admin_keys.len()),
            )
            .field("cors_origins", &self.cors_origins)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL, kept as given (it may carry
    /// a password, so `Debug` hides it).
    Postgres(PostgresUrl),
}

#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(pub String);

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keep scheme, host and database; drop user info.
        let url = &self.0;
        let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        write!(f, "{scheme}://***@{rest}")
    }
}

impl Database {
    /// `sqlite:PATH`, `sqlite://PATH`, a bare path, or a PostgreSQL URL
    /// (`postgres://user:password@host:port/database`).
    pub fn parse(url: &str) -> Result<Database, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            reckon_store::postgres::check_url(url)?;
            return Ok(Database::Postgres(PostgresUrl(url.to_owned())));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err("the database path is empty".into());
        }
        Ok(Database::Sqlite(PathBuf::from(path)))
    }
}

/// Reads an environment variable, treating empty as unset.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Every key set in any of `names`, without duplicates, in order.
pub fn keys_from_env(names: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for name in names {
        if let Some(k) = env(name) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

pub const SERVICE_KEY_VARS: &[&str] = &[
    "RECKON_API_KEY",
    "API_KEY",
    "ODIDO_API_KEY",
    "BILLING_API_KEY",
];
pub const ADMIN_KEY_VARS: &[&str] = &["RECKON_ADMIN_KEY", "ADMIN_SECRET_KEY"];

/// The default listen address: `RECKON_LISTEN`, else `0.0.0.0:$PORT` when a
/// bare `PORT` is set (container platforms), else `127.0.0.1:8080`.
pub fn default_listen() -> Result<SocketAddr, String> {
    if let Some(l) = env("RECKON_LISTEN") {
        return l
            .parse()
            .map_err(|_| format!("RECKON_LISTEN={l} is not an address such as 127.0.0.1:8080"));
    }
    if let Some(p) = env("PORT") {
        let port: u16 = p
            .parse()
            .map_err(|_| format!("PORT={p} is not a port number"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    Ok(SocketAddr::from(([127, 0, 0, 1], 8080)))
}

/// The default database: `RECKON_DATABASE_URL`, else `APP_DB_PATH`, else
/// `reckon.db` inside `APP_DATA_DIR`, else `./data/reckon.db`.
pub fn default_database() -> String {
    if let Some(url) = env("RECKON_DATABASE_URL") {
        return url;
    }
    if let Some(path) = env("APP_DB_PATH") {
        return format!("sqlite:{path}");
    }
    if let Some(dir) = env("APP_DATA_DIR") {
        return format!("sqlite:{}", PathBuf::from(dir).join("reckon.db").display());
    }
    "sqlite:./data/reckon.db".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            Database::parse("sqlite:./data/x.db"),
            Ok(Database::Sqlite("./data/x.db".into()))
        );
        assert_eq!(
            Database::parse("sqlite:///abs/x.db"),
            Ok(Database::Sqlite("/abs/x.db".into()))
        );
        assert_eq!(Database::parse("x.db"), Ok(Database::Sqlite("x.db".into())));
        assert!(matches!(
            Database::parse("postgres://u:secret@localhost/db"),
            Ok(Database::Postgres(_))
        ));
        let debug = format!(
            "{:?}",
            Database::parse("postgres://u:secret@localhost/db").unwrap()
        );
        assert!(!debug.contains("secret"), "{debug}");
        assert!(Database::parse("postgres://localhost:notaport/db").is_err());
        assert!(Database::parse("sqlite:").is_err());
    }
}
