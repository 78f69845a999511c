//! `fdpass fetch`: fds from the holder, handed to a command.

use crate::cli::FetchArgs;
use crate::client;
use crate::exec;
use crate::fail::Result;

/// `fdpass fetch`: fetches (or takes) the names, then runs the command.
///
/// A take is committed only once everything that can fail before the
/// exec has been checked: the command found and executable (before the
/// take), the names, and room in this process for the fds. Until then a
/// failure (or this process's death) leaves the fds with the holder. Only
/// the `execve` itself can still fail after the commit: the program
/// removed or replaced since it was found, an argument list too long, no
/// memory. Then the fds are lost with this process, and the message says
/// so.
pub fn run(args: &FetchArgs) -> Result<()> {
    let program = exec::find(&args.command[0])?;
    let holder = super::holder_client(&args.holder);
    let wanted: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let failed = |e: std::io::Error| client::failure(&args.holder.socket, &e);
    let fds = if args.take {
        let reserved = holder.reserve(&wanted).map_err(failed)?;
        exec::check_with_fds(reserved.fds(), &args.names, &program, &args.command, &[])?;
        let fds = reserved.commit().map_err(failed)?;
        let mut failure = exec::exec_with_fds(fds, &args.names, &program, &args.command, &[]);
        failure.message = format!(
            "{}; the fds taken ({}) are closed: the holder no longer holds them",
            failure.message,
            args.names.join(" ")
        );
        return Err(failure);
    } else {
        holder.fetch_many(&wanted).map_err(failed)?
    };
    Err(exec::exec_with_fds(
        fds,
        &args.names,
        &program,
        &args.command,
        &[],
    ))
}
