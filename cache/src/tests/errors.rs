//! Error classification and messages.

use std::io;
use std::path::Path;

use crate::error::io_err;
use crate::CacheError;

#[test]
fn locked_errors_say_so() {
    let err = CacheError::Sqlite {
        op: "put action",
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        ),
    };
    assert!(err.is_locked());
    assert!(err.to_string().contains("database is locked"), "{err}");
}

#[test]
fn a_full_disk_is_its_own_error() {
    let path = Path::new("/cache/tmp/x");
    let full = io_err("write", path)(io::Error::from_raw_os_error(28)); // ENOSPC
    assert!(
        matches!(&full, CacheError::DiskFull { path: p } if p == path),
        "{full:?}"
    );
    assert_eq!(
        full.to_string(),
        "no space left on the device holding `/cache/tmp/x`"
    );
    let other = io_err("write", path)(io::Error::from_raw_os_error(13)); // EACCES
    assert!(matches!(other, CacheError::Io { op: "write", .. }));
    assert!(
        other
            .to_string()
            .starts_with("cannot write `/cache/tmp/x`: "),
        "{other}"
    );
}
