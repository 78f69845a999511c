//! SIGHUP: the holder executes its binary again, with everything it holds
//! laid out as `LISTEN_FDS`.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use io_fdpass::holder::machine::{SOCKET_NAME, STATE_NAME};
use io_fdpass::holder::Server;

use super::serve::Keeper;
use super::{signals, Settings};
use crate::fail::{self, Failure, Result};

/// How long the new binary has to say its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops accepting (new clients wait in the socket's backlog), lets the
/// clients being served finish, checks that the binary runs, and executes
/// it with every fd. Returns the server, still serving what it held, and
/// why, only if it could not.
pub async fn upgrade(server: Server, keeper: &Keeper, settings: &Settings) -> (Server, Failure) {
    server.finish().await;
    let Some(program) = settings.program.as_deref() else {
        let failure = Failure::new(fail::OS, "the path of this binary is not known");
        return (server, failure);
    };
    if let Err(failure) = runs(program).await {
        return (server, failure);
    }
    keeper.log(format_args!(
        "SIGHUP: executing {} again",
        program.display()
    ));
    let copies = [server.listener().as_fd(), keeper.state.fd.as_fd()]
        .map(|fd| fd.try_clone_to_owned())
        .into_iter()
        .collect::<std::io::Result<Vec<_>>>();
    let mut fds = match copies {
        Ok(fds) => fds,
        Err(err) => {
            return (
                server,
                Failure::os("cannot copy an fd for the next image", err),
            )
        }
    };
    let mut names = vec![SOCKET_NAME.to_owned(), STATE_NAME.to_owned()];
    if let Err(err) = signals::set_blocked(true) {
        return (
            server,
            Failure::os("cannot block signals for the exec", err),
        );
    }
    let (_, mut holder) = server.into_parts();
    keeper.record(&holder);
    for (name, fd) in holder.take_all() {
        fds.push(fd);
        names.push(name);
    }
    // From here on the fds are being laid out over whatever this process
    // had at 3, 4, …, the event loop's among them: a failure leaves
    // nothing to go on with.
    let failure = crate::exec::exec_with_fds(fds, &names, program, &settings.args, &[]);
    crate::output::message(format_args!("hold: cannot execute itself again: {failure}"));
    std::process::exit(i32::from(fail::OS))
}

/// Checks that `program` runs, by asking it its version, so that a broken
/// upgrade is found before the exec it could not come back from. Waits on
/// the event loop: the lifetimes of what is held go on meanwhile.
async fn runs(program: &Path) -> Result<()> {
    let cannot = |what: String| Failure::new(fail::CANNOT_EXECUTE, what);
    let mut child = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| cannot(format!("cannot run {}: {err}", program.display())))?;
    match tokio::time::timeout(VERSION_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(cannot(format!(
            "{} --version failed ({status})",
            program.display()
        ))),
        _ => {
            let _ = child.kill().await;
            Err(cannot(format!(
                "{} --version did not finish",
                program.display()
            )))
        }
    }
}
