//! The object-store half of the storage layer: Azure Blob / ADLS Gen2 and S3
//! through the `object_store` crate, behind blocking calls.
//!
//! **Clients.** One client per store (`az://container`, `s3://bucket`, …),
//! built on first use from the environment the way the ecosystems expect
//! (`MicrosoftAzureBuilder::from_env`, `AmazonS3Builder::from_env`: the
//! `AZURE_*` and `AWS_*` variables, e.g. `AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_USE_EMULATOR`,
//! `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`) and kept for the process. Nothing
//! here logs or formats a client or a credential.
//!
//! **Blocking.** The engine's threads are timely workers, not async tasks: a
//! call runs on the engine's small tokio runtime ([`crate::core::blocking`])
//! while the caller waits.
//!
//! **Retries.** Transient errors (connection failures, 5xx, throttling) are
//! retried by `object_store` with exponential backoff for up to
//! `MILLRACE_STORAGE_RETRY_TIMEOUT_S` seconds (180 by default); what still
//! fails is returned as an error and stops the job before it acknowledges
//! anything (a commit record is the last thing written for an epoch).
//!
//! **Errors** are `std::io::Error`s naming the URL, with the kinds the local
//! functions use: `NotFound`, `AlreadyExists` (a create-only put that lost),
//! `PermissionDenied`, `InvalidInput` (a client that cannot be built).

use std::collections::HashMap;
use std::io::{Error, ErrorKind};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

use super::location::{Kind, Remote};
use crate::core::blocking::block;

fn retry() -> RetryConfig {
    let secs = std::env::var("MILLRACE_STORAGE_RETRY_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(180);
    RetryConfig {
        retry_timeout: Duration::from_secs(secs),
        ..RetryConfig::default()
    }
}

/// The client of `r`'s store, built on first use.
fn client(r: &Remote) -> std::io::Result<Arc<dyn ObjectStore>> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let url = r.store_url();
    let mut clients = CLIENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = clients.get(&url) {
        return Ok(c.clone());
    }
    let built: object_store::Result<Arc<dyn ObjectStore>> = match r.kind {
        Kind::Azure => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(&r.container)
                .with_retry(retry());
            if let Some(a) = &r.account {
                b = b.with_account(a);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        Kind::S3 => object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&r.container)
            .with_retry(retry())
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
    };
    let c = built.map_err(|e| {
        let hint = match r.kind {
            Kind::Azure => "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or another Azure credential), or AZURE_STORAGE_USE_EMULATOR=true",
            Kind::S3 => "set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION (and AWS_ENDPOINT for an S3-compatible server)",
        };
        Error::new(
            ErrorKind::InvalidInput,
            format!("cannot open {url}: {} ({hint})", scrub(&e.to_string())),
        )
    })?;
    clients.insert(url, c.clone());
    Ok(c)
}

/// An error message with any signature in a URL query blanked.
fn scrub(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push('…');
        rest = &rest[i + 4..];
        let end = rest
            .find(|c: char| c == '&' || c.is_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn io_error(r: &Remote, what: &str, e: object_store::Error) -> Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            ErrorKind::AlreadyExists
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        _ => ErrorKind::Other,
    };
    Error::new(
        kind,
        format!("cannot {what} {r}: {}", scrub(&e.to_string())),
    )
}

fn key(r: &Remote) -> Key {
    Key::from(r.key.as_str())
}

/// Puts `bytes` at `r`; with `create`, only if nothing is there yet
/// (`AlreadyExists` otherwise). A put is atomic: readers see all or nothing.
pub fn put(r: &Remote, bytes: Vec<u8>, create: bool) -> std::io::Result<()> {
    let store = client(r)?;
    let k = key(r);
    let opts = PutOptions {
        mode: if create {
            PutMode::Create
        } else {
            PutMode::Overwrite
        },
        ..PutOptions::default()
    };
    block(async move { store.put_opts(&k, PutPayload::from(bytes), opts).await })
        .map(|_| ())
        .map_err(|e| io_error(r, if create { "create" } else { "write" }, e))
}

/// The bytes at `r`.
pub fn get(r: &Remote) -> std::io::Result<Vec<u8>> {
    let store = client(r)?;
    let k = key(r);
    block(async move {
        let got = store.get(&k).await?;
        got.bytes().await
    })
    .map(|b| b.to_vec())
    .map_err(|e| io_error(r, "read", e))
}

/// The size and last modification (ms since the Unix epoch) of the object
/// at `r`, or `None` when there is none.
pub fn stat(r: &Remote) -> std::io::Result<Option<(u64, i64)>> {
    let store = client(r)?;
    let k = key(r);
    match block(async move { store.head(&k).await }) {
        Ok(meta) => Ok(Some((meta.size, meta.last_modified.timestamp_millis()))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(io_error(r, "look up", e)),
    }
}

/// The size of the object at `r`, or `None` when there is none.
pub fn head(r: &Remote) -> std::io::Result<Option<u64>> {
    Ok(stat(r)?.map(|(size, _)| size))
}

/// Objects under `r` (as a folder), with their keys relative to it; all of
/// them, or only those directly in it.
fn objects(
    r: &Remote,
    recursive: bool,
) -> std::io::Result<Vec<(String, object_store::ObjectMeta)>> {
    let store = client(r)?;
    let prefix = key(r);
    let p = prefix.clone();
    let metas = block(async move {
        if recursive {
            let mut out = Vec::new();
            let mut s = store.list(Some(&p));
            while let Some(m) = s.next().await {
                out.push(m?);
            }
            Ok(out)
        } else {
            store.list_with_delimiter(Some(&p)).await.map(|l| l.objects)
        }
    })
    .map_err(|e| io_error(r, "list", e))?;
    let base = prefix.as_ref();
    Ok(metas
        .into_iter()
        .filter_map(|m| {
            let full = m.location.as_ref();
            let rel = if base.is_empty() {
                full
            } else {
                full.strip_prefix(base)?.strip_prefix('/')?
            };
            Some((rel.to_string(), m))
        })
        .collect())
}

/// The objects directly under `r` (as a folder): names, sizes and last
/// modifications (ms since the Unix epoch).
pub fn files(r: &Remote) -> std::io::Result<Vec<(String, u64, i64)>> {
    Ok(objects(r, false)?
        .into_iter()
        .map(|(name, m)| (name, m.size, m.last_modified.timestamp_millis()))
        .collect())
}

/// Objects under `r` (as a folder): their keys relative to it and their
/// sizes; all of them, or only those directly in it.
pub fn list(r: &Remote, recursive: bool) -> std::io::Result<Vec<(String, u64)>> {
    Ok(objects(r, recursive)?
        .into_iter()
        .map(|(name, m)| (name, m.size))
        .collect())
}

/// Deletes the object at `r`; `false` when there was none.
pub fn delete(r: &Remote) -> std::io::Result<bool> {
    if head(r)?.is_none() {
        return Ok(false);
    }
    let store = client(r)?;
    let k = key(r);
    match block(async move { store.delete(&k).await }) {
        Ok(()) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(io_error(r, "delete", e)),
    }
}

/// Copies `from` to `to` (same store), replacing `to`.
pub fn copy(from: &Remote, to: &Remote) -> std::io::Result<()> {
    let store = client(from)?;
    let (f, t) = (key(from), key(to));
    block(async move { store.copy(&f, &t).await }).map_err(|e| io_error(from, "copy", e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_are_scrubbed_from_messages() {
        let m = super::scrub("PUT https://a/b?sv=1&sig=SECRET&se=2 failed");
        assert!(!m.contains("SECRET") && m.contains("sig=…&se=2"), "{m}");
    }
}
