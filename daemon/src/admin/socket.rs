//! The admin endpoint on a Unix socket (`[daemon] admin_socket`, default
//! `<data_dir>/admin.sock`): always on, mode 0600, so only the daemon's user
//! (and root) can reload it or ask for savepoints, with no port open. It also
//! keeps two daemons off one data directory: a second finds the first one
//! answering and refuses to start.

use std::io;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

/// The longest path `bind(2)` takes for a Unix socket (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Binds the socket at `path`, replacing a stale one a crashed daemon left.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {len} bytes long; a Unix socket path may have at most {MAX_SOCKET_PATH}: \
                 set [daemon] admin_socket to a shorter path",
                path.display()
            ),
        ));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path).await {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another weir answers on {}: two daemons must not share a data_dir",
                        path.display()
                    ),
                ));
            }
            Err(_) => std::fs::remove_file(path)?,
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
