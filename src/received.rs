/// What one call of `recv_fds` (Unix) or `recv_handles`
/// (Windows) received; on Windows, read "handles" for "fds".
///
/// A message is never lost to a small buffer: whatever did not fit is
/// reported here, so the caller decides whether that is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Received {
    /// How many data bytes were written to the start of the data buffer.
    pub bytes: usize,
    /// How many fds went into empty slots of the fd storage.
    pub fds_received: usize,
    /// How many fds arrived but found no empty slot in the fd storage; each
    /// was closed.
    pub fds_discarded: usize,
    /// The message was a datagram (or `SOCK_SEQPACKET` record) longer than
    /// the data buffer; the kernel discarded the rest (`MSG_TRUNC`). On a
    /// stream socket the rest simply waits for the next read, so this is
    /// never set. On Windows a record knows its length: the rest was read
    /// and dropped.
    pub data_truncated: bool,
    /// The kernel truncated the control data (`MSG_CTRUNC`): fds were sent
    /// that never arrived. It happens when this process reaches its
    /// open-file limit (`RLIMIT_NOFILE`) or, on some systems, when a peer
    /// sends more fds than one message may carry. The kernel has closed what
    /// it could not deliver. Never set on Windows.
    pub control_truncated: bool,
}

impl Received {
    /// Whether the whole message arrived: no data or fds were cut off or
    /// discarded.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(unix)]
    /// # fn main() -> std::io::Result<()> {
    /// use std::os::fd::AsFd;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let (a, b) = UnixStream::pair()?;
    /// io_fdpass::send_fds(&a, b"two fds", &[a.as_fd(), b.as_fd()])?;
    ///
    /// let mut data = [0; 16];
    /// let mut fds = [None]; // room for one fd
    /// let got = io_fdpass::recv_fds(&b, &mut data, &mut fds)?;
    /// assert_eq!((got.fds_received, got.fds_discarded), (1, 1));
    /// assert!(!got.is_complete());
    /// # Ok(())
    /// # }
    /// # #[cfg(not(unix))]
    /// # fn main() {}
    /// ```
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.fds_discarded == 0 && !self.data_truncated && !self.control_truncated
    }
}
