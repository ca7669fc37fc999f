//! Where inputs are read from and outputs written to: a local folder (with fsync) or an
//! object store (`object_store`: `s3://`, `gs://`, `az://`/`abfs://`, `file://`).
//!
//! URIs: a plain path or `file:///abs/path` is local; `s3://bucket/prefix`,
//! `gs://bucket/prefix`, `az://container/prefix` (and the other forms `object_store`
//! accepts) are remote, configured from the usual environment variables (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`) by the crate's `from_env` builders.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URI could not be parsed or names an unsupported scheme.
    #[error("failed to parse storage URI {uri:?}: {reason}")]
    Uri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local file operation failed.
    #[error("failed to {op} {path}: {source}")]
    Io {
        /// The operation ("write", "fsync", "rename", ...).
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An object store operation failed.
    #[error("failed to {op} {location}: {source}")]
    Object {
        /// The operation.
        op: &'static str,
        /// The object's URI.
        location: String,
        /// The store's error.
        source: object_store::Error,
    },
}

/// Opens `uri` as an object store plus the path inside it.
///
/// # Errors
/// [`StoreError::Uri`] for an unparsable URI, an unknown scheme or a local path that does not
/// resolve; [`StoreError::Object`] when the store's builder rejects its configuration.
pub fn open_uri(uri: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), StoreError> {
    let url = to_url(uri)?;
    let err = |source| StoreError::Object {
        op: "configure the object store for",
        location: uri.to_string(),
        source,
    };
    let path = ObjectPath::from_url_path(url.path()).map_err(|e| StoreError::Uri {
        uri: uri.to_string(),
        reason: e.to_string(),
    })?;
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => Arc::new(object_store::local::LocalFileSystem::new()),
        #[cfg(feature = "cloud")]
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(err)?,
        ),
        #[cfg(feature = "cloud")]
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(err)?,
        ),
        #[cfg(feature = "cloud")]
        "az" | "adl" | "azure" | "abfs" | "abfss" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(err)?,
        ),
        #[cfg(not(feature = "cloud"))]
        "s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" => {
            let _ = err;
            return Err(StoreError::Uri {
                uri: uri.to_string(),
                reason: "this autoglm-worker was built without the `cloud` feature".to_string(),
            });
        }
        other => {
            return Err(StoreError::Uri {
                uri: uri.to_string(),
                reason: format!(
                    "unsupported scheme {other:?} (use a path, file://, s3://, gs:// or az://)"
                ),
            });
        }
    };
    Ok((store, path))
}

/// Parses `uri`; a plain path becomes an absolute `file://` URL.
fn to_url(uri: &str) -> Result<url::Url, StoreError> {
    let bad = |reason: String| StoreError::Uri {
        uri: uri.to_string(),
        reason,
    };
    if uri.contains("://") {
        return url::Url::parse(uri).map_err(|e| bad(e.to_string()));
    }
    let path = Path::new(uri);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| bad(format!("cannot resolve a relative path: {e}")))?
            .join(path)
    };
    url::Url::from_file_path(&abs).map_err(|()| bad("not a valid local path".to_string()))
}

/// The local folder for a plain path or `file://` URI, `None` for a remote store.
#[must_use]
pub fn local_path(uri: &str) -> Option<PathBuf> {
    let url = to_url(uri).ok()?;
    (url.scheme() == "file")
        .then(|| url.to_file_path().ok())
        .flatten()
}

/// Reads a whole object (a model or tokenizer file) into memory.
///
/// # Errors
/// See [`open_uri`]; [`StoreError::Object`] when the read fails.
pub async fn read_all(uri: &str) -> Result<Bytes, StoreError> {
    let (store, path) = open_uri(uri)?;
    let get = store
        .get(&path)
        .await
        .map_err(|source| StoreError::Object {
            op: "read",
            location: uri.to_string(),
            source,
        })?;
    get.bytes().await.map_err(|source| StoreError::Object {
        op: "read",
        location: uri.to_string(),
        source,
    })
}

/// A replica's output folder: the files it writes are replaced atomically.
///
/// Local: write `.<name>.tmp`, fsync it, rename over `<name>`, fsync the folder, so after a
/// crash a name holds either the old or the new complete content. Remote: one `put` per
/// object, which object stores apply atomically.
#[derive(Debug, Clone)]
pub enum OutputDir {
    /// A local folder.
    Local(PathBuf),
    /// A prefix in an object store.
    Remote(RemoteDir),
}

/// A folder (prefix) in an object store; blocking calls run on `handle`.
#[derive(Debug, Clone)]
pub struct RemoteDir {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The folder's prefix.
    pub prefix: ObjectPath,
    /// The URI, for messages.
    pub uri: String,
    /// The tokio runtime that runs the store's futures.
    pub handle: tokio::runtime::Handle,
}

impl RemoteDir {
    /// Runs `f(store, <prefix>/<name>)` to completion on `handle`.
    fn run<T, Fut>(
        &self,
        name: &str,
        f: impl FnOnce(Arc<dyn ObjectStore>, ObjectPath) -> Fut,
    ) -> object_store::Result<T>
    where
        Fut: Future<Output = object_store::Result<T>>,
    {
        self.handle
            .block_on(f(Arc::clone(&self.store), self.prefix.clone().join(name)))
    }

    /// Turns a store error of `op` on `name` into [`StoreError::Object`] naming `<uri>/<name>`.
    fn error(
        &self,
        op: &'static str,
        name: &str,
    ) -> impl FnOnce(object_store::Error) -> StoreError {
        let location = format!("{}/{name}", self.uri);
        move |source| StoreError::Object {
            op,
            location,
            source,
        }
    }
}

impl OutputDir {
    /// The output folder `<uri>/<sub>`, created when local.
    ///
    /// # Errors
    /// See [`open_uri`]; [`StoreError::Io`] when a local folder cannot be created.
    pub fn open(uri: &str, sub: &str, handle: tokio::runtime::Handle) -> Result<Self, StoreError> {
        if let Some(base) = local_path(uri) {
            let dir = base.join(sub);
            fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
                op: "create folder",
                path: dir.clone(),
                source,
            })?;
            return Ok(Self::Local(dir));
        }
        let (store, prefix) = open_uri(uri)?;
        Ok(Self::Remote(RemoteDir {
            store,
            prefix: prefix.clone().join(sub),
            uri: format!("{}/{sub}", uri.trim_end_matches('/')),
            handle,
        }))
    }

    /// Where a file of this folder is, for messages.
    #[must_use]
    pub fn describe(&self, name: &str) -> String {
        match self {
            Self::Local(dir) => dir.join(name).display().to_string(),
            Self::Remote(remote) => format!("{}/{name}", remote.uri),
        }
    }

    /// Writes `name` atomically and durably (see the type's docs).
    ///
    /// # Errors
    /// [`StoreError`] naming the file and the step that failed.
    pub fn put_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Self::Local(dir) => {
                let tmp = dir.join(format!(".{name}.tmp"));
                let dst = dir.join(name);
                let io = |op, path: &Path| {
                    let path = path.to_path_buf();
                    move |source| StoreError::Io { op, path, source }
                };
                let mut f = fs::File::create(&tmp).map_err(io("create", &tmp))?;
                f.write_all(bytes).map_err(io("write", &tmp))?;
                f.sync_all().map_err(io("fsync", &tmp))?;
                drop(f);
                fs::rename(&tmp, &dst).map_err(io("rename", &dst))?;
                fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io("fsync folder", dir))?;
                Ok(())
            }
            Self::Remote(remote) => {
                let payload = object_store::PutPayload::from(Bytes::copy_from_slice(bytes));
                remote
                    .run(name, |store, path| async move {
                        store.put(&path, payload).await.map(|_| ())
                    })
                    .map_err(remote.error("write", name))
            }
        }
    }

    /// Reads `name`; `None` when it does not exist.
    ///
    /// # Errors
    /// [`StoreError`] when it exists but cannot be read.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.on_file(
            "read",
            name,
            None,
            |path| fs::read(path).map(Some),
            |store, path| async move { Ok(Some(store.get(&path).await?.bytes().await?.to_vec())) },
        )
    }

    /// Names of the files directly in the folder, sorted.
    ///
    /// # Errors
    /// [`StoreError`] when the folder cannot be listed.
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
        let mut names = match self {
            Self::Local(dir) => {
                let rd = fs::read_dir(dir).map_err(|source| StoreError::Io {
                    op: "list",
                    path: dir.clone(),
                    source,
                })?;
                let mut names = Vec::new();
                for entry in rd {
                    let entry = entry.map_err(|source| StoreError::Io {
                        op: "list",
                        path: dir.clone(),
                        source,
                    })?;
                    if entry.file_type().is_ok_and(|t| t.is_file()) {
                        names.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                names
            }
            Self::Remote(remote) => {
                let listing = remote
                    .handle
                    .block_on(remote.store.list_with_delimiter(Some(&remote.prefix)))
                    .map_err(|source| StoreError::Object {
                        op: "list",
                        location: remote.uri.clone(),
                        source,
                    })?;
                listing
                    .objects
                    .into_iter()
                    .filter_map(|o| o.location.filename().map(str::to_string))
                    .collect()
            }
        };
        names.sort();
        Ok(names)
    }

    /// Deletes `name` (a missing file is not an error).
    ///
    /// # Errors
    /// [`StoreError`] when it exists and cannot be deleted.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.on_file(
            "delete",
            name,
            (),
            |path| fs::remove_file(path),
            |store, path| async move { store.delete(&path).await },
        )
    }

    /// Runs one operation `op` on the file `name`: `local` on its path in a local folder,
    /// `remote` on the store and its object path (run to completion on `handle`). A file
    /// that does not exist yields `Ok(missing)`; any other error names `op` and the file.
    ///
    /// Only for single-call operations (read, delete); [`OutputDir::put_atomic`] has its
    /// own local path because of the temp file, rename and fsyncs.
    fn on_file<T, Fut>(
        &self,
        op: &'static str,
        name: &str,
        missing: T,
        local: impl FnOnce(&Path) -> std::io::Result<T>,
        remote: impl FnOnce(Arc<dyn ObjectStore>, ObjectPath) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = object_store::Result<T>>,
    {
        match self {
            Self::Local(dir) => {
                let path = dir.join(name);
                match local(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(missing),
                    res => res.map_err(|source| StoreError::Io { op, path, source }),
                }
            }
            Self::Remote(dir) => match dir.run(name, remote) {
                Err(object_store::Error::NotFound { .. }) => Ok(missing),
                res => res.map_err(dir.error(op, name)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_file_uris_are_local() {
        assert_eq!(local_path("/tmp/x"), Some(PathBuf::from("/tmp/x")));
        assert_eq!(local_path("file:///tmp/x"), Some(PathBuf::from("/tmp/x")));
        assert_eq!(local_path("s3://bucket/x"), None);
    }

    #[test]
    fn unknown_scheme_is_a_clear_error() {
        let err = open_uri("ftp://host/x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unsupported scheme \"ftp\""), "{err}");
    }

    #[tokio::test]
    async fn reads_through_file_uri_and_plain_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.jsonl");
        fs::write(&f, b"hello\n").unwrap();
        let by_path = read_all(f.to_str().unwrap()).await.unwrap();
        let by_uri = read_all(&format!("file://{}", f.display())).await.unwrap();
        assert_eq!(&by_path[..], b"hello\n");
        assert_eq!(by_path, by_uri);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn local_output_dir_put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(
            dir.path().to_str().unwrap(),
            "replica-0",
            tokio::runtime::Handle::current(),
        )
        .unwrap();
        out.put_atomic("a.json", b"{}").unwrap();
        out.put_atomic("a.json", b"[1]").unwrap();
        assert_eq!(out.get("a.json").unwrap().as_deref(), Some(&b"[1]"[..]));
        assert_eq!(out.get("missing").unwrap(), None);
        assert_eq!(out.list().unwrap(), vec!["a.json".to_string()]);
        out.delete("a.json").unwrap();
        out.delete("a.json").unwrap();
        assert!(out.list().unwrap().is_empty());
    }

    /// The object-store side, on `object_store`'s local backend: a missing object reads as
    /// `None` and deletes without error, as in a local folder.
    #[test]
    fn remote_output_dir_put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let out = OutputDir::Remote(RemoteDir {
            store: Arc::new(store),
            prefix: ObjectPath::from("replica-0"),
            uri: "test://bucket/replica-0".to_string(),
            handle: rt.handle().clone(),
        });
        assert_eq!(out.get("missing").unwrap(), None);
        out.delete("missing").unwrap();
        out.put_atomic("a.json", b"{}").unwrap();
        out.put_atomic("a.json", b"[1]").unwrap();
        assert_eq!(out.get("a.json").unwrap().as_deref(), Some(&b"[1]"[..]));
        assert_eq!(out.list().unwrap(), vec!["a.json".to_string()]);
        assert_eq!(out.describe("a.json"), "test://bucket/replica-0/a.json");
        out.delete("a.json").unwrap();
        assert!(out.list().unwrap().is_empty());
    }
}
