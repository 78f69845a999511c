//! The holder's state file as an fd: one open file, rewritten in place on
//! each change, so that every copy of the fd (the next image's, systemd's
//! fd store's) sees the latest. Its text is the library's
//! (`io_fdpass::holder::state_file`).

use std::io;
use std::os::fd::OwnedFd;

use io_fdpass::holder::machine::STATE_NAME;
use io_fdpass::holder::state_file::{self, Recorded};

/// The longest state file read back.
const MAX_STATE: u64 = 64 << 20;

/// The state file's fd.
pub struct StateFile {
    pub fd: OwnedFd,
}

impl StateFile {
    /// A new, empty state file.
    pub fn new() -> io::Result<StateFile> {
        Ok(StateFile {
            fd: io_fdpass::anonymous_file(STATE_NAME)?,
        })
    }

    /// The state file given as `fd`.
    pub fn adopt(fd: OwnedFd) -> StateFile {
        StateFile { fd }
    }

    /// Replaces the file's text with `text`.
    pub fn write(&self, text: &str) -> io::Result<()> {
        let mut written = 0;
        while written < text.len() {
            written += rustix::io::pwrite(&self.fd, &text.as_bytes()[written..], written as u64)?;
        }
        rustix::fs::ftruncate(&self.fd, text.len() as u64)?;
        Ok(())
    }

    /// What the file says, if it is whole.
    pub fn read(&self) -> Option<Recorded> {
        let mut bytes = Vec::new();
        let mut chunk = [0; 64 * 1024];
        loop {
            let n = rustix::io::pread(&self.fd, &mut chunk, bytes.len() as u64).ok()?;
            if n == 0 || bytes.len() as u64 > MAX_STATE {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        state_file::parse(std::str::from_utf8(&bytes).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use io_fdpass::holder::protocol::Entry;

    use super::*;

    #[test]
    fn a_shorter_write_leaves_no_tail() {
        let entry = Entry::parse("web kind=tcp%20listener uid=1 stored=5 expires=9").unwrap();
        let file = StateFile::new().unwrap();
        file.write(&state_file::encode(Some((1, 2)), [&entry]))
            .unwrap();
        let recorded = file.read().unwrap();
        assert_eq!(recorded.socket, Some((1, 2)));
        assert_eq!(recorded.entries["web"], entry);
        file.write(&state_file::encode(None, [])).unwrap();
        let recorded = file.read().unwrap();
        assert!(recorded.entries.is_empty() && recorded.socket.is_none());
    }
}
