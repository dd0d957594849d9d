//! The generated HS secret file, `<data_dir>/jwt-secret`: created once by
//! the server (mode 0600, atomically, race-safe between processes), then
//! read. `roomcast token` only reads it ([`read_secret`]): a token minted with
//! a secret the server does not have would be refused, so a missing file is
//! an error there, never a reason to create one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::MIN_HS_SECRET_BYTES;

/// File name of the generated HS secret inside the data directory.
pub const SECRET_FILE_NAME: &str = "jwt-secret";

/// A secret loaded by [`load_or_create_secret`], and whether this call created it.
pub struct LoadedSecret {
    pub secret: Vec<u8>,
    /// True when this process wrote the file (no secret existed before).
    pub created: bool,
}

/// The absolute path of `<data_dir>/jwt-secret`, for messages: a relative
/// data directory means nothing to someone running another command elsewhere.
pub fn secret_path(data_dir: &Path) -> PathBuf {
    let path = data_dir.join(SECRET_FILE_NAME);
    std::path::absolute(&path).unwrap_or(path)
}

/// Reads the HS secret in `<data_dir>/jwt-secret` without ever creating it
/// (`NotFound` when there is none).
pub fn read_secret(data_dir: &Path) -> io::Result<Vec<u8>> {
    read_secret_file(&data_dir.join(SECRET_FILE_NAME))
}

/// The message of a `401 token_bad_signature`: the token was signed with
/// another key than this server's, and where the server's HS secret lives
/// (its location, never its bytes). `configured` is true when the secret is
/// `auth.jwt_secret` rather than the file in `data_dir`.
pub fn bad_signature_message(configured: bool, data_dir: &Path) -> String {
    let key = if configured {
        "auth.jwt_secret (config file, ROOMCAST_JWT_SECRET or --jwt-secret)".to_string()
    } else {
        format!("the file {}", secret_path(data_dir).display())
    };
    format!(
        "the token's signature is invalid: it was signed with another key than this server's; \
         the server's HS secret is {key} (`roomcast token` must use the same one)"
    )
}

/// Returns the HS secret stored in `<data_dir>/jwt-secret`, creating it if
/// needed.
///
/// A new secret is 32 random bytes (getrandom) written base64url-encoded as
/// text; the secret is the file's text, trimmed (so operators may replace it
/// with any text of at least [`MIN_HS_SECRET_BYTES`] bytes). `data_dir` is
/// created (mode 0700) if missing. The file is created mode 0600: the secret is
/// written to a `create_new` temporary file which is then hard-linked into
/// place, so readers never see a partial file and, when several processes race,
/// exactly one secret wins and the others read it (`AlreadyExists` → read).
pub fn load_or_create_secret(data_dir: &Path) -> io::Result<LoadedSecret> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir)?;
    let path = data_dir.join(SECRET_FILE_NAME);
    match read_secret_file(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other.map(|secret| LoadedSecret { secret, created: false }),
    }

    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    let secret = URL_SAFE_NO_PAD.encode(raw);
    let nonce = getrandom::u64().map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    let tmp = data_dir.join(format!(".{SECRET_FILE_NAME}.{}.{nonce:016x}.tmp", std::process::id()));
    let result = publish_secret(&tmp, &path, &secret);
    // Best effort: the temporary name is unique and holds nothing the real file does not.
    let _ = fs::remove_file(&tmp);
    result
}

fn publish_secret(tmp: &Path, path: &Path, secret: &str) -> io::Result<LoadedSecret> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(tmp)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    match fs::hard_link(tmp, path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                // Persist the new directory entry; failure only weakens crash safety.
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(LoadedSecret { secret: secret.as_bytes().to_vec(), created: true })
        }
        // Another process won the race: its secret is the one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_secret_file(path).map(|secret| LoadedSecret { secret, created: false })
        }
        Err(e) => Err(e),
    }
}

fn read_secret_file(path: &Path) -> io::Result<Vec<u8>> {
    let text = fs::read_to_string(path)?;
    let secret = text.trim();
    if secret.len() < MIN_HS_SECRET_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: secret is {} bytes after trimming; at least {MIN_HS_SECRET_BYTES} are required",
                path.display(),
                secret.len()
            ),
        ));
    }
    Ok(secret.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::*;
    use crate::auth::{AuthSettings, MintRequest, mint_hs256};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            TempDir(std::env::temp_dir().join(format!("roomcast-auth-{tag}-{}-{nanos}", std::process::id())))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn load_or_create_secret_creates_0600_and_rereads() {
        let tmp = TempDir::new("secret");
        let dir = tmp.0.join("nested").join("data");
        assert_eq!(read_secret(&dir).expect_err("none yet").kind(), io::ErrorKind::NotFound);
        let loaded = load_or_create_secret(&dir).expect("create");
        assert!(loaded.created);
        let first = loaded.secret;
        let path = dir.join(SECRET_FILE_NAME);
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.len(), 43, "32 bytes, base64url without padding");
        assert!(first.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(&first).expect("base64url").len(), 32);
        let again = load_or_create_secret(&dir).expect("re-read");
        assert_eq!((again.secret, again.created), (first.clone(), false));
        assert_eq!(read_secret(&dir).expect("read"), first);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&dir).expect("dir").filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRET_FILE_NAME)]);
        // The secret is usable as-is.
        let token =
            mint_hs256(&first, &MintRequest { sub: "a", ttl_s: 60, ..Default::default() }, now()).expect("mint");
        let v = verifier(AuthSettings { hs_secret: Some(first), ..AuthSettings::default() });
        assert!(v.verify(&token).is_ok());
    }

    #[test]
    fn load_or_create_secret_reads_and_trims_existing() {
        let tmp = TempDir::new("existing");
        fs::create_dir_all(&tmp.0).expect("dir");
        let secret = "operator-provided-secret-that-is-long-enough";
        fs::write(tmp.0.join(SECRET_FILE_NAME), format!("  {secret}\n\n")).expect("write");
        assert_eq!(load_or_create_secret(&tmp.0).expect("read").secret, secret.as_bytes());
        fs::write(tmp.0.join(SECRET_FILE_NAME), "short\n").expect("write");
        let Err(e) = load_or_create_secret(&tmp.0) else { panic!("a short secret must be refused") };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn bad_signature_message_names_where_the_secret_is_not_what_it_is() {
        let message = bad_signature_message(false, Path::new("/srv/roomcast"));
        assert!(message.contains("another key"), "{message}");
        assert!(message.contains("/srv/roomcast/jwt-secret"), "{message}");
        let message = bad_signature_message(true, Path::new("/srv/roomcast"));
        assert!(message.contains("auth.jwt_secret") && !message.contains("/srv"), "{message}");
    }

    #[test]
    fn load_or_create_secret_concurrent_creators_agree() {
        let tmp = TempDir::new("race");
        let dir = Arc::new(tmp.0.join("data"));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let dir = Arc::clone(&dir);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    load_or_create_secret(&dir).map(|loaded| (loaded.secret, loaded.created))
                })
            })
            .collect();
        let loaded: Vec<(Vec<u8>, bool)> =
            handles.into_iter().map(|h| h.join().expect("thread").expect("secret")).collect();
        assert!(loaded.windows(2).all(|w| w[0].0 == w[1].0));
        assert_eq!(loaded.iter().filter(|(_, created)| *created).count(), 1, "exactly one creator");
        assert_eq!(fs::read_dir(&*dir).expect("dir").count(), 1);
    }
}
