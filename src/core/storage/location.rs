//! Where a lake (or any file the engine keeps) lives: a local path or an
//! object-store URL.
//!
//! Accepted, and nothing else:
//! - a plain path, or `file:///absolute/path` (local; the default);
//! - `az://<container>/<path>` — Azure Blob Storage (account from
//!   `AZURE_STORAGE_ACCOUNT_NAME`, or the emulator with
//!   `AZURE_STORAGE_USE_EMULATOR=true`);
//! - `abfss://<container>@<account>.dfs.core.windows.net/<path>` — ADLS Gen2
//!   (also `…blob.core.windows.net`);
//! - `s3://<bucket>/<path>` — S3 or an S3-compatible server (`AWS_ENDPOINT`).
//!
//! Any other scheme (`gs://`, `http://`, a typo) is an error naming it, never
//! a local folder called `gs:`. So are query options (`?…`), fragments and
//! credentials in the URL: credentials come from the environment only, and
//! the error does not repeat what was written before the `@`.
//!
//! Inside the engine a location travels as a `Path` whose text is either the
//! local path or the normalised URL (`az://container/prefix`), so every
//! `lake.join("_checkpoints")` keeps working; [`Location::of`] reads it back.

use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local file or folder.
    Local(PathBuf),
    /// An object in a store.
    Remote(Remote),
}

/// An object-store location: a store (scheme + container/bucket [+ account])
/// and a key prefix inside it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Remote {
    /// Which service.
    pub kind: Kind,
    /// The container (Azure) or bucket (S3).
    pub container: String,
    /// The Azure account named in an `abfss://` URL (otherwise from the environment).
    pub account: Option<String>,
    /// The key inside the container, without leading or trailing `/` (may be empty).
    pub key: String,
}

/// The object stores this build supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Azure Blob Storage / ADLS Gen2.
    Azure,
    /// S3 and S3-compatible servers.
    S3,
}

/// Why a location was refused. Never holds a credential.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    /// A scheme this build does not write to.
    #[error("`{url}`: the scheme `{scheme}://` is not supported (use a local path, file://, az://, abfss:// or s3://)")]
    Scheme {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// Something in the URL that is not accepted (named, not echoed when it may be a secret).
    #[error("`{url}`: {what}")]
    Unsupported {
        /// The URL (credentials removed).
        url: String,
        /// What is wrong.
        what: String,
    },
}

/// The scheme of `text` if it looks like a URL (`letters://…`).
fn scheme_of(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let ok = !scheme.is_empty()
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then_some(scheme)
}

impl Location {
    /// Parses what a user wrote (`--lake`, `[lake] path`).
    pub fn parse(text: &str) -> Result<Location, LocationError> {
        let Some(scheme) = scheme_of(text) else {
            return Ok(Location::Local(PathBuf::from(text)));
        };
        let rest = &text[scheme.len() + 3..];
        let unsupported = |what: String| LocationError::Unsupported {
            url: redact(text),
            what,
        };
        if rest.contains('?') || rest.contains('#') {
            let option = rest
                .split_once(['?', '#'])
                .map(|(_, o)| o.split(['=', '&']).next().unwrap_or(""))
                .unwrap_or("");
            return Err(unsupported(format!(
                "URL options are not supported (found `{option}`); settings and credentials come from the environment"
            )));
        }
        let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
        let key = key.trim_matches('/').to_string();
        if key.split('/').any(|c| c == "." || c == "..") {
            return Err(unsupported(
                "`.` and `..` are not allowed in an object key".into(),
            ));
        }
        let plain = |name: &str, what: &str| -> Result<String, LocationError> {
            if name.contains('@') {
                return Err(unsupported(format!(
                    "credentials in the URL are not accepted; set them in the environment instead (the {what} is the part before the first `/`)"
                )));
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(unsupported(format!("`{name}` is not a valid {what} name")));
            }
            Ok(name.to_string())
        };
        match scheme {
            "file" => {
                if !authority.is_empty() && authority != "localhost" {
                    return Err(unsupported(format!(
                        "a file:// URL names a local path (file:///path), not the host `{authority}`"
                    )));
                }
                Ok(Location::Local(PathBuf::from(format!("/{key}"))))
            }
            "az" => Ok(Location::Remote(Remote {
                kind: Kind::Azure,
                container: plain(authority, "container")?,
                account: None,
                key,
            })),
            "abfss" | "abfs" => {
                if scheme == "abfs" {
                    return Err(unsupported("abfs:// is unencrypted; use abfss://".into()));
                }
                let Some((container, host)) = authority.split_once('@') else {
                    return Err(unsupported(
                        "expected abfss://<container>@<account>.dfs.core.windows.net/<path>".into(),
                    ));
                };
                let account = host
                    .strip_suffix(".dfs.core.windows.net")
                    .or_else(|| host.strip_suffix(".blob.core.windows.net"))
                    .ok_or_else(|| {
                        unsupported(format!(
                            "the host `{host}` is not <account>.dfs.core.windows.net"
                        ))
                    })?;
                Ok(Location::Remote(Remote {
                    kind: Kind::Azure,
                    container: plain(container, "container")?,
                    account: Some(plain(account, "account")?),
                    key,
                }))
            }
            "s3" => Ok(Location::Remote(Remote {
                kind: Kind::S3,
                container: plain(authority, "bucket")?,
                account: None,
                key,
            })),
            other => Err(LocationError::Scheme {
                url: redact(text),
                scheme: other.to_string(),
            }),
        }
    }

    /// The location a path inside the engine stands for (see the module docs).
    /// A URL that does not parse is kept local; [`guard`] refuses to write it.
    pub fn of(path: &Path) -> Location {
        match path.to_str().filter(|t| scheme_of(t).is_some()) {
            Some(text) => Location::parse(text).unwrap_or_else(|_| Location::Local(path.into())),
            None => Location::Local(path.into()),
        }
    }

    /// The form the engine carries: the local path, or the normalised URL.
    pub fn to_path(&self) -> PathBuf {
        match self {
            Location::Local(p) => p.clone(),
            Location::Remote(r) => PathBuf::from(r.to_string()),
        }
    }
}

/// Refuses a path whose text is a URL this build cannot write: the local
/// file functions call it so that nothing ever creates a folder named `gs:`.
pub fn guard(path: &Path) -> std::io::Result<()> {
    if let Some(text) = path.to_str().filter(|t| scheme_of(t).is_some()) {
        Location::parse(text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    }
    Ok(())
}

/// The URL with anything between `://` and an `@` removed.
fn redact(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let (head, tail) = (&text[..s + 3], &text[at..]);
            // Keep the container of an abfss URL: it has no ':' (a secret pair would).
            let user = &text[s + 3..at];
            if user.contains(':') || user.len() > 63 {
                format!("{head}…{tail}")
            } else {
                text.to_string()
            }
        }
        _ => text.to_string(),
    }
}

impl Remote {
    /// The store part of the URL (`az://container`, `abfss://c@a.dfs.core.windows.net`, `s3://bucket`).
    pub fn store_url(&self) -> String {
        match (self.kind, &self.account) {
            (Kind::Azure, Some(a)) => {
                format!("abfss://{}@{a}.dfs.core.windows.net", self.container)
            }
            (Kind::Azure, None) => format!("az://{}", self.container),
            (Kind::S3, _) => format!("s3://{}", self.container),
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.store_url())
        } else {
            write!(f, "{}/{}", self.store_url(), self.key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(text: &str) -> Remote {
        match Location::parse(text).unwrap() {
            Location::Remote(r) => r,
            l => panic!("{text} parsed as {l:?}"),
        }
    }

    #[test]
    fn paths_and_file_urls_are_local() {
        assert_eq!(
            Location::parse("lake").unwrap(),
            Location::Local("lake".into())
        );
        assert_eq!(
            Location::parse("/tmp/l").unwrap(),
            Location::Local("/tmp/l".into())
        );
        assert_eq!(
            Location::parse("file:///tmp/l/").unwrap(),
            Location::Local("/tmp/l".into())
        );
        assert!(Location::parse("file://host/tmp").is_err());
    }

    #[test]
    fn object_store_urls_name_store_and_key() {
        let r = remote("az://lake/quick/");
        assert_eq!(
            (r.kind, r.container.as_str(), r.key.as_str()),
            (Kind::Azure, "lake", "quick")
        );
        assert_eq!(r.to_string(), "az://lake/quick");
        let r = remote("abfss://data@acct.dfs.core.windows.net/a/b");
        assert_eq!(r.account.as_deref(), Some("acct"));
        assert_eq!(r.to_string(), "abfss://data@acct.dfs.core.windows.net/a/b");
        let r = remote("s3://bucket");
        assert_eq!((r.kind, r.key.as_str()), (Kind::S3, ""));
        // Round trip through the engine's Path form.
        let p = Location::parse("s3://b/x")
            .unwrap()
            .to_path()
            .join("_checkpoints");
        assert_eq!(
            Location::of(&p),
            Location::parse("s3://b/x/_checkpoints").unwrap()
        );
    }

    #[test]
    fn other_schemes_options_and_credentials_are_refused_by_name() {
        let e = Location::parse("gs://x").unwrap_err().to_string();
        assert!(e.contains("`gs://`") && e.contains("not supported"), "{e}");
        let e = Location::parse("s3://b/p?region=eu")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`region`"), "{e}");
        let e = Location::parse("s3://AKIA:hunter2@bucket/p")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2") && e.contains("environment"), "{e}");
        assert!(Location::parse("abfss://c@elsewhere.example.com/p").is_err());
        assert!(Location::parse("az://c/../p").is_err());
        assert!(guard(Path::new("gs://x/y")).is_err());
        assert!(guard(Path::new("plain/dir")).is_ok());
    }
}
