//! One deadline for several reads and writes on a blocking socket.

use std::io::{self, ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The moment by which a whole exchange must be over: every read and write
/// of it waits at most the time left, not a timeout of its own each.
///
/// A blocking socket's timeouts (`SO_RCVTIMEO`, `SO_SNDTIMEO`) bound one
/// call each, so a peer that sends one byte at a time could stretch an
/// exchange of many reads for ever. [`Deadline::set_on`] sets them to the
/// time left before each call instead.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use std::os::unix::net::UnixStream;
/// use std::time::Duration;
/// use io_fdpass::Deadline;
///
/// let (a, b) = UnixStream::pair()?;
/// (&a).write_all(b"hello")?;
/// let deadline = Deadline::after(Duration::from_secs(5));
/// let mut buf = [0; 16];
/// assert_eq!(deadline.read(&b, &mut buf)?, 5);
/// // Nothing more comes: the next read ends by the deadline at the latest.
/// let passed = Deadline::after(Duration::ZERO);
/// assert_eq!(passed.read(&b, &mut buf).unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline `timeout` from now.
    #[must_use]
    pub fn after(timeout: Duration) -> Deadline {
        Deadline::at(Instant::now() + timeout)
    }

    /// The deadline at `instant`.
    #[must_use]
    pub fn at(instant: Instant) -> Deadline {
        Deadline(instant)
    }

    /// When it is.
    #[must_use]
    pub fn instant(self) -> Instant {
        self.0
    }

    /// The time left now; zero once it has passed.
    #[must_use]
    pub fn left(self) -> Duration {
        self.left_at(Instant::now())
    }

    /// Whether it has passed.
    #[must_use]
    pub fn passed(self) -> bool {
        self.left().is_zero()
    }

    /// The time left at `now`; zero if it has passed by then.
    fn left_at(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// The time left, or an error of kind [`ErrorKind::TimedOut`] when
    /// none is.
    fn remaining(self, now: Instant) -> io::Result<Duration> {
        let left = self.left_at(now);
        if left.is_zero() {
            Err(io::Error::new(
                ErrorKind::TimedOut,
                "the deadline has passed",
            ))
        } else {
            Ok(left)
        }
    }

    /// Sets the read and write timeouts of `stream` to the time left, so
    /// that its next blocking call returns by the deadline (`SO_RCVTIMEO`
    /// and `SO_SNDTIMEO`, [socket(7)]). A call cut short by them fails with
    /// [`ErrorKind::WouldBlock`], as every blocking call with a timeout
    /// does on Unix.
    ///
    /// [socket(7)]: https://man7.org/linux/man-pages/man7/socket.7.html
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] once the deadline has passed, and the error
    /// of `setsockopt(2)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// let (a, _b) = UnixStream::pair()?;
    /// io_fdpass::Deadline::after(Duration::from_secs(5)).set_on(&a)?;
    /// assert!(a.read_timeout()?.is_some_and(|left| left <= Duration::from_secs(5)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_on(self, stream: &UnixStream) -> io::Result<()> {
        let left = self.remaining(Instant::now())?;
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))
    }

    /// One read from `stream` that returns by the deadline, tried again if
    /// a signal interrupts it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TimedOut`] when the deadline has passed before the
    /// read, [`ErrorKind::WouldBlock`] when it passes during the read, and
    /// the error of `read(2)`.
    ///
    /// # Examples
    ///
    /// See [`Deadline`].
    pub fn read(self, stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.set_on(stream)?;
            match (&*stream).read(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                read => return read,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_time_left_counts_down_to_zero() {
        let start = Instant::now();
        let deadline = Deadline::at(start + Duration::from_secs(5));
        assert_eq!(deadline.left_at(start), Duration::from_secs(5));
        assert_eq!(
            deadline.left_at(start + Duration::from_secs(2)),
            Duration::from_secs(3)
        );
        assert_eq!(
            deadline.left_at(start + Duration::from_secs(5)),
            Duration::ZERO
        );
        assert_eq!(
            deadline.left_at(start + Duration::from_secs(9)),
            Duration::ZERO
        );
        assert!(deadline.remaining(start).is_ok());
        let err = deadline
            .remaining(start + Duration::from_secs(5))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
    }

    #[test]
    fn the_earlier_of_two_is_the_lesser() {
        let start = Instant::now();
        let soon = Deadline::at(start + Duration::from_secs(1));
        let late = Deadline::at(start + Duration::from_secs(60));
        assert_eq!(soon.min(late), soon);
        assert_eq!(late.min(soon).instant(), start + Duration::from_secs(1));
    }

    #[test]
    fn a_passed_deadline_neither_reads_nor_sets_timeouts() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"x").unwrap();
        let passed = Deadline::at(Instant::now());
        assert!(passed.passed());
        assert_eq!(passed.set_on(&b).unwrap_err().kind(), ErrorKind::TimedOut);
        assert_eq!(b.read_timeout().unwrap(), None);
        let mut buf = [0; 4];
        assert_eq!(
            passed.read(&b, &mut buf).unwrap_err().kind(),
            ErrorKind::TimedOut
        );
        // The byte is still there for a deadline not yet passed.
        let later = Deadline::after(Duration::from_secs(3600));
        assert!(!later.passed());
        assert_eq!(later.read(&b, &mut buf).unwrap(), 1);
        let set = b.read_timeout().unwrap().unwrap();
        assert!(set <= Duration::from_secs(3600), "{set:?}");
        assert_eq!(b.write_timeout().unwrap(), Some(set));
    }
}
